"""Typed records that flow through the pipeline.

Messages stay plain ``{"role": ..., "content": ...}`` dicts: that is the shape chat templates,
TRL and ``datasets`` already use, so nothing has to be converted at the edges.
"""
from __future__ import annotations

import math
import numbers
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Literal

from charter.errors import BackendError, ConfigError

Message = dict[str, str]
Kind = Literal["red_team", "helpful"]


@dataclass(frozen=True)
class Sampling:
    """Explicit sampling parameters; engines never fill in a hidden max_tokens."""

    max_tokens: int = 256
    temperature: float = 1.0
    top_p: float = 1.0
    stop: tuple[str, ...] = ()
    seed: int | None = None
    logprobs: bool = False  # ask for the generated tokens' log-probs where the engine offers them

    def __post_init__(self) -> None:
        stop = self.stop
        if not isinstance(stop, (list, tuple)) or not all(isinstance(s, str) and s for s in stop):
            raise ConfigError(f"sampling stop must be a list of non-empty strings, got {stop!r}"
                              + (f"; for one stop string write stop=({stop!r},)" if isinstance(stop, str) else ""))
        object.__setattr__(self, "stop", tuple(stop))  # a list from YAML or JSON: hashable like the rest
        types = {"max_tokens": (_is_int(self.max_tokens), "an int"),
                 "temperature": (_is_number(self.temperature), "a number"),
                 "top_p": (_is_number(self.top_p), "a number"),
                 "seed": (self.seed is None or _is_int(self.seed), "an int or None"),
                 "logprobs": (isinstance(self.logprobs, bool), "true or false")}  # the ranges: config settings
        for name, (ok, want) in types.items():
            if not ok:
                raise ConfigError(f"sampling {name} must be {want}, got {getattr(self, name)!r}")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["stop"] = list(self.stop)
        return d


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:  # numpy's numbers too (engines hand them over)
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


# More tokens than any request has: a count above it is junk from the engine or server.
MAX_TOKEN_COUNT = 10 ** 9


def token_count(value: Any, what: str) -> int:
    """A token count as an engine or server reported it, checked: a whole number in
    [0, MAX_TOKEN_COUNT] (a float like 12.0 is taken), else a BackendError for that request."""
    if _is_number(value) and math.isfinite(value) and value == int(value) and 0 <= value <= MAX_TOKEN_COUNT:
        return int(value)
    raise BackendError(f"the engine or server reported {what} = {value!r}, not a token count; the request failed "
                       "(check the server: it answers with something other than an OpenAI-style completion)")


def _check_logprob(value: Any) -> None:
    if value is not None and not (_is_number(value) and not math.isnan(value) and value != math.inf):
        raise BackendError(f"the engine or server reported a log-probability of {value!r}; the request failed")


@dataclass(frozen=True)
class Completion:
    """One generated answer. Every backend builds its results as these, so what an engine or a
    server returns is checked here once: text a string, counts whole and sane, log-probs numbers."""

    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str = "stop"  # "stop" | "length"
    logprob: float | None = None  # sum over generated tokens, when requested and offered

    def __post_init__(self) -> None:
        if not isinstance(self.text, str):
            raise BackendError(f"the engine or server returned {type(self.text).__name__} "
                               f"{str(self.text)[:80]!r} as the text of a completion; the request failed")
        object.__setattr__(self, "prompt_tokens", token_count(self.prompt_tokens, "prompt_tokens"))
        object.__setattr__(self, "completion_tokens", token_count(self.completion_tokens, "completion_tokens"))
        if not isinstance(self.finish_reason, str):
            raise BackendError(f"the engine or server gave finish reason {self.finish_reason!r}; the request failed")
        _check_logprob(self.logprob)


@dataclass(frozen=True)
class Score:
    """Log-likelihood of a continuation given a context (sum over its tokens)."""

    logprob: float
    n_tokens: int

    def __post_init__(self) -> None:
        _check_logprob(self.logprob if self.logprob is not None else "none")
        object.__setattr__(self, "n_tokens", token_count(self.n_tokens, "the scored tokens"))

    @property
    def mean(self) -> float:
        return self.logprob / max(self.n_tokens, 1)


