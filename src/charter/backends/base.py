"""The one narrow, batch-first protocol every engine implements.

Only backends apply chat templates. ``chat`` takes conversations (lists of messages) and applies
the model's template; ``complete`` takes raw text (the paper's transcript format) as is.

Two optional attributes tune the pipeline to an engine: ``concurrency`` (engines that batch
internally get that many conversations in flight, each advancing on its own) and
``share_prefix(prefix)`` (called once before the first step with the few-shot block, messages or
text, that every critique/revision request starts with; engines with per-slot KV load it once).
"""
from __future__ import annotations

import threading
from typing import Protocol, Sequence, runtime_checkable

from charter.errors import BackendError
from charter.types import Completion, Message, Sampling, Score


class EngineDead(BackendError):
    """The engine stopped for good: the records in flight fail with this message and the run
    stops (instead of failing every remaining record one by one)."""


@runtime_checkable
class Backend(Protocol):
    name: str  # registry name, e.g. "transformers"
    model_id: str  # what the user asked for, recorded in every record

    def chat(self, convos: Sequence[Sequence[Message]], sampling: Sampling) -> list[Completion]:
        """Generate one assistant turn for each conversation (template applied by the backend)."""
        ...

    def complete(self, prompts: Sequence[str], sampling: Sampling) -> list[Completion]:
        """Continue each raw text prompt (no template). Stop strings are cut from the output."""
        ...

    def score(
        self, contexts: Sequence[Sequence[Message] | str], continuations: Sequence[str]
    ) -> list[Score]:
        """Log-probability of each continuation given its context.

        A message-list context scores the continuation as the next assistant turn (template
        applied); a string context scores raw text appended to it.
        """
        ...

    def close(self) -> None:
        ...


def common_prefix_len(a: Sequence[int], b: Sequence[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


class HFTokenizerPrompts:
    """Prompt encoding shared by the backends that hold a Hugging Face tokenizer (transformers,
    vLLM): the chat template, special tokens added once, and the token ids `score` reads.
    Needs `self.tokenizer` and `self.model_id`; `self.pad_id`, if set, stands in for a missing BOS.

    One call at a time: the pipeline tokenizes from many threads, and vLLM's tokenizer deep-copies
    itself for every caller that finds its copies busy (measured: a tenth of the driver's CPU).
    The latest requests' ids are kept: the pipeline counts a step's tokens, then sends it."""

    _tokenizer_lock = threading.Lock()
    RECENT = 256  # requests whose ids are kept

    def _render(self, convo: Sequence[Message]) -> str:
        if not getattr(self.tokenizer, "chat_template", None):
            raise BackendError(f"model '{self.model_id}' has no chat template; use a chat model or --format text")
        return self.tokenizer.apply_chat_template(list(convo), add_generation_prompt=True, tokenize=False)

    def _encode(self, text: str, templated: bool) -> list[int]:
        # A rendered template already holds its special tokens: adding them again doubles BOS.
        return self.tokenizer(text, add_special_tokens=not templated)["input_ids"]

    def prompt_ids(self, request: Sequence[Message] | str) -> list[int]:
        """Token ids of a chat request (template applied) or a raw text request."""
        key = request if isinstance(request, str) else tuple(tuple(m.items()) for m in request)
        with self._tokenizer_lock:
            recent = self.__dict__.setdefault("_recent_ids", {})
            ids = recent.get(key)
            if ids is None:
                templated = not isinstance(request, str)
                ids = self._encode(self._render(request) if templated else request, templated)
                if len(recent) >= self.RECENT:
                    del recent[next(iter(recent))]  # the oldest
                recent[key] = ids
            return list(ids)

    def count_tokens(self, request: Sequence[Message] | str) -> int:
        """Prompt tokens of a request (the pipeline checks them against `max_context`)."""
        return len(self.prompt_ids(request))

    def _score_pair(self, context: Sequence[Message] | str, continuation: str) -> tuple[list[int], int]:
        """Token ids of context + continuation, and how many trailing ones are the continuation's.

        Tokens can merge across the boundary, so the continuation starts where the two encodings
        diverge; with nothing before it, BOS (or pad, or 0) conditions its first token."""
        templated = not isinstance(context, str)
        with self._tokenizer_lock:
            text = self._render(context) if templated else context
            ctx, full = self._encode(text, templated), self._encode(text + continuation, templated)
        keep = common_prefix_len(ctx, full)
        if keep == 0:
            bos = self.tokenizer.bos_token_id
            full, keep = [getattr(self, "pad_id", 0) if bos is None else bos] + full, 1
        return full, len(full) - keep
