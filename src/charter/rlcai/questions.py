"""The paper's multiple-choice feedback question, asked of a backend and scored from option probabilities.

    Consider the following conversation between a human and an assistant:
    [conversation]
    [principle] Options:
     (A) [[[answer]]]
     (B) [[[answer]]]
    The answer is:

The normalised probabilities of "(A)" and "(B)" (charter.choice.option_probs) are the answer; in
chain-of-thought mode reasoning is sampled after "Let's think step-by-step:" first. Formats:
"text" scores raw transcript strings; "chat" sends the question as one user message and scores
"(A)" as the assistant's reply.

The judges (charter.evaluate) ask the same question in a compact layout, one user message:
"[principle]\nOptions:\n(A) [answer]\n(B) [answer]\nThe answer is:" (`question_message`).
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Generator, Sequence

from charter.choice import clamp, option_label, option_texts, softmax
from charter.config import FORMATS
from charter.errors import ConfigError
from charter.rlcai.data import AFTER_COT, ANSWER, ANSWER_CUE, COT, COT_STOPS, EXAMPLE_GAP, HEADER, FeedbackExample
from charter.inputs.transcripts import render as transcript
from charter.types import Message, Sampling

LAYOUTS = ("paper", "compact")


def render_options(options: Sequence[str], layout: str = "paper") -> str:
    """paper: '\\n (A) [[[x]]]' per option; compact: '\\nOptions:' then '\\n(A) x' per option."""
    if layout == "compact":
        return "\nOptions:" + "".join(f"\n{option_label(i)} {o}" for i, o in enumerate(options))
    return "".join(f"\n {option_label(i)} [[[{o.strip()}]]]" for i, o in enumerate(options))


def question(conversation: Sequence[Message], principle: str, options: Sequence[str], layout: str = "paper") -> str:
    """The multiple-choice question without its answer cue, in the paper's or the compact layout."""
    head = f"{HEADER}{transcript(conversation)}\n\n{principle}"
    if layout == "compact":
        return head + render_options(options, layout)
    return f"{head} Options:{render_options(options)}"


def question_message(conversation: Sequence[Message], principle: str, options: Sequence[str]) -> list[Message]:
    """The compact question as one user message, answer cue included: what the judges send."""
    return [{"role": "user", "content": f"{question(conversation, principle, options, 'compact')}\n{ANSWER_CUE}"}]


def few_shot_prefix(examples: Sequence[FeedbackExample], fmt: str, cot: bool) -> str | list[Message]:
    """Demonstrations in the chosen format; in CoT mode only examples with reasoning are used."""
    shots = [e for e in examples if e.reasoning] if cot else list(examples)
    if fmt == "chat":
        msgs: list[Message] = []
        for e in shots:
            q = question(e.conversation, e.principle, e.options())
            answer = f"({e.better_option})"
            if cot:
                msgs += [{"role": "user", "content": q + COT}, {"role": "assistant", "content": e.reasoning or ""},
                         {"role": "user", "content": AFTER_COT}, {"role": "assistant", "content": answer}]
            else:
                msgs += [{"role": "user", "content": q + ANSWER}, {"role": "assistant", "content": answer}]
        return msgs
    blocks = []
    for e in shots:
        q = question(e.conversation, e.principle, e.options())
        if cot:
            blocks.append(f"{q}{COT} {e.reasoning}\n\n{AFTER_COT} ({e.better_option})")
        else:
            blocks.append(f"{q}{ANSWER} ({e.better_option})")
    return "".join(b + EXAMPLE_GAP for b in blocks)


def _join(prefix: str, q: str) -> str:
    return prefix + (q.lstrip("\n") if prefix else q)


def direct_context(prefix: str | list[Message], q: str, fmt: str) -> str | list[Message]:
    if fmt == "chat":
        return list(prefix) + [{"role": "user", "content": (q + ANSWER).strip()}]
    return _join(prefix, q) + ANSWER  # type: ignore[arg-type]


