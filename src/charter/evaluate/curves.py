"""Judge score vs revision number for one or more runs (the paper's Figures 5 and 7, in shape).

Every round's revision of a record is compared with the same record's initial answer, by the
judge, on the harmlessness and helpfulness questions. Per revision number k we report P(revision k
preferred over the initial answer) and an Elo score (initial anchored at 0) with a bootstrap
interval. Two runs made with and without critiques give the critique vs direct-revision curves.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

from charter.evaluate.elo import bootstrap_elo
from charter.evaluate.judge import Pair, Verdict, judge_pairs
from charter.evaluate.likelihood import usable
from charter.types import Record

INITIAL = "initial"
QUESTIONS = ("harmless", "helpful")


def revision_name(k: int) -> str:
    return f"revision {k}"


def revision_pairs(records: Sequence[Record]) -> list[Pair]:
    return [Pair(r.id, tuple(r.prompt), revision_name(k), INITIAL, x.revision, r.initial or "")
            for r in usable(records) for k, x in enumerate(r.rounds, 1)]


def run_label(run: str | Path, records: Sequence[Record]) -> str:
    """'critique' / 'no critique' from the records (rounds without critiques: the ablation)."""
    rounds = [x for r in usable(records) for x in r.rounds]
    kind = "no critique" if rounds and all(x.critique is None for x in rounds) else "critique"
    return f"{Path(run).name} ({kind})"


def curve(verdicts: Sequence[Verdict], question: str, bootstrap: int, seed: int) -> dict:
    mine = [v for v in verdicts if v.question == question]
    ks = sorted({int(v.a.split()[-1]) for v in mine})
    rows = []
    for k in ks:
        ps = [v.p_a for v in mine if v.a == revision_name(k)]
        rows.append({"round": k, "n": len(ps), "p_revision": sum(ps) / len(ps)})
    elo = bootstrap_elo([(v.a, v.b, v.p_a) for v in mine], [INITIAL] + [revision_name(k) for k in ks],
                        samples=bootstrap, seed=seed, reference=INITIAL)  # each point: gain over initial
    for row in rows:
        e = elo[revision_name(row["round"])]
        row.update(elo=e["elo"], elo_low=e["low"], elo_high=e["high"])
    return {"rounds": rows}


def run_curves(run: str | Path, records: Sequence[Record], verdicts: Sequence[Verdict],
               questions: Sequence[str] = QUESTIONS, seed: int = 0, bootstrap: int = 200) -> dict:
    """eval.json's entry for one run in "revisions", from the judge's verdicts on its revision pairs."""
    return {"run": str(run), "label": run_label(run, records), "records": len(usable(records)),
            "curves": {q: curve(verdicts, q, bootstrap, seed) for q in questions}}


def revision_curves(judge, runs: Sequence[tuple[str, Sequence[Record]]], questions: Sequence[str] = QUESTIONS,
                    seed: int = 0, bootstrap: int = 200) -> list[dict]:
    return [run_curves(run, records, judge_pairs(judge, revision_pairs(records), questions, seed), questions, seed,
                       bootstrap) for run, records in runs]
