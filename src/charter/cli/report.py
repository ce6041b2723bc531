"""`charter report`: matplotlib is imported only when it runs."""
from __future__ import annotations

import argparse


def register(sub) -> None:
    p = sub.add_parser("report", help="runs (+ eval.json) -> one self-contained HTML file")
    p.add_argument("runs", nargs="+", metavar="RUN", help="run directories made by `charter generate`; label outputs, "
                   "eval-labeler and audit results (files) add their judge's biases and the constitution audit")
    p.add_argument("--out", help="HTML file to write (default FIRST_RUN/report.html)")
    p.set_defaults(func=cmd_report)


def cmd_report(a: argparse.Namespace) -> int:
    from charter.report.html import write_report

    path = write_report(a.runs, a.out)
    print(f"wrote {path} ({path.stat().st_size // 1024} KiB); open it in a browser")
    return 0
