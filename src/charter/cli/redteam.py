"""`charter redteam`: red-team prompts for a constitution, per principle or topic, written for `generate --prompts`."""
from __future__ import annotations

import argparse
import sys

from charter.cli.common import add_backend_option, add_config, add_settings, given, parse_backend_options
from charter.redteam.job import RedteamConfig


def register(sub) -> None:
    p = sub.add_parser("redteam", help="write red-team prompts per principle or topic (a prompt file for generate "
                       "--prompts, with a card)")
    add_config(p, "redteam")
    add_settings(p, RedteamConfig)
    add_backend_option(p, "passed to the backend's constructor (repeatable; VALUE parsed as YAML)")
    p.add_argument("--overwrite", action="store_true", help="start again instead of resuming an existing OUT")
    p.add_argument("--force", action="store_true", help="resume OUT even if it was made with different settings")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_redteam)


def cmd_redteam(a: argparse.Namespace) -> int:
    from charter.redteam.job import redteam

    overrides = {**given(a, RedteamConfig), "backend_options": parse_backend_options(a.backend_option)}
    cfg = RedteamConfig.load(a.config, overrides)
    topics = cfg.topics or f"the principles of {cfg.constitution}"
    print(f"charter redteam: model={cfg.model} backend={cfg.backend} topics={topics} per_topic={cfg.per_topic} "
          f"styles={','.join(cfg.styles)} -> {cfg.out}", file=sys.stderr)
    summary = redteam(cfg, overwrite=a.overwrite, force=a.force, progress=not a.quiet)
    print(summary.line())
    return 1 if summary.failures else 0
