"""Multiple-choice scoring from log-probabilities: the primitive behind AI feedback and judging.

The paper's feedback model reads "... Options: (A) ... (B) ... The answer is:" and the normalised
probabilities of the option tokens become a soft label. Scoring option strings by log-prob works
on any backend with `score`, never asks the model to write free text, and so cannot be refused.
"""
from __future__ import annotations

import math
from typing import Sequence

from charter.backends.base import Backend
from charter.types import Message

LETTERS = "ABCDEFGH"


def option_label(i: int) -> str:
    return f"({LETTERS[i]})"


def softmax(logps: Sequence[float]) -> list[float]:
    top = max(logps)
    exps = [math.exp(x - top) for x in logps]
    total = sum(exps)
    return [e / total for e in exps]


def option_probs(backend: Backend, contexts: Sequence[str | Sequence[Message]], n_options: int = 2,
                 prefix: str = " ") -> list[list[float]]:
    """For each context, P(option i) normalised over the options' labels "(A)", "(B)", ...

    String contexts are continued with `prefix + "(A)"` (raw text); message-list contexts are
    scored with "(A)" as the next assistant turn (the backend applies the chat template).
    """
    logps = backend.choose(list(contexts), [option_texts(ctx, n_options, prefix) for ctx in contexts])
    return [softmax(lp) for lp in logps]


def option_texts(context: str | Sequence[Message], n_options: int = 2, prefix: str = " ") -> tuple[str, ...]:
    """The continuations that stand for the options of `context`: "(A)", "(B)", ... as the next
    assistant turn of a message list; `prefix + "(A)"` after raw text (a Choice step's options)."""
    lead = prefix if isinstance(context, str) else ""
    return tuple(lead + option_label(i) for i in range(n_options))


def clamp(p: float, low: float = 0.4, high: float = 0.6) -> float:
    """Chain-of-thought probabilities are near 0/1 and overconfident; the paper clamps to 40-60%."""
    return min(max(p, low), high)
