"""Preference for revisions by likelihood: does a model find revisions likelier than initial answers?

For each red-team record, the model scores the initial answer and each round's revision as the
assistant's reply to the prompt (backend.score, mean log-prob per token). An SL-CAI model trained
on revisions should move toward them: mean(logp(revision) - logp(initial)) rises and the revision
is preferred on more records. Needs no judge and no free text, so it works on the tiny model.
"""
from __future__ import annotations

from typing import Sequence

from charter.evaluate.tasks import Task, run_tasks, task
from charter.pipeline.scheduler import Logprob
from charter.types import Record


def usable(records: Sequence[Record]) -> list[Record]:
    return [r for r in records if r.error is None and r.kind == "red_team" and r.initial and r.rounds]


def _summary(deltas: list[float]) -> dict:
    n = len(deltas)
    return {"n": n, "mean_delta": sum(deltas) / n if n else 0.0,
            "share_preferred": sum(d > 0 for d in deltas) / n if n else 0.0}


def texts(r: Record) -> list[str]:
    """The initial answer, then each round's revision."""
    return [r.initial or ""] + [x.revision for x in r.rounds]


def likelihood_tasks(records: Sequence[Record], model: str = "") -> list[Task]:
    """One task per usable record: the per-token log-prob of each of its texts as the reply."""
    return [task("likelihood", model, r.id, [Logprob(list(r.prompt), t) for t in texts(r)],
                 lambda got: [s.mean for s in got]) for r in usable(records)]


def revision_preference(backend, records: Sequence[Record]) -> dict:
    """Final revision vs initial, plus the same per revision number ("by_round"), on `backend`."""
    tasks = likelihood_tasks(records)
    memo = run_tasks(backend, tasks)
    return preference_summary([memo[t.key] for t in tasks])


def preference_summary(scored: Sequence[Sequence[float]]) -> dict:
    """eval.json's revision_preference from each record's scores (initial answer first)."""
    final, per_round = [], {}
    for scores in scored:
        final.append(scores[-1] - scores[0])
        for k in range(1, len(scores)):
            per_round.setdefault(k, []).append(scores[k] - scores[0])
    out = _summary(final)
    out["by_round"] = [{"round": k, **_summary(d)} for k, d in sorted(per_round.items())]
    out["logp_initial"] = _mean([s[0] for s in scored])
    out["logp_final"] = _mean([s[-1] for s in scored])
    return out


def _mean(xs: list[float]) -> float:
    return sum(xs) / len(xs) if xs else 0.0
