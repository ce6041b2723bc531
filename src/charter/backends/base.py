"""The one narrow, batch-first protocol every engine implements.

Only backends apply chat templates. ``chat`` takes conversations (lists of messages) and applies
the model's template; ``complete`` takes raw text (the paper's transcript format) as is.

Two optional attributes tune the pipeline to an engine: ``concurrency`` (engines that batch
internally get that many conversations in flight, each advancing on its own) and
``share_prefix(prefix)`` (called once before the first step with the few-shot block, messages or
text, that every critique/revision request starts with; engines with per-slot KV load it once).
"""
from __future__ import annotations

from typing import Callable, Protocol, Sequence, runtime_checkable

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


def continuation_ids(encode: Callable[[str], list[int]], context: str, continuation: str,
                     bos: int | None) -> tuple[list[int], int]:
    """Token ids of context + continuation, and how many trailing ones are the continuation's.

    Tokens can merge across the boundary, so the continuation starts where the two encodings
    diverge; with nothing before it, BOS conditions its first token."""
    ctx, full = encode(context), encode(context + continuation)
    keep = common_prefix_len(ctx, full)
    if keep == 0:
        full, keep = [0 if bos is None else bos] + full, 1
    return full, len(full) - keep
