"""How a pairwise judge leans, beside what it decides: position, length and self-preference bias.

Every judge in Charter (label's feedback model, eval-labeler's, eval's judge, audit's) answers a
two-option question, often in both option orders. Pure functions here turn those answers
(`Compared`, one per comparison) into one `JudgeBias`, a TypedDict, so eval.json and the other
results hold it as it is:

- position consistency: of the (comparison, principle) questions asked in both orders, the share
  whose two orders name the same winner (one minus the flip rate);
- position bias, before the two orders are averaged: the share of single-order verdicts that go
  to the answer shown first (a tie, P = 0.5, is no verdict), and the mean P(first) (0.5: none);
- length bias: the share of comparisons (answers of different lengths, a winner) that the longer
  answer wins, and the Pearson and Spearman correlations of the score P(x better) with
  len(x) - len(y) in characters. Each comparison counts in both orientations, (d, s) and
  (-d, 1 - s), so which answer is called x cannot change a correlation;
- self-preference: where the judge is also a source (the same model spec), the share of the
  comparisons with one answer of its own that it gives to its own.

A share carries a Wilson 95% interval (closed form: label runs reach 300k comparisons); one read
from fewer than MIN_N items says "n = 3: too few to read" in `notes` instead of an interval, and a
measure that cannot be taken says why there ("n/a: ...").
"""
from __future__ import annotations

import math
from array import array
from dataclasses import dataclass
from typing import Iterable, Sequence, TypedDict

MIN_N = 10  # below this a share or a correlation is not read
Z95 = 1.959964
# What published audits of LLM judges report, shown beside a user's own numbers for context.
REFERENCE = {"consistency": "about 7 in 8 (1 verdict in 8 flips)",
             "longer_wins": "about 2 in 3"}


class Share(TypedDict):
    n: int
    rate: float | None
    low: float | None
    high: float | None


class JudgeBias(TypedDict):
    judge: str | None
    comparisons: int
    verdicts: int  # single-order answers read
    consistency: Share
    first_wins: Share
    mean_p_first: float | None
    longer_wins: Share
    length_pearson: float | None
    length_spearman: float | None
    length_unit: str
    self_preference: Share
    notes: dict[str, str]  # measure -> why it is not read ("n = 3: too few to read", "n/a: ...")


@dataclass(frozen=True)
class Compared:
    """One comparison of answers x and y. `orders`: per principle (or question), P(first) when x
    is shown first and P(first) when y is shown first; None for an order not asked."""

    orders: tuple[tuple[float | None, float | None], ...]
    len_x: int
    len_y: int
    source_x: str | None = None
    source_y: str | None = None

    def score(self) -> float | None:
        """P(x better), averaged over the principles and the orders asked."""
        ps = [p for xy, yx in self.orders for p in (xy, None if yx is None else 1.0 - yx) if p is not None]
        return sum(ps) / len(ps) if ps else None


def p_first(probs: Sequence[float]) -> float:
    """P(first option) of a two-option answer, normalised over the two."""
    total = probs[0] + probs[1]
    return probs[0] / total if total > 0 else 0.5


TIE = 1e-9  # P within this of 0.5 is a tie: 0.9 and 1 - 0.9 must average to one half exactly


def winner(p: float) -> int:
    """1: the first-shown answer (or x, for a position-averaged P), -1: the second, 0: no verdict (a tie)."""
    return 0 if abs(p - 0.5) < TIE else 1 if p > 0.5 else -1


def share(k: int, n: int, name: str, notes: dict[str, str]) -> Share:
    """k of n with a Wilson 95% interval; fewer than MIN_N: no interval, and a note."""
    if n == 0:
        return {"n": 0, "rate": None, "low": None, "high": None}
    p = k / n
    if n < MIN_N:
        notes.setdefault(name, f"n = {n}: too few to read")
        return {"n": n, "rate": p, "low": None, "high": None}
    denom = 1 + Z95 ** 2 / n
    centre = (p + Z95 ** 2 / (2 * n)) / denom
    half = Z95 * math.sqrt(p * (1 - p) / n + Z95 ** 2 / (4 * n * n)) / denom
    return {"n": n, "rate": p, "low": max(0.0, centre - half), "high": min(1.0, centre + half)}


