"""`charter label`: AI feedback, sampled answer pairs labelled by a feedback model (RL-CAI preference rows)."""
from __future__ import annotations

import argparse
import sys

from charter.cli.common import add_backend_option, add_config, add_settings, given, parse_backend_options
from charter.rlcai.labels import LabelConfig


def register(sub) -> None:
    p = sub.add_parser("label", help="AI feedback: sample answer pairs, label them with a feedback model (RL-CAI preference rows)")
    add_config(p, "label")
    add_settings(p, LabelConfig)
    add_backend_option(p, "passed to the backends' constructors (repeatable; VALUE parsed as YAML)")
    p.add_argument("--clamp", nargs=2, type=float, metavar=("LOW", "HIGH"), help="CoT clamp band (default 0.4 0.6)")
    p.add_argument("--overwrite", action="store_true", help="start again instead of resuming an existing OUT")
    p.add_argument("--force", action="store_true", help="resume OUT even if it was made with different settings")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_label)


def cmd_label(a: argparse.Namespace) -> int:
    from charter.rlcai.labels import label

    overrides = {**given(a, LabelConfig), "backend_options": parse_backend_options(a.backend_option)}
    if a.clamp:
        overrides["clamp_low"], overrides["clamp_high"] = a.clamp
    cfg = LabelConfig.load(a.config, overrides)
    print(f"charter label: policy={cfg.policy} feedback={cfg.feedback_model or cfg.policy} backend={cfg.backend} "
          f"format={cfg.format} samples={cfg.samples} ensemble={cfg.ensemble} cot={cfg.cot} -> {cfg.out}", file=sys.stderr)
    summary = label(cfg, overwrite=a.overwrite, force=a.force, progress=not a.quiet)
    print(summary.line())
    if summary.bias:
        from charter.rlcai.bias import text_lines

        print("\n".join(text_lines(summary.bias, "feedback model bias")))
    return 1 if summary.failures else 0
