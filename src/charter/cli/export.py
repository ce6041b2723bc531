"""`charter export`: run -> SFT / preference (DPO) / trace rows (.jsonl or .parquet)."""
from __future__ import annotations

import argparse
import sys


def register(sub) -> None:
    p = sub.add_parser("export", help="run -> SFT / preference (DPO) / trace rows (.jsonl or .parquet)")
    p.add_argument("run", help="run directory made by `charter generate`")
    p.add_argument("--format", choices=["sft", "dpo", "trace"], default="sft")
    p.add_argument("--out", required=True, help="output file ending in .jsonl or .parquet")
    p.add_argument("--revision", choices=["final", "all"], help="sft: final revision (default), or every round's (SL-CAI-n)")
    p.add_argument("--upto", type=int, help="sft: use rounds 1..N only (N >= 1)")
    p.add_argument("--helpful-ratio", type=float, help="sft: share of helpfulness rows in the mix (default: all of them)")
    p.add_argument("--seed", type=int, help="sft: seed of the shuffle and the helpfulness sample (default 0)")
    p.set_defaults(func=cmd_export)


def export_options(a: argparse.Namespace) -> dict:
    """The sft-only options that were given; an error names any that do not apply to the format."""
    from charter.errors import ConfigError
    from charter.export import SFT_OPTIONS, check_sft_options

    given = {k: getattr(a, k) for k in SFT_OPTIONS if getattr(a, k) is not None}
    if given and a.format != "sft":
        flags = ", ".join("--" + k.replace("_", "-") for k in given)
        verb, it = ("applies", "it") if len(given) == 1 else ("apply", "them")
        raise ConfigError(f"{flags} only {verb} to --format sft; drop {it} for --format {a.format}")
    check_sft_options(**given)
    return given


def cmd_export(a: argparse.Namespace) -> int:
    from charter.export import check_out, export
    from charter.store import load_run

    options = export_options(a)
    check_out(a.out, a.run)
    records = load_run(a.run)
    rounds = max((len(r.rounds) for r in records), default=0)
    if a.upto and a.upto > rounds:
        print(f"warning: --upto {a.upto} is more than the run's {rounds} rounds; all rounds are used", file=sys.stderr)
    n = export(records, a.format, a.out, **options)
    failed = sum(r.error is not None for r in records) if a.format != "trace" else 0
    skipped = f" (skipped {failed} failed records; re-run generate to retry them)" if failed else ""
    print(f"wrote {n} {a.format} rows to {a.out}{skipped}")
    return 0
