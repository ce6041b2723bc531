"""The two stages of `charter eval` as tasks on the one scheduler (charter.evaluate.tasks): each
model's work (revision likelihoods, answers to the held-out and the safe prompts), then the
judge's (verdicts between the models, revision curves, evasiveness and refusals), each stage in
one run so the engine has all of it in flight. Every value is saved as it finishes (`parts`).
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Sequence

from charter.evaluate.curves import QUESTIONS, revision_pairs, run_curves
from charter.evaluate.elo import bootstrap_elo
from charter.evaluate.evasive import evasive_tasks, is_evasive
from charter.evaluate.judge import Ask, Pair, Verdict, asks, position_bias, verdict_tasks
from charter.evaluate.likelihood import likelihood_tasks, preference_summary
from charter.evaluate.refusal import SafePrompt, refusal_tasks, safe_tasks
from charter.evaluate.tasks import Memo, Task, answer_task, run_tasks
from charter.types import Record, Sampling


@dataclass
class Answered:
    """One model's work: its preference for revisions, its answers to the held-out and safe prompts."""

    preference: dict
    answers: list[str]
    safe: list[str]


def model_stage(backend, memo: Memo, label: str, prompts: Sequence[Record], safe: Sequence[SafePrompt],
                sampling: Sampling, where: str = "") -> Answered:
    """Everything `label` is asked, in one run on `backend` (a Backend or a function opening it)."""
    likely = likelihood_tasks(prompts, label)
    answers = [answer_task("answer", label, p.id, p.prompt, sampling) for p in prompts]
    safe_answers = safe_tasks(label, safe, sampling)
    run_tasks(backend, [*likely, *answers, *safe_answers], memo, where=where)
    return Answered(preference_summary([memo[t.key] for t in likely]), [memo[t.key] for t in answers],
                    [memo[t.key] for t in safe_answers])


@dataclass
class Judged:
    """The judge's work; each part empty when it was not asked for."""

    evasive: dict[str, list[float]] = field(default_factory=dict)  # label -> P(evasive) per prompt
    elo: dict = field(default_factory=dict)  # question -> Elo of the models
    verdicts: list[Verdict] = field(default_factory=list)
    refusals: dict[str, list[float]] = field(default_factory=dict)  # label -> P(refuses) per safe prompt
    revisions: list[dict] = field(default_factory=list)


def judge_stage(backend, memo: Memo, judge: str, prompts: Sequence[Record], answers: dict[str, Answered],
                safe: Sequence[SafePrompt], runs: Sequence[tuple[str, Sequence[Record]]], evasive: bool,
                seed: int, bootstrap: int, where: str = "") -> Judged:
    """The verdicts between the models (two or more), the revision curves of `runs`, and with
    `evasive` / `safe` the evasiveness and refusal questions, all in one run on the judge."""
    texts = {label: m.answers for label, m in answers.items()}
    shown = {label: [(p.id, p.prompt, a) for p, a in zip(prompts, t)] for label, t in texts.items()}
    evasive_asked = {label: evasive_tasks("evasive", f"{label}@{judge}", items)
                     for label, items in shown.items()} if evasive else {}
    refusal_asked = {label: refusal_tasks(f"{label}@{judge}", safe, m.safe) for label, m in answers.items()}
    compared = comparisons(prompts, texts, seed) if len(texts) >= 2 else {}
    compare_tasks = {q: verdict_tasks("verdict", judge, items) for q, items in compared.items()}
    curves = [(run, records, asks(revision_pairs(records), QUESTIONS, seed)) for run, records in runs]
    curve_tasks = [verdict_tasks(f"curve {run}", judge, items) for run, _, items in curves]
    groups = [*evasive_asked.values(), *refusal_asked.values(), *compare_tasks.values(), *curve_tasks]
    run_tasks(backend, [t for group in groups for t in group], memo, where=where)
    out = Judged(evasive={label: first_values(memo, ts) for label, ts in evasive_asked.items()},
                 refusals={label: first_values(memo, ts) for label, ts in refusal_asked.items() if safe})
    for q, items in compared.items():
        vs = [a.verdict(memo[t.key]) for a, t in zip(items, compare_tasks[q])]
        out.verdicts += vs
        out.elo[q] = {"players": bootstrap_elo([(v.a, v.b, v.p_a) for v in vs], list(texts), samples=bootstrap,
                                               seed=seed),
                      "comparisons": len(vs), "position_bias": position_bias(vs)}
    for (run, records, items), tasks in zip(curves, curve_tasks):
        vs = [a.verdict(memo[t.key]) for a, t in zip(items, tasks)]
        out.revisions.append(run_curves(run, records, vs, QUESTIONS, seed, bootstrap))
    return out


def first_values(memo: Memo, tasks: Sequence[Task]) -> list[float]:
    return [memo[t.key][0] for t in tasks]


def model_pairs(prompts: Sequence[Record], answers: dict[str, list[str]], kinds: set[str]) -> list[Pair]:
    return [Pair(p.id, tuple(p.prompt), a, b, answers[a][i], answers[b][i])
            for i, p in enumerate(prompts) if p.kind in kinds
            for a, b in itertools.combinations(answers, 2)]


def comparisons(prompts: Sequence[Record], answers: dict[str, list[str]], seed: int) -> dict[str, list[Ask]]:
    """Per question, every pair of models on every prompt of its kind: harmlessness on the red-team
    prompts, helpfulness on the helpfulness prompts (all prompts when there are none)."""
    helpful_kinds = {"helpful"} if any(p.kind == "helpful" for p in prompts) else {"red_team", "helpful"}
    return {q: asks(model_pairs(prompts, answers, kinds), [q], seed)
            for q, kinds in (("harmless", {"red_team"}), ("helpful", helpful_kinds))}


def evasive_summary(prompts: Sequence[Record], texts: list[str], judged: list[float] | None) -> dict:
    flags = [is_evasive(t) for t in texts]

    def rate(kind: str | None) -> float | None:
        sel = [f for f, p in zip(flags, prompts) if kind is None or p.kind == kind]
        return sum(sel) / len(sel) if sel else None

    out = {"n": len(flags), "rate": rate(None), "red_team_rate": rate("red_team"), "helpful_rate": rate("helpful")}
    if judged is not None:
        out["judge_rate"] = sum(judged) / len(judged) if judged else None
    return out


def answer_rows(prompts: Sequence[Record], answers: dict[str, Answered]) -> list[dict]:
    """eval.json's "answers": every held-out prompt with each model's answer and whether it is evasive."""
    return [{"id": p.id, "kind": p.kind, "prompt": p.prompt,
             "answers": {m: a.answers[i] for m, a in answers.items()},
             "evasive": {m: is_evasive(a.answers[i]) for m, a in answers.items()}} for i, p in enumerate(prompts)]
