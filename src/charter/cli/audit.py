"""`charter audit`: which principles of a constitution explain a set of preference labels."""
from __future__ import annotations

import argparse

from charter.cli.common import add_backend_option, add_config, add_settings, given, parse_backend_options
from charter.rlcai.audit import AuditConfig


def register(sub) -> None:
    p = sub.add_parser("audit", help="which principles explain preference labels (AI labels or human comparisons): "
                       "each principle's agreement with the labels, order flips, principles that disagree")
    add_config(p, "audit")
    add_settings(p, AuditConfig)
    add_backend_option(p, "passed to the judge's backend constructor (repeatable; VALUE parsed as YAML)")
    p.add_argument("--overwrite", action="store_true",
                   help="judge every pair again instead of resuming OUT.pairs.jsonl")
    p.add_argument("--force", action="store_true",
                   help="resume OUT.pairs.jsonl even if it was made with other settings")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_audit)


def cmd_audit(a: argparse.Namespace) -> int:
    from charter.rlcai.audit import audit
    from charter.rlcai.audit_stats import text_table

    overrides = {**given(a, AuditConfig), "backend_options": parse_backend_options(a.backend_option)}
    cfg = AuditConfig.load(a.config, overrides)
    res = audit(cfg, overwrite=a.overwrite, force=a.force, progress=not a.quiet)
    print("\n".join(text_table(res.to_dict())))
    print(f"wrote {cfg.out}")
    return 1 if res.failed else 0
