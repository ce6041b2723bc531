"""The report's Constitution audit section: each audit result (`charter audit`, charter.rlcai.audit)
given to the report: which principles agree with the labels, which flip with the option order,
which pairs of principles pick different winners. The files are untrusted input: every value is
escaped (charter.report.markup), and one of another shape is an InputError naming it."""
from __future__ import annotations

from typing import Sequence

from charter.errors import InputError
from charter.report.markup import esc, img, table
from charter.report.plots import COLORS, _styled, _subplots, to_png
from charter.rlcai.audit_stats import HEAD, principle_row

SHOWN = 10  # pairs of principles listed, most disagreeing first


def audit_section(feedback: Sequence) -> str | None:
    """The section's HTML over the audit results among `feedback` (charter.report.bias.FeedbackFile), or None."""
    audits = [f for f in feedback if f.kind == "audit"]
    if not audits:
        return None
    parts = []
    for f in audits:
        try:
            parts.append(render_audit(f.name, f.data))
        except (AttributeError, KeyError, TypeError, ValueError, IndexError) as exc:
            raise InputError(f"not an audit made by `charter audit` ({type(exc).__name__}: {exc}); rerun it",
                             str(f.path)) from exc
    return "".join(parts)


def render_audit(name: str, d: dict) -> str:
    rows = [principle_row(p) for p in d["principles"]] + ([principle_row(d["all_principles"])]
                                                          if d.get("all_principles") else [])
    out = [f"<h3>{esc(name)}: {esc(d['constitution'])} on {esc(d['data'])}, {esc(d['pairs'])} pairs judged by "
           f"{esc(d['model'])}</h3>",
           f'<p class="muted">{esc(d["ties"])} ties left out, {esc(d["failed"])} failed. Agreement: the share of '
           "pairs where the principle alone, position-averaged, picks the labels' choice, with a seeded bootstrap "
           "interval. Accuracy, relevance and performance as in Inverse Constitutional AI, a verdict that flips "
           "with the option order counting as not applicable.</p>"]
    drawn = [p for p in d["principles"] if p.get("low") is not None and p.get("agreement") is not None]
    if drawn:
        out.append('<div class="plots">' + img(agreement_plot(drawn), "agreement with the labels") + "</div>")
    out.append(table(HEAD, rows))
    split = [x for x in d["disagreements"] if x.get("share")][:SHOWN]
    if split:
        out.append("<h3>Principles that pick different winners</h3>"
                   + table(["principle", "principle", "pairs both decide", "different winners"],
                           [[x["a"], x["b"], x["n"], f"{x['share']:.0%}"] for x in split]))
    longer = d.get("longer_chosen") or {}
    if longer.get("rate") is not None:
        out.append(f'<p class="muted">The labels chose the longer answer in {longer["rate"]:.0%} of '
                   f"{esc(longer['n'])} pairs: a principle that agrees about this often may be reading length.</p>")
    return "".join(out)


@_styled
def agreement_plot(principles: Sequence[dict]) -> str:
    fig, ax = _subplots(figsize=(6, 0.3 * len(principles) + 0.9))
    ys = range(len(principles))
    ax.barh(list(ys), [p["agreement"] for p in principles], color=COLORS[0])
    for y, p in zip(ys, principles):
        ax.plot([p["low"], p["high"]], [y, y], color="black", linewidth=1)
    ax.axvline(0.5, color="grey", linestyle="--", linewidth=1)
    ax.set_yticks(list(ys), [str(p["id"]) for p in principles])
    ax.set_xlim(0, 1)
    ax.set_xlabel("agrees with the labels (grey: chance)")
    ax.invert_yaxis()
    return to_png(fig)


__all__ = ["audit_section", "render_audit"]
