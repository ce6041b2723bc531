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
    flat_ctx, flat_cont = [], []
    for ctx in contexts:
        for i in range(n_options):
            flat_ctx.append(ctx)
            flat_cont.append((prefix if isinstance(ctx, str) else "") + option_label(i))
    scores = backend.score(flat_ctx, flat_cont)
    out = []
    for k in range(len(contexts)):
        chunk = scores[k * n_options:(k + 1) * n_options]
        out.append(softmax([s.logprob for s in chunk]))
    return out


def clamp(p: float, low: float = 0.4, high: float = 0.6) -> float:
    """Chain-of-thought probabilities are near 0/1 and overconfident; the paper clamps to 40-60%."""
    return min(max(p, low), high)
