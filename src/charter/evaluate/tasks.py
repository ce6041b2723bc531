"""Evaluation work as tasks on the one scheduler (charter.pipeline.scheduler): a model's answer, a record's
revision likelihoods, a judge's verdict. Each task is one step list and a function of its results;
its key names its stage, model and item plus a digest of exactly what it asks (prompt, sampling,
answers shown), so a saved value (charter.evaluate.parts) is reused only for the same question.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Sequence

from charter.backends.base import Backend
from charter.errors import RunError
from charter.pipeline.scheduler import Choice, Sample, Step, run_programs, seeded
from charter.types import Message, Sampling


@dataclass(frozen=True)
class Task:
    key: str  # stage|model|item|digest: the saved value's id
    steps: tuple[Step, ...]
    finish: Callable[[list], Any]  # the steps' results -> the value saved (JSON)


def task(stage: str, model: str, item: str, steps: Sequence[Step], finish: Callable[[list], Any]) -> Task:
    asked = json.dumps([dataclasses.asdict(s) for s in steps], sort_keys=True, ensure_ascii=False, default=str)
    digest = hashlib.sha256(asked.encode()).hexdigest()[:12]
    return Task(f"{stage}|{model}|{item}|{digest}", tuple(steps), finish)


def answer_task(stage: str, model: str, item: str, prompt: Sequence[Message], sampling: Sampling) -> Task:
    """The model's answer to `prompt` (stripped), sampled with a seed of the item's own."""
    return task(stage, model, item, [Sample(list(prompt), seeded(sampling, item))], lambda got: got[0].text.strip())


def choice_task(stage: str, model: str, item: str, context: str | Sequence[Message], n_options: int = 2) -> Task:
    """P(option i) of a multiple-choice question (charter.choice), normalised over its options."""
    from charter.choice import option_texts, softmax

    context = context if isinstance(context, str) else list(context)
    return task(stage, model, item, [Choice(context, option_texts(context, n_options))], lambda got: softmax(got[0]))


class Memo:
    """Task values in memory: what the direct functions (judge_pairs, revision_preference) use."""

    def __init__(self) -> None:
        self.values: dict[str, Any] = {}

    def __contains__(self, key: str) -> bool:
        return key in self.values

    def __getitem__(self, key: str) -> Any:
        return self.values[key]

    def save(self, key: str, value: Any, error: str | None) -> None:
        if error is None:
            self.values[key] = value


def run_tasks(backend: Backend | Callable[[], Backend], tasks: Iterable[Task], memo: Memo | None = None,
              batch_size: int = 16, where: str = "") -> Memo:
    """Every task whose value `memo` lacks, through run_programs; each value saved as it finishes.
    `backend` is a Backend or a function that opens one, called only when there is work. Failed
    tasks: a RunError once the others have finished (their values saved; `where` names them)."""
    memo = Memo() if memo is None else memo
    todo = list({t.key: t for t in tasks if t.key not in memo}.values())
    if not todo:
        return memo
    failed: list[tuple[str, str]] = []

    def program(t: Task):
        got = yield list(t.steps)
        return t.finish(got)

    def on_done(t: Task, value: Any, error: str | None) -> None:
        memo.save(t.key, value, error)
        if error is not None:
            failed.append((t.key, error))

    run_programs(backend if isinstance(backend, Backend) else backend(), todo, program, on_done, batch_size=batch_size)
    if failed:
        key, error = failed[0]
        saved = f"; the rest is saved in {where}: run the same command again to retry what failed" if where else ""
        raise RunError(f"{len(failed)} of {len(todo)} evaluation requests failed (the first, {key}: {error}){saved}")
    return memo

