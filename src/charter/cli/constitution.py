"""`charter constitution show|validate`."""
from __future__ import annotations

import argparse
import sys


def register(sub) -> None:
    p = sub.add_parser("constitution", help="show or validate a constitution file")
    p.add_argument("action", choices=["show", "validate"])
    p.add_argument("file", nargs="?", default="default", help="constitution file (default: Charter's own)")
    p.add_argument("--few-shot", default="default", help="few-shot file, 'default' or 'none'")
    p.set_defaults(func=cmd_constitution)


def cmd_constitution(a: argparse.Namespace) -> int:
    from charter.inputs.constitution import load_constitution, validate

    c = load_constitution(a.file, a.few_shot)
    if a.action == "show":
        for p in c.principles:
            print(f"[{p.id}]\n  critique: {p.critique}\n  revision: {p.revision}\n")
    problems = validate(c)
    for problem in problems:
        print(f"warning: {problem}", file=sys.stderr)
    print(f"{c.source}: {len(c.principles)} principles, {len(c.few_shots)} few-shot examples, {len(problems)} warnings")
    return 0