def cot_prompt(prefix: str | list[Message], q: str, fmt: str) -> str | list[Message]:
    if fmt == "chat":
        return list(prefix) + [{"role": "user", "content": (q + COT).strip()}]
    return _join(prefix, q) + COT  # type: ignore[arg-type]


def cot_context(prefix: str | list[Message], q: str, reasoning: str, fmt: str) -> str | list[Message]:
    if fmt == "chat":
        return cot_prompt(prefix, q, fmt) + [  # type: ignore[operator]
            {"role": "assistant", "content": reasoning.strip()}, {"role": "user", "content": AFTER_COT}]
    return f"{cot_prompt(prefix, q, fmt)} {reasoning.strip()}\n\n{AFTER_COT}"


def sample(backend, prompts: Sequence, fmt: str, sampling: Sampling, stops: Sequence[str] = ()) -> list[str]:
    """Stripped completions: "chat" (the backend applies the template) or "text" (raw, with `stops`)."""
    if fmt == "chat":
        done = backend.chat(prompts, sampling)
    else:
        done = backend.complete(prompts, replace(sampling, stop=tuple(dict.fromkeys((*sampling.stop, *stops)))))
    return [c.text.strip() for c in done]


@dataclass
class Answered:
    """One question in one option order: the context scored, P(option i), and any reasoning."""

    context: Any
    probs: list[float]
    reasoning: str | None = None


def ask(backend, prefix: str | list[Message], questions: Sequence[tuple[str, int]], fmt: str,
        cot: Sampling | None = None) -> list[Answered]:
    """`asking` run at once on one backend (outside a job): each question's option probabilities."""
    from charter.pipeline.scheduler import drive

    return drive(backend, asking(prefix, questions, fmt, cot))


def asking(prefix: str | list[Message], questions: Sequence[tuple[str, int]], fmt: str,
           cot: Sampling | None = None) -> Generator[list, list, list[Answered]]:
    """`ask` as a scheduler program (charter.pipeline.scheduler.run_programs): with `cot`, the reasoning of
    every question as one list of Sample steps (each seeded by its question), then one Choice step
    per question; returns what `ask` returns."""
    from charter.pipeline.scheduler import Choice, Sample, seeded

    if fmt not in FORMATS:
        raise ConfigError(f"format must be one of {FORMATS}, not '{fmt}'")
    reasonings: list[str | None] = [None] * len(questions)
    if cot is not None:
        if fmt == "text":
            cot = replace(cot, stop=tuple(dict.fromkeys((*cot.stop, *COT_STOPS))))
        done = yield [Sample(cot_prompt(prefix, q, fmt), seeded(cot, q), text=fmt == "text") for q, _ in questions]
        reasonings = [c.text.strip() for c in done]
        contexts = [cot_context(prefix, q, r or "", fmt) for (q, _), r in zip(questions, reasonings)]
    else:
        contexts = [direct_context(prefix, q, fmt) for q, _ in questions]
    logps = yield [Choice(ctx, option_texts(ctx, n)) for ctx, (_, n) in zip(contexts, questions)]
    return [Answered(ctx, softmax(lp), r) for ctx, lp, r in zip(contexts, logps, reasonings)]


def pair_preference(first: list[float], second: list[float], band: tuple[float, float] | None = None) -> float:
    """P(x better than y) from order (x, y) [P(A)] and order (y, x) [P(B)], position-averaged.

    With `band` (chain of thought) each order's P(A) is clamped first; the band must be
    symmetric around 0.5 so that P(B) = 1 - P(A) stays inside it too.
    """
    pa1 = first[0] / (first[0] + first[1])
    pa2 = second[0] / (second[0] + second[1])
    if band is not None:
        pa1, pa2 = clamp(pa1, *band), clamp(pa2, *band)
    return (pa1 + (1.0 - pa2)) / 2.0
