"""The report's small HTML pieces. Every dynamic value goes through `esc` (html.escape) or `table`:
input files are untrusted (see charter.report.html)."""
from __future__ import annotations

import html
from typing import Sequence


def esc(value: object) -> str:
    return html.escape(str(value))


def table(head: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    def cell(v: object) -> str:
        if isinstance(v, float):
            return f'<td class="num">{v:.3f}</td>'
        return f'<td class="num">{v}</td>' if isinstance(v, int) else f"<td>{esc(str(v))}</td>"

    th = "".join(f"<th>{esc(h)}</th>" for h in head)
    body = "".join("<tr>" + "".join(cell(v) for v in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{th}</tr></thead><tbody>{body}</tbody></table>"


def img(png_b64: str, alt: str) -> str:
    return f'<img alt="{esc(alt)}" src="data:image/png;base64,{png_b64}">'


def card(value: object, label: str) -> str:
    return f'<div class="card"><b>{esc(str(value))}</b><span>{esc(label)}</span></div>'


def fmt(v: object, spec: str) -> object:
    """A number formatted; anything else as it is (table and esc escape it)."""
    return format(v, spec) if isinstance(v, (int, float)) and not isinstance(v, bool) else v


def sample_n(x: dict) -> object:
    """How many points an interval of `x` rests on: its "n", or the smaller side of a paired comparison."""
    if "n" in x:
        return x["n"]
    sides = [x[k] for k in ("n_critique", "n_direct") if isinstance(x.get(k), int)]
    return min(sides) if sides else None


def ci(x: dict, low: str, high: str, spec: str, n: object = None) -> str:
    """The interval as text, or the small-sample note (charter.stats.too_few) when it rests on a handful of points."""
    from charter.stats import too_few

    note = too_few(sample_n(x) if n is None else n)
    return note or f"[{fmt(x.get(low), spec)}, {fmt(x.get(high), spec)}]"


def pct(v: object) -> object:
    return "–" if v is None else fmt(v, ".0%")


def first_user(prompt: Sequence[dict]) -> str:
    return str(next((m["content"] for m in reversed(prompt) if m.get("role") == "user"), ""))


def turn(cls: str, who: str, text: str | None, raw_label: bool = False) -> str:
    label = who if raw_label else esc(who)
    return f'<div class="turn {cls}"><span class="who">{label}</span>{esc("" if text is None else text)}</div>'