@dataclass(frozen=True)
class Principle:
    id: str
    critique: str  # the critique request
    revision: str  # the revision request
    priority: int | None = None  # a prioritised constitution's rank for it: 1 is the highest
    level: str | None = None  # the name of that rank ("safety"), where the constitution names its levels
    group: str | None = None  # what `--principle-group` selects by

    def __repr__(self) -> str:
        """As before priorities existed, plus the fields that are set: generate fingerprints and the
        dataset card digests this text, so a constitution without them keeps its digest."""
        extra = "".join(f", {k}={getattr(self, k)!r}" for k in ("priority", "level", "group") if getattr(self, k) is not None)
        return f"Principle(id={self.id!r}, critique={self.critique!r}, revision={self.revision!r}{extra})"


@dataclass(frozen=True)
class FewShotRound:
    critique_request: str
    critique: str
    revision_request: str
    revision: str


@dataclass(frozen=True)
class FewShot:
    """One demonstration: a conversation ending in the assistant's answer, then its rounds."""

    conversation: tuple[Message, ...]
    rounds: tuple[FewShotRound, ...]


@dataclass(frozen=True)
class Constitution:
    name: str
    principles: tuple[Principle, ...]
    few_shots: tuple[FewShot, ...] = ()
    source: str = ""
    priority_template: str | None = None  # how `--name-priority` words a request (None: the default)

    def principle(self, pid: str) -> Principle:
        for p in self.principles:
            if p.id == pid:
                return p
        raise KeyError(pid)


@dataclass(frozen=True)
class PromptItem:
    """One prompt to run: a conversation ending with a user turn."""

    id: str
    kind: Kind
    messages: tuple[Message, ...]
    sample: int = 0
    source: str = ""


@dataclass
class Round:
    principle: str
    critique: str | None
    revision: str
    relevance: dict[str, Any] | None = None  # how the principle was chosen by relevance: method, k, scores (else absent)


OPTIONAL = ("p_problem", "stopped", "guard")  # Record fields written only when set


@dataclass
class Record:
    id: str
    kind: Kind
    prompt: list[Message]
    initial: str | None = None
    rounds: list[Round] = field(default_factory=list)
    final: str | None = None
    sample: int = 0
    source: str = ""
    model: str = ""
    backend: str = ""
    format: str = "chat"
    sampling: dict[str, Any] = field(default_factory=dict)
    tokens: dict[str, int] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    error: str | None = None
    # Stop when clean (absent otherwise): P(problem) of each critique checked, and, for a chain
    # that ended early, {"round", "p_problem", "principle", "critique"} of the check that ended it.
    p_problem: list[float] | None = None
    stopped: dict[str, Any] | None = None
    # Guard classifiers (generate --guard; absent otherwise): what blocked the record, input or output stage
    guard: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for key in OPTIONAL:  # left out unset: a run without the option writes what it always wrote
            if d[key] is None:
                del d[key]
        d["error"] = d.pop("error")  # last: the run store reads a line's status off its end
        for r in d["rounds"]:  # likewise a round drawn at random
            if r.get("relevance") is None:
                r.pop("relevance", None)
        return d

    @classmethod
    def from_dict(cls, d: Any) -> "Record":
        """A record from its JSON object; ValueError says what is wrong (readers add file:line)."""
        check_record_dict(d)
        known = {f.name for f in fields(cls)}
        d = {k: v for k, v in d.items() if k in known}  # newer versions may add fields
        try:
            d["rounds"] = [Round(**r) for r in d.get("rounds") or []]
        except TypeError as exc:
            raise ValueError("each round needs exactly 'principle', 'critique' and 'revision' "
                             "(and may have 'relevance')") from exc
        return cls(**d)


def check_record_dict(d: Any) -> None:
    if not isinstance(d, dict):
        raise ValueError(f"expected a JSON object, got {type(d).__name__}")
    missing = [k for k in ("id", "kind", "prompt") if k not in d]
    if missing:
        raise ValueError(f"missing {', '.join(repr(k) for k in missing)}")
    if not isinstance(d["id"], str) or d["kind"] not in ("red_team", "helpful"):
        raise ValueError("'id' must be text and 'kind' red_team or helpful")
    prompt, rounds = d["prompt"], d.get("rounds") or []
    if not isinstance(prompt, list) or not all(isinstance(m, dict) and isinstance(m.get("content"), str) for m in prompt):
        raise ValueError("'prompt' must be a list of {role, content} messages")
    if not isinstance(rounds, list) or not all(isinstance(r, dict) for r in rounds):
        raise ValueError("'rounds' must be a list of objects")
