"""The review page's HTML: the report's markup pieces and CSS (charter.report), one item element
per revision and per label pair, its current mark in a data attribute, and the inline script.

Every value from the run or a label file goes through `esc`; the script is allowed by its hash
(Content-Security-Policy), as in the report, and may only talk to this server (connect-src 'self').
"""
from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass
from typing import Sequence

from charter.report import assets as report_assets
from charter.report.markup import esc, first_user, turn
from charter.review import assets
from charter.review.items import Chain, PairItem

SHORTCUTS = [("j / k", "next / previous item"), ("1 or b", "revision: better than the answer before it"),
             ("2 or w", "revision: worse"), ("3 or s", "revision: about the same"),
             ("a / b", "pair: answer A / answer B is better"), ("x or 0", "clear the item's mark"),
             ("/", "search"), ("?", "this help (Esc closes it)")]
REVISION_BUTTONS = [("better", "1"), ("worse", "2"), ("same", "3")]


@dataclass
class View:
    title: str
    reviewer: str
    file: str  # where the marks are saved
    chains: Sequence[Chain]
    pairs: Sequence[PairItem]
    marks: dict[str, str]  # item key -> better | worse | same | a | b
    more_chains: bool = False
    more_pairs: bool = False
    limit: int = 0
    stale: int = 0  # marks on texts that changed since they were made


def csp(header: bool = True) -> str:
    """The page's policy; frame-ancestors (no framing) only counts in the HTTP header, not in a meta tag."""
    digest = base64.b64encode(hashlib.sha256(assets.JS.encode()).digest()).decode()
    return (f"default-src 'none'; style-src 'unsafe-inline'; script-src 'sha256-{digest}'; connect-src 'self'; "
            "img-src data:; base-uri 'none'; form-action 'none'" + ("; frame-ancestors 'none'" if header else ""))


def buttons(choices: Sequence[tuple[str, str, str]]) -> str:
    """(value, label, key) buttons and the state line the script fills in."""
    bs = "".join(f'<button type="button" data-value="{v}">{esc(label)} <kbd>{k}</kbd></button>'
                 for v, label, k in choices)
    return f'<div class="marks">{bs}<span class="state muted"></span></div>'


def item_attrs(key: str, kind: str, marks: dict[str, str]) -> str:
    return f'data-key="{esc(key)}" data-type="{kind}" data-mark="{esc(marks.get(key, ""))}"'


def chain_html(chain: Chain, marks: dict[str, str]) -> str:
    r = chain.record
    principles = list(dict.fromkeys(x.principle for x in r.rounds))
    parts = [turn("prompt", m["role"], m["content"]) for m in r.prompt]
    parts.append(turn("initial", "initial answer", r.initial))
    for item, rnd in zip(chain.items, r.rounds):
        tag = f'round {item.round} <span class="badge">{esc(rnd.principle)}</span>'
        if rnd.critique is not None:
            parts.append(turn("critique", f"critique · {tag}", rnd.critique, raw_label=True))
        parts.append(f'<div class="item" {item_attrs(item.key, "revision", marks)}>'
                     + turn("revision", f"revision · {tag}", rnd.revision, raw_label=True)
                     + buttons([(v, v, k) for v, k in REVISION_BUTTONS]) + "</div>")
    badges = f'<span class="badge kind">{esc(r.kind)}</span>' + "".join(
        f'<span class="badge">{esc(p)}</span>' for p in principles)
    return (f'<article class="chain" data-principles="|{esc("|".join(principles))}|">'
            f"<h3>{esc(first_user(r.prompt)[:140])} {badges}</h3>{''.join(parts)}</article>")


