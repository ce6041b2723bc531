"""The base class every engine subclasses: batch-first calls, and every capability the pipeline
uses declared here with a default, so the pipeline never probes a backend for what it has.

Only backends apply chat templates. ``chat`` takes conversations (lists of messages) and applies
the model's template; ``complete`` takes raw text (the paper's transcript format) as is. Both also
take what ``prepare`` returned for such requests: the pipeline encodes each step once, checks its
length against ``max_context``, and sends the same encoding.
"""
from __future__ import annotations

import abc
import threading
from dataclasses import dataclass
from typing import Any, Sequence, Union

from charter.errors import BackendError
from charter.types import Completion, Message, Sampling, Score

Request = Union[Sequence[Message], str]  # a conversation for chat, raw text for complete


class EngineDead(BackendError):
    """The engine stopped for good: the records in flight fail with this message and the run
    stops (instead of failing every remaining record one by one)."""


class Backend(abc.ABC):
    name: str = ""  # registry name, e.g. "transformers"
    model_id: str = ""  # what the user asked for, recorded in every record
    # Engines that batch internally get this many conversations in flight, each advancing on its
    # own (the pipeline's streaming scheduler); None: the pipeline sends batches of steps.
    concurrency: int | None = None
    max_context: int | None = None  # prompt + completion tokens the model takes; None: unchecked

    @abc.abstractmethod
    def chat(self, convos: Sequence[Request | Any], sampling: Sampling) -> list[Completion]:
        """Generate one assistant turn for each conversation (template applied by the backend)."""

    @abc.abstractmethod
    def complete(self, prompts: Sequence[Request | Any], sampling: Sampling) -> list[Completion]:
        """Continue each raw text prompt (no template). Stop strings are cut from the output."""

    @abc.abstractmethod
    def score(self, contexts: Sequence[Request], continuations: Sequence[str]) -> list[Score]:
        """Log-probability of each continuation given its context.

        A message-list context scores the continuation as the next assistant turn (template
        applied); a string context scores raw text appended to it.
        """

    def choose(self, contexts: Sequence[Request], options: Sequence[Sequence[str]]) -> list[list[float]]:
        """For each context, the log-probability of each of its options as the continuation (a
        multiple-choice question: feedback labels, judges). Engines with a cheaper way than scoring
        every option in full (a one-token step read off the options' first tokens) override it."""
        flat_ctx = [c for c, opts in zip(contexts, options) for _ in opts]
        flat_opt = [o for opts in options for o in opts]
        scores = iter(self.score(flat_ctx, flat_opt))
        return [[next(scores).logprob for _ in opts] for opts in options]

    def prepare(self, requests: Sequence[Request]) -> list[Any]:
        """Each request as this backend sends it (token ids, for backends that tokenize): an
        opaque value that `chat`/`complete`/`count_tokens` of this backend accept in its place.
        The default keeps the request as is."""
        return list(requests)

    def count_tokens(self, request: Request | Any) -> int | None:
        """Prompt tokens of a request or of a prepared one; None where the backend cannot tell."""
        return None

    def share_prefix(self, prefix: Request) -> None:
        """Called once before a run's first step with the few-shot block (messages or text) that
        every critique/revision request starts with; engines with per-slot KV load it once."""

    @classmethod
    def workload_options(cls, steps: int | None) -> dict[str, Any]:
        """Options for a run of `steps` requests (None: unknown); the user's own options win."""
        return {}

    def close(self) -> None:
        """Release the engine (its processes, threads, memory); calls after it fail."""

    def __enter__(self):
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def common_prefix_len(a: Sequence[int], b: Sequence[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


@dataclass(frozen=True)
class TokenIds:
    """A request encoded by HFTokenizerPrompts.prepare: the prompt's token ids, template applied."""

    ids: tuple[int, ...]

    def __len__(self) -> int:
        return len(self.ids)


class HFTokenizerPrompts(Backend):
    """Prompt encoding shared by the backends that hold a Hugging Face tokenizer (transformers,
    vLLM): the chat template, special tokens added once, and the token ids `score` reads.
    Needs `self.tokenizer` and `self.model_id`.

    One call at a time per tokenizer: the pipeline prepares steps from many threads, and vLLM's
    tokenizer deep-copies itself for every caller that finds its copies busy."""

    pad_id = 0  # what conditions a first token when the tokenizer has no BOS

    def __init__(self) -> None:
        self._tokenizer_lock = threading.Lock()

    def _render(self, convo: Sequence[Message]) -> str:
        if not getattr(self.tokenizer, "chat_template", None):
            raise BackendError(f"model '{self.model_id}' has no chat template; use a chat model or --format text")
        return self.tokenizer.apply_chat_template(list(convo), add_generation_prompt=True, tokenize=False)

    def _encode(self, text: str, templated: bool) -> list[int]:
        # A rendered template already holds its special tokens: adding them again doubles BOS.
        return self.tokenizer(text, add_special_tokens=not templated)["input_ids"]

    def _encode_request(self, request: Request) -> TokenIds:
        if isinstance(request, TokenIds):
            return request
        if isinstance(request, str):
            return TokenIds(tuple(self._encode(request, False)))
        return TokenIds(tuple(self._encode(self._render(request), True)))

    def prepare(self, requests: Sequence[Request]) -> list[TokenIds]:
        if all(isinstance(r, TokenIds) for r in requests):  # prepared already: no tokenizer call
            return list(requests)
        with self._tokenizer_lock:
            return [self._encode_request(r) for r in requests]

    def prompt_ids(self, request: Request | TokenIds) -> list[int]:
        """Token ids of a chat request (template applied), a raw text request, or a prepared one."""
        return list(self.prepare([request])[0].ids)

    def count_tokens(self, request: Request | TokenIds) -> int:
        return len(self.prepare([request])[0])

    def _score_pair(self, context: Request, continuation: str) -> tuple[list[int], int]:
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
            full, keep = [self.pad_id if bos is None else bos] + full, 1
        return full, len(full) - keep
