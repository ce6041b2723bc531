"""`charter classifier data`: constitutional-classifier data (one subcommand per step; more join SUBCOMMANDS)."""
from __future__ import annotations

import argparse
import sys

from charter.classifier.data import ClassifierDataConfig
from charter.cli.common import add_backend_option, add_config, add_settings, given, parse_backend_options


def register(sub) -> None:
    p = sub.add_parser("classifier", help="constitutional classifiers: labelled synthetic data for a guard "
                       "(restricted vs permitted categories)")
    csub = p.add_subparsers(dest="classifier_command", required=True)
    for name, (adder, text) in SUBCOMMANDS.items():
        adder(csub.add_parser(name, help=text, description=text))


def add_data(p: argparse.ArgumentParser) -> None:
    add_config(p, "classifier data")
    add_settings(p, ClassifierDataConfig)
    add_backend_option(p, "passed to the backends' constructors (repeatable; VALUE parsed as YAML)")
    p.add_argument("--overwrite", action="store_true", help="start again instead of resuming an existing OUT")
    p.add_argument("--force", action="store_true", help="resume OUT even if it was made with different settings")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_data)


def cmd_data(a: argparse.Namespace) -> int:
    from charter.classifier.data import classifier_data

    overrides = {**given(a, ClassifierDataConfig), "backend_options": parse_backend_options(a.backend_option)}
    cfg = ClassifierDataConfig.load(a.config, overrides)
    print(f"charter classifier data: constitution={cfg.constitution} model={cfg.model} backend={cfg.backend} "
          f"per_category={cfg.per_category} augment={','.join(cfg.augment) or 'none'} outputs={cfg.outputs} "
          f"check_labels={cfg.check_labels} -> {cfg.out}", file=sys.stderr)
    summary = classifier_data(cfg, overwrite=a.overwrite, force=a.force, progress=not a.quiet)
    print(summary.line())
    return 1 if summary.failures else 0


SUBCOMMANDS = {  # name: (adds its flags, help)
    "data": (add_data, "write labelled requests (and answers) for every category of a classifier constitution, "
             "augmented, deduplicated and split into OUT/train.jsonl and OUT/test.jsonl (resumable)"),
}
