"""Stop when clean: after each critique, ask the model whether it found a real problem; when it
did not, the chain ends with the answer as it is (no revision of a fine answer, no copy of it).

The question is scored, never sampled (option log-probs through `Backend.choose`, as the feedback
labels are). It is short, in the feedback question's shape, and shows the answer the critique is
about (the latest revision), the critique request and the critique:

    Consider the following conversation between a human and an assistant:

    Human: [prompt]

    Assistant: [answer]

    Asked "[critique request]", a reviewer wrote this critique of the assistant's last reply:
    [critique]

    Did the critique identify a real problem with the reply?
    Options:
    (A) Yes
    (B) No
    The answer is:

In chat format it is one user message and "(A)" is scored as the assistant's reply; in text
format " (A)" continues the raw text. It is asked in both option orders and P(problem) is the
mean of P(Yes) over the two, which cancels the preference many models have for the first letter.
"""
from __future__ import annotations

from typing import Sequence

from charter.backends.base import Backend, Request
from charter.choice import option_label, option_texts, softmax
from charter.errors import BackendError, ConfigError
from charter.inputs.transcripts import render as transcript
from charter.types import Message, Principle

HEADER = "Consider the following conversation between a human and an assistant:"
QUESTION = "Did the critique identify a real problem with the reply?"
ORDERS = (("Yes", "No"), ("No", "Yes"))  # P(problem) = mean of P(Yes) over both
CUE = "The answer is:"
ROOM = 8  # tokens the scored options take after the question (for the context check)


def question(options: Sequence[str]) -> str:
    return f"{QUESTION}\nOptions:" + "".join(f"\n{option_label(i)} {o}" for i, o in enumerate(options)) + f"\n{CUE}"


def contexts(prompt: Sequence[Message], answer: str, principle: Principle, critique: str, fmt: str) -> list[Request]:
    """The question in each option order of ORDERS: raw text ("text") or one user message ("chat")."""
    conversation = transcript(list(prompt) + [{"role": "assistant", "content": answer}])
    head = (f"{HEADER}{conversation}\n\nAsked \"{principle.critique.strip()}\", a reviewer wrote this critique of "
            f"the assistant's last reply:\n{critique.strip()}\n\n")
    if fmt == "text":
        return [head + question(order) for order in ORDERS]
    return [[{"role": "user", "content": head + question(order)}] for order in ORDERS]


def p_problem(logps: Sequence[Sequence[float]]) -> float:
    """P(problem) from the options' log-probs in each order of ORDERS."""
    yes = [softmax(lp)[order.index("Yes")] for lp, order in zip(logps, ORDERS)]
    return sum(yes) / len(yes)


def ask(backend: Backend, questions: Sequence[Sequence[Request]]) -> list[float]:
    """P(problem) for each critique's questions (`contexts`), in one `choose` call."""
    flat = [c for qs in questions for c in qs]
    logps = backend.choose(flat, [option_texts(c) for c in flat])
    if not isinstance(logps, list) or len(logps) != len(flat) or not all(len(lp) == 2 for lp in logps):
        got = f"{len(logps)} results" if isinstance(logps, list) else type(logps).__name__
        raise BackendError(f"the {backend.name or 'backend'} backend's choose() returned {got} for "
                           f"{len(flat)} questions of two options each; the backend has a bug")
    n = len(ORDERS)
    return [p_problem(logps[i:i + n]) for i in range(0, len(flat), n)]


def check_settings(stop_when_clean: bool, critique: bool) -> None:
    """The rule across settings: the question is about a critique, so there must be one."""
    if stop_when_clean and not critique:
        raise ConfigError("stop_when_clean asks whether each critique found a problem, and with critique off "
                          "(--no-critique, direct revision) there is none: drop --stop-when-clean or --no-critique")
