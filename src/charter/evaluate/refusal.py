"""Over-refusal: does a model refuse safe prompts that only look unsafe?

The paper's aim is harmless *and* non-evasive, so harmlessness gained by refusing everything is a
failure too. `src/charter/data/over_refusal.jsonl` holds our own ~150 safe prompts that look
unsafe (in the spirit of XSTest, not taken from it), each with a `category`: homonyms ("kill a
process"), figurative language, safe targets (weeds, mould), fiction and games, history,
definitions, public figures, safety advice. A model answers them; an answer counts as a refusal
when the evasiveness detector (charter.evaluate.evasive.is_evasive) flags it, and, with a judge,
the judge's P(refuses) is reported beside it (REFUSAL_QUESTION: a refusal that explains itself
still refuses, which the detector misses). `harm_vs_refusal` pairs each model's refusal rate with
its judged harmlessness Elo on the red-team prompts: the trade-off the report plots.

eval.json "over_refusal": {n, categories: {category: n},
    models: {label: {n, refused, rate, judge_rate?, by_category: {category: {n, refused, rate, judge_rate?}}}},
    points: [{model, refusal_rate, judge_refusal_rate, harmless_elo, harmless_low, harmless_high, helpful_elo}],
    answers: [{id, category, prompt, answers: {label: text}, refused: {label: bool}, judge: {label: P(refuses)}?}]}
"""
from __future__ import annotations

from dataclasses import dataclass
from itertools import chain, zip_longest
from pathlib import Path
from typing import Sequence

from charter.evaluate.evasive import REFUSAL_OPTIONS, REFUSAL_QUESTION, evasive_tasks, is_evasive
from charter.evaluate.tasks import Task, answer_task, run_tasks
from charter.types import Message, Sampling

DATA = Path(__file__).resolve().parents[1] / "data" / "over_refusal.jsonl"


@dataclass(frozen=True)
class SafePrompt:
    id: str
    prompt: str
    category: str

    def messages(self) -> list[Message]:
        return [{"role": "user", "content": self.prompt}]


def load_over_refusal(limit: int | None = None, path: str | Path = DATA) -> list[SafePrompt]:
    """The shipped set (or `path`: rows {id?, prompt, category}); `limit` takes the categories in turn,
    so a small limit still covers every category."""
    from charter.errors import InputError
    from charter.jsonl import read_jsonl

    by_cat: dict[str, list[SafePrompt]] = {}
    for line, row in read_jsonl(path):
        if not isinstance(row, dict) or not isinstance(row.get("prompt"), str):
            raise InputError("each row needs a 'prompt' string and a 'category'", str(path), line)
        item = SafePrompt(str(row.get("id") or f"or-{line}"), row["prompt"], str(row.get("category") or "other"))
        by_cat.setdefault(item.category, []).append(item)
    mixed = [x for x in chain.from_iterable(zip_longest(*by_cat.values())) if x is not None]
    return mixed[:limit] if limit is not None else mixed


def safe_tasks(model: str, items: Sequence[SafePrompt], sampling: Sampling) -> list[Task]:
    """The model's answer to each safe prompt."""
    return [answer_task("safe", model, it.id, it.messages(), sampling) for it in items]


def refusal_tasks(model: str, items: Sequence[SafePrompt], answers: Sequence[str]) -> list[Task]:
    """The judge's P(the answer refuses) for each of the model's answers (the first value)."""
    return evasive_tasks("refusal", model, [(it.id, it.messages(), a) for it, a in zip(items, answers)],
                         REFUSAL_QUESTION, REFUSAL_OPTIONS)


def answer_safe(backend, items: Sequence[SafePrompt], sampling: Sampling) -> list[str]:
    tasks = safe_tasks("", items, sampling)
    memo = run_tasks(backend, tasks)
    return [memo[t.key] for t in tasks]


def _rate(xs: Sequence[float]) -> float | None:
    return sum(xs) / len(xs) if xs else None


def refusal_summary(items: Sequence[SafePrompt], answers: Sequence[str], judged: Sequence[float] | None = None) -> dict:
    """Refusal rate overall and per category (detector counts; the judge's mean P(refuses) beside)."""
    flags = [is_evasive(a) for a in answers]

    def part(sel: list[int]) -> dict:
        out = {"n": len(sel), "refused": sum(flags[i] for i in sel), "rate": _rate([flags[i] for i in sel])}
        if judged is not None:
            out["judge_rate"] = _rate([judged[i] for i in sel])
        return out

    cats = dict.fromkeys(it.category for it in items)
    return {**part(list(range(len(items)))),
            "by_category": {c: part([i for i, it in enumerate(items) if it.category == c]) for c in cats}}


def harm_vs_refusal(models: dict, elo: dict | None) -> list[dict]:
    """One point per model: refusal rate on safe prompts against judged harmlessness (and helpfulness) Elo."""
    def player(question: str, label: str) -> dict:
        return (((elo or {}).get(question) or {}).get("players") or {}).get(label) or {}

    return [{"model": label, "refusal_rate": m["rate"], "judge_refusal_rate": m.get("judge_rate"),
             "harmless_elo": player("harmless", label).get("elo"), "harmless_low": player("harmless", label).get("low"),
             "harmless_high": player("harmless", label).get("high"), "helpful_elo": player("helpful", label).get("elo")}
            for label, m in models.items()]


def over_refusal_result(items: Sequence[SafePrompt], answers: dict[str, list[str]],
                        judged: dict[str, list[float]] | None = None, elo: dict | None = None) -> dict:
    """eval.json's "over_refusal" from every model's answers to `items` and, with a judge, its
    P(refuses) of each (`judged`: label -> one per item)."""
    judged = judged or {}
    models = {label: refusal_summary(items, texts, judged.get(label)) for label, texts in answers.items()}
    rows = []
    for i, it in enumerate(items):
        row = {"id": it.id, "category": it.category, "prompt": it.prompt, "answers": {m: answers[m][i] for m in answers},
               "refused": {m: is_evasive(answers[m][i]) for m in answers}}
        if judged:
            row["judge"] = {m: judged[m][i] for m in judged}
        rows.append(row)
    categories = {c: sum(it.category == c for it in items) for c in dict.fromkeys(it.category for it in items)}
    return {"n": len(items), "categories": categories, "models": models, "points": harm_vs_refusal(models, elo),
            "answers": rows}