def pearson(xs: Sequence[float], ys: Sequence[float]) -> float | None:
    n = len(xs)
    if n < 2:
        return None
    mx, my = sum(xs) / n, sum(ys) / n
    sxy = sum((x - mx) * (y - my) for x, y in zip(xs, ys))
    sxx, syy = sum((x - mx) ** 2 for x in xs), sum((y - my) ** 2 for y in ys)
    return sxy / math.sqrt(sxx * syy) if sxx > 0 and syy > 0 else None


def ranks(xs: Sequence[float]) -> list[float]:
    """1-based ranks, ties sharing their mean rank."""
    order = sorted(range(len(xs)), key=xs.__getitem__)
    out = [0.0] * len(xs)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and xs[order[j + 1]] == xs[order[i]]:
            j += 1
        for k in range(i, j + 1):
            out[order[k]] = (i + j) / 2 + 1
        i = j + 1
    return out


def spearman(xs: Sequence[float], ys: Sequence[float]) -> float | None:
    return pearson(ranks(xs), ranks(ys))


class BiasTally:
    """`judge_bias` as it goes: counts, and two floats per comparison for the correlations."""

    def __init__(self, judge: str | None = None):
        self.judge = judge
        self.comparisons = self.verdicts = self.first = self.decided = 0
        self.sum_first = 0.0
        self.consistent = self.both = self.longer = self.by_length = self.own = self.with_own = 0
        self.judge_is_source, self.one_own = False, 0
        self.diffs, self.scores = array("d"), array("d")

    def add(self, c: Compared) -> None:
        self.comparisons += 1
        for xy, yx in c.orders:
            for p in (xy, yx):
                if p is not None:
                    self.verdicts += 1
                    self.sum_first += p
                    self.decided += winner(p) != 0
                    self.first += winner(p) > 0
            if xy is not None and yx is not None and (winner(xy) or winner(yx)):
                self.both += 1
                self.consistent += winner(xy) == -winner(yx) != 0  # x first wins == y first loses
        s = c.score()
        if s is None:
            return
        d = c.len_x - c.len_y
        self.diffs.append(d)
        self.scores.append(s)
        if d and winner(s):
            self.by_length += 1
            self.longer += (d > 0) == (s > 0.5)
        self._self(c, s)

    def _self(self, c: Compared, s: float) -> None:
        if self.judge is None:
            return
        mine = (c.source_x == self.judge, c.source_y == self.judge)
        self.judge_is_source |= any(mine)
        self.one_own += mine[0] != mine[1]
        if mine[0] != mine[1] and winner(s):
            self.with_own += 1
            self.own += (s > 0.5) == mine[0]

    def result(self) -> JudgeBias:
        notes: dict[str, str] = {}
        out: JudgeBias = {
            "judge": self.judge, "comparisons": self.comparisons, "verdicts": self.verdicts,
            "consistency": share(self.consistent, self.both, "consistency", notes),
            "first_wins": share(self.first, self.decided, "first_wins", notes),
            "mean_p_first": self.sum_first / self.verdicts if self.verdicts else None,
            "longer_wins": share(self.longer, self.by_length, "longer_wins", notes),
            "length_pearson": None, "length_spearman": None, "length_unit": "characters",
            "self_preference": share(self.own, self.with_own, "self_preference", notes), "notes": notes}
        self._correlations(out, notes)
        self._why_not(out, notes)
        return out

    def _correlations(self, out: JudgeBias, notes: dict[str, str]) -> None:
        n = len(self.diffs)
        if n < MIN_N:
            notes.setdefault("length_correlation", f"n = {n}: too few to read")
            return
        d = [*self.diffs, *(-x for x in self.diffs)]
        # rounded, so that a score and its mirror tie exactly when ranked
        u = [*(round(s - 0.5, 12) for s in self.scores), *(round(0.5 - s, 12) for s in self.scores)]
        out["length_pearson"], out["length_spearman"] = pearson(d, u), spearman(d, u)
        if out["length_pearson"] is None:
            notes["length_correlation"] = "n/a: no spread in lengths or scores"

    def _why_not(self, out: JudgeBias, notes: dict[str, str]) -> None:
        if not self.both:
            notes.setdefault("consistency", "n/a: each comparison was asked in one order only" if self.verdicts
                             else "n/a: no verdicts")
        if self.verdicts and not self.decided:
            notes.setdefault("first_wins", "n/a: every verdict is a tie")
        if not self.by_length:
            notes.setdefault("longer_wins", "n/a: no decided pair of unequal lengths")
        if not self.with_own:
            notes.setdefault("self_preference", "n/a: each comparison with its own answer is a tie" if self.one_own
                             else self_note(self.judge, self.judge_is_source))


