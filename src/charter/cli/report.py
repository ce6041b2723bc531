"""`charter report`: matplotlib is imported only when it runs."""
from __future__ import annotations

import argparse


def register(sub) -> None:
    p = sub.add_parser("report", help="runs (+ eval.json) -> one self-contained HTML file")
    p.add_argument("runs", nargs="+", metavar="RUN", help="run directories made by `charter generate`; label outputs, "
                   "eval-labeler and audit results (files) add label statistics, the labeler's calibration, their "
                   "judge's biases and the constitution audit; `charter train` output folders add training curves")
    p.add_argument("--train", nargs="+", default=[], metavar="DIR",
                   help="`charter train sft|pm|rl|dpo` output folders (or checkpoints) whose curves to draw")
    p.add_argument("--labels", nargs="+", default=[], metavar="FILE",
                   help="`charter label` outputs (labels.jsonl) whose statistics to show")
    p.add_argument("--out", help="HTML file to write (default FIRST_RUN/report.html)")
    p.set_defaults(func=cmd_report)


def cmd_report(a: argparse.Namespace) -> int:
    from charter.report.html import write_report

    path = write_report(a.runs, a.out, train=a.train, labels=a.labels)
    print(f"wrote {path} ({path.stat().st_size // 1024} KiB); open it in a browser")
    return 0
