"""The report's Critiqued vs direct section: when a critiqued run and a `--no-critique` run share
prompt ids, one prompt's two chains side by side, each revision against the initial answer with the
changed words marked (a word-level difflib diff as <ins>/<del>).

Model text is untrusted: every piece of it goes through `esc` before it is wrapped in a tag, so a
"<script>" in an answer is shown as text, inside or outside a marked change.
"""
from __future__ import annotations

import difflib
import re
from typing import Sequence

from charter.report.markup import esc, first_user, turn
from charter.types import Record

PAIRS = 30  # prompts shown side by side per pair of runs
_TOKENS = re.compile(r"\s+|[^\s]+")


def word_diff(before: str | None, after: str | None) -> str:
    """`after` as escaped HTML with words added since `before` in <ins> and words dropped in <del>."""
    a, b = _TOKENS.findall(before or ""), _TOKENS.findall(after or "")
    out = []
    for op, i1, i2, j1, j2 in difflib.SequenceMatcher(None, a, b, autojunk=False).get_opcodes():
        if op == "equal":
            out.append(esc("".join(b[j1:j2])))
            continue
        if op in ("delete", "replace"):
            out.append(f"<del>{esc(''.join(a[i1:i2]))}</del>")
        if op in ("insert", "replace"):
            out.append(f"<ins>{esc(''.join(b[j1:j2]))}</ins>")
    return "".join(out)


def critiqued(run) -> bool | None:
    """Whether a run critiques before revising: its config, else its records' rounds; None if unknown."""
    flag = run.config.get("critique") if isinstance(run.config, dict) else None
    if isinstance(flag, bool):
        return flag
    rounds = [x for r in run.records for x in r.rounds]
    return any(x.critique is not None for x in rounds) if rounds else None


def run_pairs(runs: Sequence) -> list[tuple]:
    """(critiqued run, direct run, shared ids in the critiqued run's order) for runs that share prompts."""
    crit = [r for r in runs if critiqued(r) is True]
    direct = [r for r in runs if critiqued(r) is False]
    out = []
    for c in crit:
        for d in direct:
            theirs = {r.id for r in d.records if r.error is None}
            ids = [r.id for r in c.records if r.error is None and r.id in theirs]
            if ids:
                out.append((c, d, ids))
    return out


def _column(title: str, r: Record, initial: str | None) -> str:
    parts = [f'<div><h4>{esc(title)}</h4>']
    if r.initial != initial:  # sampled independently: its own initial answer first
        parts.append(turn("initial", "its initial answer", r.initial))
    for k, x in enumerate(r.rounds, 1):
        if x.critique is not None:
            parts.append(turn("critique", f"critique {k} · {x.principle}", x.critique))
        parts.append(f'<div class="turn revision"><span class="who">revision {k} · {esc(x.principle)} '
                     f"(changes against the initial answer)</span>{word_diff(r.initial, x.revision)}</div>")
    return "".join(parts) + "</div>"


def pair_html(c, d, rid: str) -> str:
    a = next(r for r in c.records if r.id == rid)
    b = next(r for r in d.records if r.id == rid)
    prompt = "".join(turn("prompt", m["role"], m["content"]) for m in a.prompt)
    return (f'<details class="pair" data-id="{esc(rid)}"><summary>{esc(rid)}: {esc(first_user(a.prompt)[:140])}'
            f"</summary>{prompt}{turn('initial', 'initial answer', a.initial)}"
            f'<div class="sides">{_column(f"critiqued: {c.name}", a, a.initial)}'
            f'{_column(f"direct (no critique): {d.name}", b, a.initial)}</div></details>')


def side_by_side_section(runs: Sequence) -> str | None:
    """The section's HTML, or None when no critiqued and direct runs share a prompt."""
    pairs = run_pairs(runs)
    if not pairs:
        return None
    out = ['<p class="muted">The same prompt revised with a critique first and directly; in each revision, '
           "<ins>added</ins> and <del>dropped</del> words against the initial answer.</p>"]
    for c, d, ids in pairs:
        more = f", the first {PAIRS}" if len(ids) > PAIRS else ""
        out.append(f"<h3>{esc(c.name)} vs {esc(d.name)}: {len(ids)} shared prompts{more}</h3>")
        out += [pair_html(c, d, rid) for rid in ids[:PAIRS]]
    return "".join(out)
