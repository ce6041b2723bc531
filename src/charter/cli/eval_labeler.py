"""`charter eval-labeler`: accuracy and calibration of a feedback model (or a preference model)."""
from __future__ import annotations

import argparse

from charter.cli.common import add_backend_option, add_config, add_settings, given, parse_backend_options
from charter.rlcai.labeler_eval import LabelerEvalConfig


def register(sub) -> None:
    p = sub.add_parser("eval-labeler", help="accuracy and calibration of a feedback model on {prompt, corrects, "
                       "incorrects} comparisons (e.g. the 438 HHH set)")
    add_config(p, "eval-labeler")
    add_settings(p, LabelerEvalConfig)
    add_backend_option(p)
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_eval_labeler)


def cmd_eval_labeler(a: argparse.Namespace) -> int:
    from charter.rlcai.labeler_eval import evaluate_labeler

    overrides = {**given(a, LabelerEvalConfig), "backend_options": parse_backend_options(a.backend_option)}
    cfg = LabelerEvalConfig.load(a.config, overrides)
    res = evaluate_labeler(cfg, progress=not a.quiet)
    if res.n_rows or not res.human:  # --reviews alone scores no FILE rows
        print(res.line())
    if res.human:
        from charter.rlcai.human_agreement import human_line

        print(human_line(res.human))
    if res.bias:
        from charter.rlcai.bias import text_lines

        print("\n".join(text_lines(res.bias, "labeler bias")))
    print(f"wrote {cfg.out}" + (f" and {res.plot}" if res.plot else ""))
    return 0