def self_note(judge: str | None, judge_is_source: bool) -> str:
    if judge is None:
        return "n/a: the judge's model is not known"
    if judge_is_source:
        return "n/a: both answers are the judge's own"
    return "n/a: no answer is the judge's own"


def judge_bias(rows: Iterable[Compared], judge: str | None = None) -> JudgeBias:
    """The biases of a judge over its comparisons (streamed); `judge`: its model spec, for self-preference."""
    tally = BiasTally(judge)
    for row in rows:
        tally.add(row)
    return tally.result()


# ---- reading a JudgeBias -----------------------------------------------------------------------


def _pct(s: Share, name: str, notes: dict[str, str]) -> str:
    if name in notes and (s["low"] is None or notes[name].startswith("n/a")):
        return notes[name]
    if s["rate"] is None:
        return "n/a"
    return f"{s['rate']:.0%} [{s['low']:.0%}, {s['high']:.0%}] of {s['n']:,}"


def describe(b: JudgeBias) -> list[tuple[str, str, str]]:
    """(measure, this judge, published or neutral value) rows: what the CLI and the report show."""
    notes = b["notes"]
    mean = "–" if b["mean_p_first"] is None else f"{b['mean_p_first']:.3f}"
    if "length_correlation" in notes:
        corr = notes["length_correlation"]
    else:
        corr = f"Pearson {b['length_pearson']:+.2f}, Spearman {b['length_spearman']:+.2f}"
    return [
        ("same winner in both orders", _pct(b["consistency"], "consistency", notes), REFERENCE["consistency"]),
        ("verdicts for the first-shown answer", _pct(b["first_wins"], "first_wins", notes), "50% = no position bias"),
        ("mean P(first shown)", mean, "0.500 = no position bias"),
        ("longer answer wins", _pct(b["longer_wins"], "longer_wins", notes), REFERENCE["longer_wins"]),
        (f"score vs length difference ({b['length_unit']})", corr, "0 = no length bias"),
        ("judge prefers its own answers", _pct(b["self_preference"], "self_preference", notes), "50% = none"),
    ]


def text_lines(b: JudgeBias, title: str = "judge bias") -> list[str]:
    """A small aligned table for the terminal."""
    rows = describe(b)
    width, values = max(len(m) for m, _, _ in rows), max(len(v) for _, v, _ in rows)
    head = f"{title} ({b['comparisons']:,} comparisons, {b['verdicts']:,} single-order verdicts):"
    return [head] + [f"  {m.ljust(width)}  {v.ljust(values)}  reference: {r}" for m, v, r in rows]


__all__ = ["Compared", "JudgeBias", "Share", "BiasTally", "judge_bias", "describe", "text_lines", "p_first",
           "pearson", "spearman", "REFERENCE", "MIN_N"]
