"""Guard classifiers around a generation run (`generate --guard DIR`, `critique_revise(guard=...)`).

The input classifier screens each prompt before anything is generated for it: a blocked prompt
becomes a record with no answers and `guard = {"stage": "input", "score", "threshold"}`.
The output classifier streams over every sampled answer of a record (the initial answer, then
each revision, in order) and, at the first answer token where P(harmful) reaches its threshold,
marks the record `guard = {"stage": "output", "step", "token", "score", "threshold"}` (step 0 is
the initial answer, k the k-th revision; token indexes that answer's tokens). The answers are
kept in the record, for research; `charter export` drops guarded records unless `--guard keep`.

Scoring streams over a finished answer in one forward pass (charter.guard.model), which is
what a deployment streaming the answer would have seen token by token.
"""
from __future__ import annotations

import logging
import time
from itertools import islice
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from charter.guard.model import GuardClassifier, load_guards
from charter.errors import ConfigError
from charter.types import PromptItem, Record

log = logging.getLogger("charter.guard.screen")


class Guard:
    """The classifiers in DIR (input/, output/, or one classifier), loaded on first use: on a GPU
    an engine that claims a share of free memory (vLLM) starts first."""

    def __init__(self, path: str | Path | None = None, classifiers: dict[str, Any] | None = None,
                 batch_size: int = 16):
        if path is None and classifiers is None:
            raise ConfigError("a guard needs a classifier directory (--guard DIR)")
        self.path, self._classifiers, self.batch_size = path, classifiers, batch_size
        self.seconds = {"input": 0.0, "output": 0.0}  # time spent classifying, for the summary
        self.tokens = 0  # answer tokens the output classifier read

    @property
    def classifiers(self) -> dict[str, GuardClassifier]:
        if self._classifiers is None:
            self._classifiers = load_guards(self.path)
            log.info("guard: %s", "; ".join(f"{k} classifier {c.path} (threshold {c.threshold:.3f})"
                                            for k, c in self._classifiers.items()))
        return self._classifiers

    def screen(self, items: Iterable[PromptItem], blocked: Callable[[PromptItem, dict], None]) -> Iterator[PromptItem]:
        """The items the input classifier lets through (a batch at a time, as they are taken);
        `blocked(item, guard)` gets the others."""
        source = iter(items)
        while batch := list(islice(source, self.batch_size)):
            clf = self.classifiers.get("input")
            if clf is None:
                yield from batch
                yield from source
                return
            t0 = time.perf_counter()
            scores = clf.score_messages([list(it.messages) for it in batch])
            self.seconds["input"] += time.perf_counter() - t0
            for item, p in zip(batch, scores):
                if clf.blocks(p):
                    blocked(item, {"stage": "input", "score": round(p, 4), "threshold": round(clf.threshold, 4)})
                else:
                    yield item

    def check(self, rec: Record) -> Record:
        """Stream the output classifier over the record's answers; mark the first that it blocks."""
        clf = self.classifiers.get("output")
        if clf is None or rec.error is not None or rec.guard is not None:
            return rec
        t0 = time.perf_counter()
        for step, answer in enumerate([rec.initial, *(r.revision for r in rec.rounds)]):
            scores = clf.stream_scores(rec.prompt, answer or "")
            self.tokens += len(scores)
            hit = next(((i, p) for i, p in scores if clf.blocks(p)), None)
            if hit:
                rec.guard = {"stage": "output", "step": step, "token": hit[0], "score": round(hit[1], 4),
                             "threshold": round(clf.threshold, 4)}
                break
        self.seconds["output"] += time.perf_counter() - t0
        return rec

    def info(self) -> dict[str, Any]:
        """Provenance: each classifier's path, threshold and target FPR."""
        return {kind: clf.info() for kind, clf in self.classifiers.items()}

    def close(self) -> None:
        for clf in (self._classifiers or {}).values():
            clf.close()


def blocked_record(item: PromptItem, guard: dict, **fields: Any) -> Record:
    """The record of a prompt the input classifier blocked: no answers, not an error."""
    return Record(id=item.id, kind=item.kind, prompt=list(item.messages), sample=item.sample, source=item.source,
                  guard=guard, tokens={"prompt": 0, "completion": 0}, timings={"seconds": 0.0,
                                                                                "finished": round(time.time(), 3)},
                  **fields)

