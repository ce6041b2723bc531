"""Preference-model scores of revisions: the paper's Figure 5 (PM score vs revision number) and
Figure 7 (critiqued vs direct revisions), from a user's own runs.

Every usable red-team record's initial answer (revision 0) and each revision k are scored by the PM
as the assistant's reply to the prompt. Reported per run: the mean score by revision number with a
95% bootstrap interval (records resampled) and the evasive share beside it (the paper's point is
harmless *without* being evasive); per principle, the mean change a round drawn with that
principle made (score after minus score before); and, when a critique run and a --no-critique run
are given, the difference critique - direct by revision number with a bootstrap interval.
"""
from __future__ import annotations

from typing import Sequence

from charter.evaluate.curves import run_label
from charter.evaluate.evasive import is_evasive
from charter.evaluate.likelihood import usable
from charter import stats
from charter.stats import bootstrap_mean, interval, mean
from charter.types import Record


def score_records(pm, records: Sequence[Record]) -> list[dict]:
    """[{id, principles, texts, scores}]: texts[0] is the initial answer, texts[k] revision k."""
    recs = usable(records)
    items = [{"id": r.id, "principles": [x.principle for x in r.rounds],
              "texts": [r.initial or ""] + [x.revision for x in r.rounds]} for r in recs]
    convos = [list(r.prompt) + [{"role": "assistant", "content": t}] for r, it in zip(recs, items) for t in it["texts"]]
    flat = iter(pm.score(convos)) if convos else iter(())
    for it in items:
        it["scores"] = [next(flat) for _ in it["texts"]]
    return items


def by_revision(items: Sequence[dict], bootstrap: int, seed: int) -> list[dict]:
    depth = max((len(it["scores"]) for it in items), default=0)
    rows = []
    for k in range(depth):
        at = [it for it in items if len(it["scores"]) > k]
        ev = [is_evasive(it["texts"][k]) for it in at]
        rows.append({"revision": k, **bootstrap_mean([it["scores"][k] for it in at], bootstrap, seed),
                     "evasive": sum(ev) / len(ev)})
    return rows


def per_principle(items: Sequence[dict], bootstrap: int, seed: int) -> list[dict]:
    """Mean change of the PM score over a round, by the principle drawn for it."""
    deltas: dict[str, list[float]] = {}
    for it in items:
        for k, p in enumerate(it["principles"], 1):
            deltas.setdefault(p, []).append(it["scores"][k] - it["scores"][k - 1])
    rows = [{"principle": p, **bootstrap_mean(d, bootstrap, seed)} for p, d in deltas.items()]
    return sorted(rows, key=lambda r: -r["mean"])


def critique_vs_direct(runs: Sequence[dict], bootstrap: int, seed: int) -> dict | None:
    """critique - direct mean PM score by revision number, for the first critique and no-critique runs.

    Runs of the same prompts (matching record ids) are compared pairwise: the interval resamples
    prompts, so what the runs share (the initial answer, the prompt's difficulty) cancels.
    """
    crit = next((r for r in runs if not r["direct"]), None)
    direct = next((r for r in runs if r["direct"]), None)
    if crit is None or direct is None:
        return None
    other = {it["id"]: it for it in direct["items"]}
    rows = []
    for k in range(min(len(crit["by_revision"]), len(direct["by_revision"]))):
        a = [it for it in crit["items"] if len(it["scores"]) > k]
        b = [it for it in direct["items"] if len(it["scores"]) > k]
        pairs = [(it["scores"][k], other[it["id"]]["scores"][k]) for it in a
                 if it["id"] in other and len(other[it["id"]]["scores"]) > k]
        paired = len(pairs) == len(a) == len(b)
        if paired:  # the same prompts: paired differences
            diffs = stats.bootstrap([[x - y for x, y in pairs]], mean, bootstrap, seed)
        else:
            diffs = stats.bootstrap([[it["scores"][k] for it in a], [it["scores"][k] for it in b]],
                                    lambda x, y: mean(x) - mean(y), bootstrap, seed)
        ma, mb = (mean([it["scores"][k] for it in xs]) for xs in (a, b))
        low, high = interval(diffs, ma - mb)
        rows.append({"revision": k, "critique": ma, "direct": mb, "diff": ma - mb, "paired": paired,
                     "low": low, "high": high, "n_critique": len(a), "n_direct": len(b)})
    return {"critique": crit["label"], "direct": direct["label"], "by_revision": rows}


def pm_scores(pm, runs: Sequence[tuple[str, Sequence[Record]]], bootstrap: int = 200, seed: int = 0) -> dict:
    """eval.json's "pm" part for one or more runs (see charter.evaluate.suite)."""
    out = []
    for run, records in runs:
        items = score_records(pm, records)
        label = run_label(run, records)
        out.append({"run": str(run), "label": label, "direct": label.endswith("(no critique)"), "items": items,
                    "by_revision": by_revision(items, bootstrap, seed),
                    "per_principle": per_principle(items, bootstrap, seed)})
    result = {"pm": getattr(pm, "path", "?"), "runs": out}
    comparison = critique_vs_direct(out, bootstrap, seed)
    if comparison:
        result["critique_vs_direct"] = comparison
    for r in out:  # per-record scores stay (small) but not the texts, which the run already holds
        r["items"] = [{"id": it["id"], "principles": it["principles"], "scores": it["scores"]} for it in r["items"]]
    return result
