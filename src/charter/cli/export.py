"""`charter export`: run -> SFT / preference (DPO) / trace rows (.jsonl or .parquet), cleaned and
filtered, with a dataset card; optionally a train/test split and an upload to the Hub."""
from __future__ import annotations

import argparse

from charter.cli.common import add_config, add_settings, given
from charter.export import ExportConfig


def register(sub) -> None:
    p = sub.add_parser("export", help="run -> SFT / preference (DPO) / trace rows (.jsonl or .parquet)")
    add_config(p, "export")
    add_settings(p, ExportConfig)
    p.set_defaults(func=cmd_export)


def cmd_export(a: argparse.Namespace) -> int:
    from charter.export import export_run

    cfg = ExportConfig.load(a.config, given(a, ExportConfig))
    result = export_run(cfg)
    skipped = f" (skipped {result.failed} failed records; re-run generate to retry them)" if result.failed else ""
    if cfg.test_share:
        n, f = result.rows, result.files
        print(f"wrote {n['train']} train and {n['test']} test {cfg.format} rows "
              f"to {f['train']} and {f['test']}{skipped}")
    else:
        print(f"wrote {result.rows['train']} {cfg.format} rows to {cfg.out}{skipped}")
    if result.filters:
        totals = result.dropped_totals()
        counts = ", ".join(f"{f} {totals.get(f, 0)}" for f in result.filters)
        print(f"filters dropped {sum(totals.values())} rounds: {counts}")
    if result.reviewed:
        print(f"--drop-reviewed-worse {result.reviewed}")
    if result.card:
        print(f"dataset card: {result.card}")
    if result.pushed:
        print(f"pushed to the Hub: https://huggingface.co/datasets/{result.pushed}")
    return 0
