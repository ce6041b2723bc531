"""A scripted backend for tests of control flow: deterministic, instant, and it records calls."""
from __future__ import annotations

import dataclasses
import hashlib
from typing import Callable, Sequence

from charter.backends.base import Backend
from charter.types import Completion, Message, Sampling, Score

Responder = Callable[[str], str]


def _default_reply(prompt: str) -> str:
    digest = hashlib.sha1(prompt.encode()).hexdigest()[:8]
    last = prompt.rstrip().splitlines()[-1] if prompt.strip() else ""
    return f"reply-{digest} to: {last[-60:]}"


def _cut_at_stop(text: str, stops: Sequence[str]) -> str:
    hits = [i for i in (text.find(s) for s in stops if s) if i >= 0]
    return text[: min(hits)] if hits else text


class FakeBackend(Backend):
    name = "fake"

    def __init__(self, model: str = "fake", responder: Responder | None = None, fail_on: str | None = None,
                 record_calls: bool = True, vary: bool = False):
        self.model_id = model
        self.vary = vary  # answers end with their seed (the call's + the row's, as vLLM seeds rows): samples differ
        self.record_calls = record_calls  # off for long runs (bench/scale.py): the list grows per request
        self.responder = responder or _default_reply
        self.fail_on = fail_on  # raise when a prompt contains this text (tests failure rows)
        self.calls: list[str] = []  # every prompt this backend was asked to continue

    def _one(self, prompt: str, sampling: Sampling) -> Completion:
        if self.record_calls:
            self.calls.append(prompt)
        if self.fail_on and self.fail_on in prompt:
            raise RuntimeError(f"scripted failure on {self.fail_on!r}")
        text = _cut_at_stop(self.responder(prompt), sampling.stop)  # as engines do: the stop string is not returned
        words = text.split()
        finish = "stop"
        if len(words) > sampling.max_tokens:
            text, finish = " ".join(words[: sampling.max_tokens]), "length"
        return Completion(text, len(prompt.split()), len(text.split()), finish)

    @staticmethod
    def render(convo: Sequence[Message]) -> str:
        return "".join(f"<|{m['role']}|>{m['content']}\n" for m in convo) + "<|assistant|>"

    def chat(self, convos: Sequence[Sequence[Message]], sampling: Sampling) -> list[Completion]:
        return [self._varied(self._one(self.render(c), sampling), sampling, row) for row, c in enumerate(convos)]

    def complete(self, prompts: Sequence[str], sampling: Sampling) -> list[Completion]:
        return [self._varied(self._one(p, sampling), sampling, row) for row, p in enumerate(prompts)]

    def _varied(self, done: Completion, sampling: Sampling, row: int) -> Completion:
        if not self.vary or sampling.seed is None:
            return done
        return dataclasses.replace(done, text=f"{done.text} (seed {sampling.seed + row})")

    def score(self, contexts, continuations) -> list[Score]:
        return [Score(-float(len(c)), max(len(c.split()), 1)) for c in continuations]
