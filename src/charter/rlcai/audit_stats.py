"""The numbers of `charter audit` (charter.rlcai.audit), as pure functions over the judge's answers.

Every pair is oriented chosen-first: x is the answer the labels prefer, y the other. For one
principle, a pair's answers are P(first) with x shown first and P(first) with y shown first; the
principle's verdict is the position-averaged P(x better). Per principle:

- agreement: the share of pairs whose verdict picks the labels' choice (a tie counts one half),
  with a seeded percentile bootstrap interval over the pairs (charter.stats);
- consistency: the share of pairs whose two orders name the same winner; a pair whose verdict
  flips with the order is "not applicable" in the sense of Inverse Constitutional AI (arXiv
  2406.06560), whose metrics follow: relevance (the consistent share of all pairs), accuracy
  (agreement among the consistent pairs) and performance = (accuracy - 0.5) * relevance * 2;
- a verdict: "explains the labels" (interval above 50%), "goes against the labels" (below),
  "no signal" (the interval holds 50%, or every answer is a tie), "flips with order"
  (consistency under 50%), or "too few to read" (fewer than MIN_N pairs).

Pairs of principles disagree on a pair when their verdicts name different winners (pairs where
either is a tie left out).
"""
from __future__ import annotations

import itertools
from typing import Mapping, Sequence, TypedDict

from charter.rlcai.bias import MIN_N, winner
from charter.stats import bootstrap_mean

Orders = tuple[float, float]  # P(first) with x (chosen) shown first, with y shown first


class PrincipleAudit(TypedDict):
    id: str
    text: str
    n: int
    agreement: float | None
    low: float | None
    high: float | None
    mean_p_chosen: float | None
    consistency: float | None
    accuracy: float | None
    relevance: float | None
    performance: float | None
    verdict: str


class Disagreement(TypedDict):
    a: str
    b: str
    n: int
    share: float | None


def p_chosen(o: Orders) -> float:
    """P(x better), position-averaged."""
    return (o[0] + 1.0 - o[1]) / 2.0


def agrees(o: Orders) -> float:
    return (1.0 + winner(p_chosen(o))) / 2.0


def consistent(o: Orders) -> bool | None:
    """Both orders name the same winner (None: neither names one)."""
    a, b = winner(o[0]), -winner(o[1])  # both +1: x wins in both orders
    if a == 0 and b == 0:
        return None
    return a == b


def principle_audit(pid: str, text: str, orders: Sequence[Orders], seed: int, samples: int) -> PrincipleAudit:
    """One principle over the pairs it judged."""
    n = len(orders)
    if n == 0:
        return {"id": pid, "text": text, "n": 0, "agreement": None, "low": None, "high": None, "mean_p_chosen": None,
                "consistency": None, "accuracy": None, "relevance": None, "performance": None,
                "verdict": "n/a: no pairs"}
    ci = bootstrap_mean([agrees(o) for o in orders], samples, seed)
    flags = [consistent(o) for o in orders]
    held = [o for o, f in zip(orders, flags) if f]
    decided = sum(f is not None for f in flags)
    consistency = len(held) / decided if decided else None
    accuracy = sum(winner(p_chosen(o)) > 0 for o in held) / len(held) if held else None
    relevance = len(held) / n
    out: PrincipleAudit = {
        "id": pid, "text": text, "n": n, "agreement": ci["mean"], "low": ci["low"], "high": ci["high"],
        "mean_p_chosen": sum(p_chosen(o) for o in orders) / n, "consistency": consistency, "accuracy": accuracy,
        "relevance": relevance, "performance": None if accuracy is None else (accuracy - 0.5) * relevance * 2,
        "verdict": ""}
    out["verdict"] = verdict(out)
    return out


def verdict(p: PrincipleAudit) -> str:
    if p["n"] < MIN_N:
        return f"n = {p['n']}: too few to read"
    if p["consistency"] is None:
        return "no signal (every answer a tie)"
    if p["consistency"] < 0.5:
        return "flips with order"
    if p["low"] is not None and p["low"] > 0.5:
        return "explains the labels"
    if p["high"] is not None and p["high"] < 0.5:
        return "goes against the labels"
    return "no signal (about 50%)"


def disagreements(by_principle: Mapping[str, Sequence[Orders]]) -> list[Disagreement]:
    """Every pair of principles: the share of preference pairs where they pick different winners,
    most disagreeing first. The orders of each principle are over the same pairs, in one order."""
    winners = {pid: [winner(p_chosen(o)) for o in orders] for pid, orders in by_principle.items()}
    out: list[Disagreement] = []
    for a, b in itertools.combinations(winners, 2):
        both = [(x, y) for x, y in zip(winners[a], winners[b]) if x and y]
        out.append({"a": a, "b": b, "n": len(both),
                    "share": sum(x != y for x, y in both) / len(both) if both else None})
    return sorted(out, key=lambda d: (-(d["share"] or 0.0), d["a"], d["b"]))


def ensemble(by_principle: Mapping[str, Sequence[Orders]]) -> list[Orders]:
    """Each pair's orders averaged over the principles (label's --ensemble over all of them)."""
    columns = list(zip(*by_principle.values()))
    return [(sum(o[0] for o in c) / len(c), sum(o[1] for o in c) / len(c)) for c in columns]


# ---- the terminal's table ------------------------------------------------------------------------


def _num(v: float | None, spec: str = ".0%") -> str:
    return "–" if v is None else format(v, spec)


def principle_row(p: PrincipleAudit) -> list[str]:
    ci = "" if p["low"] is None or p["n"] < MIN_N else f" [{_num(p['low'])}, {_num(p['high'])}]"
    return [p["id"], str(p["n"]), _num(p["agreement"]) + ci, _num(p["consistency"]), _num(p["accuracy"]),
            _num(p["performance"], "+.2f"), p["verdict"]]


HEAD = ["principle", "pairs", "agrees with labels [95% CI]", "same in both orders", "accuracy", "ICAI perf.",
        "verdict"]


def aligned(rows: Sequence[Sequence[str]]) -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]


def text_table(d: dict, shown: int = 5) -> list[str]:
    """An audit result (AuditResult.to_dict()) as the lines the CLI prints."""
    from charter.rlcai.bias import text_lines

    rows = [HEAD] + [principle_row(p) for p in d["principles"]]
    if d.get("all_principles"):
        rows.append(principle_row(d["all_principles"]))
    out = [f"audit of {d['constitution']} on {d['data']}: {d['pairs']} pairs judged by {d['model']} "
           f"({d['ties']} ties left out, {d['failed']} failed)", *aligned(rows)]
    split = [x for x in d["disagreements"] if x["share"]][:shown]
    if split:
        out.append("principles that pick different winners most often:")
        out += [f"  {x['a']} vs {x['b']}: {x['share']:.0%} of {x['n']} pairs" for x in split]
    elif len(d["principles"]) > 1:
        out.append("no two principles pick different winners on a pair both decide")
    longer = d.get("longer_chosen")
    if longer and longer["rate"] is not None:
        out.append(f"the labels chose the longer answer in {longer['rate']:.0%} of {longer['n']} pairs "
                   "(a principle that agrees about this often may be reading length)")
    if d.get("bias"):
        out += text_lines(d["bias"], "the judge's own bias over these questions")
    return out


__all__ = ["PrincipleAudit", "Disagreement", "principle_audit", "disagreements", "ensemble", "p_chosen", "verdict",
           "text_table"]