def pair_html(pair: PairItem, marks: dict[str, str]) -> str:
    shown = (pair.answers[pair.shown_first], pair.answers[1 - pair.shown_first])
    options = "".join(f'<div class="turn option" data-letter="{letter}"><span class="who">answer {letter.upper()}'
                      f"</span>{esc(text)}</div>" for letter, text in zip("ab", shown))
    prompt = "".join(turn("prompt", m.get("role", ""), m.get("content", "")) for m in pair.prompt)
    return (f'<article class="item pair" data-principles="||" {item_attrs(pair.key, "pair", marks)}>'
            f'<h3>{esc(first_user(pair.prompt)[:140])} <span class="badge kind">{esc(pair.labels_name)}</span></h3>'
            f'{prompt}<div class="options">{options}</div>'
            + buttons([("a", "A is better", "a"), ("b", "B is better", "b")]) + "</article>")


def select(id_: str, label: str, options: Sequence[tuple[str, str]]) -> str:
    opts = "".join(f'<option value="{esc(v)}">{esc(t)}</option>' for v, t in options)
    return f'<label>{esc(label)} <select id="{id_}">{opts}</select></label>'


def controls(view: View) -> str:
    principles = sorted({x.principle for c in view.chains for x in c.record.rounds})
    return ('<nav class="controls">'
            '<input id="search" type="search" placeholder="search prompts, answers, critiques…">'
            + select("principle", "principle", [("", "all")] + [(p, p) for p in principles])
            + select("show", "show", [("", "chains and pairs"), ("chains", "chains"), ("pairs", "label pairs")])
            + select("status", "status", [("", "all"), ("unmarked", "not yet marked"), ("marked", "marked")])
            + '<span id="progress" class="muted"></span><button id="help-button" type="button">'
              "<kbd>?</kbd> shortcuts</button></nav>")


def more(shown: int, what: str, limit: int) -> str:
    return (f'<p class="muted">The first {shown:,} {what} are shown; pass <code>--limit N</code> '
            f"(now {limit:,}) to review more.</p>")


def sections(view: View) -> str:
    chains = "".join(chain_html(c, view.marks) for c in view.chains) or \
        '<p class="muted">No finished chains with critique/revision rounds in this run.</p>'
    pairs = "".join(pair_html(p, view.marks) for p in view.pairs) or \
        ('<p class="muted">No label pairs: save a <code>charter label</code> output under the run '
         "(<code>--out RUN/labels.jsonl</code>) or pass <code>--labels FILE</code>.</p>")
    return (f'<section id="chains"><h2>Chains</h2>'
            f'{more(len(view.chains), "chains", view.limit) if view.more_chains else ""}{chains}</section>'
            f'<section id="pairs"><h2>Label pairs</h2>'
            f'{more(len(view.pairs), "pairs", view.limit) if view.more_pairs else ""}{pairs}</section>')


def help_box() -> str:
    rows = "".join(f"<tr><td><kbd>{esc(k)}</kbd></td><td>{esc(what)}</td></tr>" for k, what in SHORTCUTS)
    return (f'<div id="help" hidden role="dialog" aria-label="keyboard shortcuts"><h3>Keyboard shortcuts</h3>'
            f"<table>{rows}</table><p class=\"muted\">Marks are saved as you make them; the last one "
            "for an item counts.</p></div>")


def render(view: View) -> str:
    stale = (f" · {view.stale} earlier mark(s) were on texts that changed since and are not shown"
             if view.stale else "")
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
            f'<meta http-equiv="Content-Security-Policy" content="{csp(header=False)}">'
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>Charter review: {esc(view.title)}</title>"
            f"<style>{report_assets.CSS}{assets.CSS}</style></head><body>"
            f"<header><h1>Charter review</h1><p>{esc(view.title)} · reviewer <b>{esc(view.reviewer)}</b> · "
            f"marks are saved to {esc(view.file)} as you make them{esc(stale)}</p></header>"
            f'{controls(view)}<div id="message" role="status" aria-live="polite"></div>'
            f"<main>{sections(view)}</main>{help_box()}<script>{assets.JS}</script></body></html>")
