"""The report's Labels section: what `charter label` decided and how steady it was, and how good the
labeler is (`charter eval-labeler`: accuracy and calibration).

From a label run's transcripts (charter.rlcai.label_store): the distribution of P(first answer
preferred), position consistency (the two orders of one question pick the same answer) and, with
--ensemble > 1, agreement across the principles averaged. Position, length and self-preference
biases are charter.report.bias's section (Judge biases), not repeated here. Every file is
untrusted input: values are escaped, and numbers of another type are skipped.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

from charter.report.markup import card, esc, img, pct, table
from charter.stats import too_few

BINS = 10


@dataclass
class LabelStats:
    name: str
    prompts: int = 0
    failed: int = 0
    skipped: int = 0
    scores: list[float] = field(default_factory=list)  # P(first answer preferred), one per labelled comparison
    orders: int = 0  # (comparison, principle) questions asked in both orders
    consistent: int = 0  # ... whose two orders picked the same answer
    ensembles: int = 0  # comparisons averaged over 2+ principles
    unanimous: int = 0  # ... whose principles all preferred the same answer
    spread: list[float] = field(default_factory=list)  # max - min of the principles' preferences


def _num(v: object) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _p_first(probs: object) -> float | None:
    if not (isinstance(probs, list) and len(probs) >= 2 and all(_num(p) for p in probs[:2])):
        return None
    total = probs[0] + probs[1]
    return probs[0] / total if total > 0 else 0.5


def _side(p: float) -> int:
    return 0 if abs(p - 0.5) < 1e-9 else (1 if p > 0.5 else -1)


def label_stats(name: str, lines: Iterable[dict]) -> LabelStats:
    """The numbers of one label run from its transcript lines (label_store.iter_lines)."""
    s = LabelStats(name)
    for t in lines:
        s.prompts += 1
        if t.get("error") is not None:
            s.failed += 1
            continue
        for c in t.get("comparisons") or ():
            if c.get("skipped") or not _num(c.get("score_first")):
                s.skipped += 1
                continue
            s.scores.append(float(c["score_first"]))
            _orders(s, c.get("asks") or ())
            prefs = [p for p in c.get("per_principle") or () if _num(p)]
            if len(prefs) > 1:
                s.ensembles += 1
                s.unanimous += len({_side(p) for p in prefs}) == 1
                s.spread.append(max(prefs) - min(prefs))
    return s


def _orders(s: LabelStats, asks: Sequence) -> None:
    """Each principle's two orders: consistent when x wins (or loses) in both."""
    slots: dict[str, list] = {}
    for a in asks:
        if isinstance(a, dict):
            slots.setdefault(str(a.get("principle")), [None, None])[0 if a.get("order") == "xy" else 1] = \
                _p_first(a.get("probs"))
    for xy, yx in slots.values():
        if xy is not None and yx is not None:
            s.orders += 1
            s.consistent += _side(xy) == -_side(yx) != 0


def read_label_stats(path: str | Path) -> LabelStats:
    from charter.rlcai.label_store import iter_lines, transcripts_path

    p = Path(path)
    return label_stats(p.name, iter_lines(transcripts_path(p)))


def share(k: int, n: int) -> str:
    """k of n as a percentage, or the small-sample note."""
    return too_few(n) or f"{k / n:.0%} ({k} of {n})"


def labels_section(stats: Sequence[LabelStats], labelers: Sequence[tuple[str, dict]] = ()) -> str | None:
    """Label statistics and the labeler's accuracy/calibration; None when there is neither."""
    if not stats and not labelers:
        return None
    out = [_one(s) for s in stats] + [labeler_section(name, data) for name, data in labelers]
    return "".join(out) + bias_hook()


def _one(s: LabelStats) -> str:
    n = len(s.scores)
    cards = "".join([card(s.prompts, "prompts"), card(n, "labelled comparisons"), card(s.skipped, "skipped"),
                     card(s.failed, "failed prompts")])
    out = [f"<h3>{esc(s.name)}</h3><div class=\"cards\">{cards}</div>"]
    if s.scores:
        out.append('<div class="plots">' + img(score_plot(s.name, s.scores), f"P(preferred) histogram: {s.name}")
                   + "</div>")
    mean = sum(s.scores) / n if n else None
    rows = [("mean P(first answer preferred)", "–" if mean is None else f"{mean:.3f} (n = {n})"),
            ("decisive (P < 0.3 or > 0.7)", share(sum(1 for x in s.scores if abs(x - 0.5) > 0.2), n)),
            ("position consistency (both orders pick the same answer)", share(s.consistent, s.orders)),
            ("ensemble agreement (every principle prefers the same answer)",
             share(s.unanimous, s.ensembles) if s.ensembles else "one principle per comparison"),
            ("mean spread of the principles' P", f"{sum(s.spread) / len(s.spread):.3f}" if s.spread else "–")]
    return "".join(out) + table(["measure", "value"], rows)


def labeler_section(name: str, data: dict) -> str:
    """eval-labeler's result: accuracy, ECE and the reliability diagram from its bins."""
    n = data.get("n_rows") if isinstance(data.get("n_rows"), int) else 0
    note = too_few(n)
    rows = [("rows", n), ("accuracy", note or pct(data.get("accuracy"))),
            ("accuracy, first order only", note or pct(data.get("accuracy_first_order"))),
            ("expected calibration error", note or _f(data.get("ece"))), ("Brier score", _f(data.get("brier")))]
    bins = [b for b in data.get("bins") or () if isinstance(b, dict) and _num(b.get("mean_predicted"))
            and _num(b.get("observed")) and isinstance(b.get("count"), int)]
    plot = ('<div class="plots">' + img(reliability_plot(bins), f"reliability diagram: {name}") + "</div>"
            if bins and not note else "")
    return f"<h3>Labeler: {esc(name)} <span class=\"muted\">{esc(data.get('model', ''))}</span></h3>{plot}" + table(
        ["measure", "value"], rows)


def _f(v: object) -> str:
    return f"{v:.3f}" if _num(v) else "–"


def bias_hook() -> str:
    """Position/length/self-preference bias is charter.report.bias's section, when that module is there."""
    from importlib.util import find_spec

    if find_spec("charter.report.bias") is None:
        return ""
    return '<p class="muted">Position, length and self-preference bias: see <a href="#bias">Judge biases</a>.</p>'


def score_plot(title: str, scores: Sequence[float]) -> str:
    from charter.report.plots import COLORS, _styled, _subplots, to_png

    @_styled
    def draw() -> str:
        fig, ax = _subplots(figsize=(4.6, 2.8))
        ax.hist(scores, bins=[i / BINS for i in range(BINS + 1)], color=COLORS[0])
        ax.set(xlim=(0, 1), xlabel="P(first answer preferred)", ylabel="comparisons", title=title)
        return to_png(fig)

    return draw()


def reliability_plot(bins: Sequence[dict]) -> str:
    from charter.report.plots import COLORS, _styled, _subplots, to_png

    @_styled
    def draw() -> str:
        fig, ax = _subplots(figsize=(3.6, 3.4))
        ax.plot([0, 1], [0, 1], "--", color="grey", linewidth=1, label="perfect calibration")
        ax.plot([b["mean_predicted"] for b in bins], [b["observed"] for b in bins], marker="o", color=COLORS[0],
                label="labeler")
        ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="predicted P(correct)", ylabel="observed frequency")
        ax.legend(fontsize=7)
        return to_png(fig)

    return draw()
