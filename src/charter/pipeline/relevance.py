"""Principles chosen by relevance (`--principles relevant[:K]`), prioritised constitutions'
groups and named priorities: what a run draws its principles from, and how.

The paper draws each round's principle uniformly at random. Later work fits the principles to
the query (SPRI, arXiv 2502.03397; C3AI, arXiv 2502.15861); here the model itself ranks them:
for each principle one multiple-choice question, "Is the following principle relevant to this
conversation?", scored as P("Yes") over {"Yes", "No"} (`Backend.choose`: any backend that
scores, one request per principle, all of a round's principles in one call). A small model says
Yes to some principles whatever the conversation, so the score is calibrated against a neutral
exchange asked once per run (contextual calibration, Zhao et al. 2021, arXiv 2102.09690): the
log-odds of Yes for this conversation minus those for the neutral one. The round's principle is
then drawn among the K highest with the same seeded draw as the paper's (K=1: always the top
one). The conversation comes first in every question, so an engine's prefix cache serves a
round's questions from one prefill.

Each request carries one principle, so a constitution of any length is used without being cut;
what must fit the model's context is each principle's own requests. When principles are
selected (by relevance or by group) one that cannot fit is left out with a logged warning, or
the run stops before its first request (a random draw inside a group would hit it).
"""
from __future__ import annotations

import logging
import math
import random
from dataclasses import replace
from typing import Any, Sequence

from charter.choice import softmax
from charter.backends.base import EngineDead
from charter.errors import BackendError, ConfigError, InputError
from charter.inputs import templates
from charter.inputs.constitution import in_group, with_priority
from charter.inputs.transcripts import render as transcript
from charter.redact import error_text
from charter.types import Constitution, Message

log = logging.getLogger("charter.relevance")

# What the recorded scores are: log-odds of "Yes" to the question below (over Yes/No) for the
# conversation, minus those for NEUTRAL; each round also keeps the raw P(Yes).
METHOD = "p_yes_calibrated"
NEUTRAL = ({"role": "user", "content": "Hello, how are you today?"},
           {"role": "assistant", "content": "I'm well, thank you. How can I help you?"})
DEFAULT_K = 4
HEAD = "Here is a conversation between a human and an AI assistant:"
ASK = "Is the following principle relevant to this conversation? Answer Yes or No."
OPTIONS = {"chat": ("Yes", "No"), "text": (" Yes", " No")}


def relevance_k(spec: str, flag: str = "--principles") -> int | None:
    """'random' -> None (the paper's draw); 'relevant' -> DEFAULT_K; 'relevant:K' -> K."""
    name, _, k = str(spec).partition(":")
    if name == "random" and not k:
        return None
    if name == "relevant" and (not k or (k.isdigit() and int(k) >= 1)):
        return int(k) if k else DEFAULT_K
    raise ConfigError(f"{flag} must be 'random' (the paper's draw) or 'relevant[:K]' (drawn among the K most "
                      f"relevant principles, K >= 1, default {DEFAULT_K}), got '{spec}'")


def question(conversation: Sequence[Message], text: str, fmt: str) -> tuple[Any, tuple[str, str]]:
    """The relevance question for one principle (`text`: its request) and its Yes/No options."""
    body = f"{HEAD}\n\n{transcript(conversation).strip()}\n\n{ASK}\nPrinciple: {text}"
    if fmt == "chat":
        return [{"role": "user", "content": body}], OPTIONS["chat"]
    return f"{body}\n\nAnswer:", OPTIONS["text"]


def p_yes(logps: Sequence[float]) -> float:
    return softmax(logps)[0]


def _log_odds(p: float) -> float:
    p = min(max(p, 1e-9), 1 - 1e-9)
    return math.log(p / (1 - p))


def prior(backend, texts: Sequence[str], fmt: str) -> list[float]:
    """P(Yes) of each principle (`texts`) for the neutral exchange: what the score is measured against."""
    asks = [question(NEUTRAL, t, fmt) for t in texts]
    try:
        return [p_yes(lp) for lp in backend.choose([q for q, _ in asks], [o for _, o in asks])]
    except EngineDead:
        raise
    except Exception as exc:
        raise BackendError(f"ranking principles by relevance needs option log-probabilities from the "
                           f"{backend.name or 'backend'} backend, and asking for them failed ({error_text(exc)}); "
                           "use --principles random (or --principle-draw random), or a backend that scores") from exc


def ranking(principles: Sequence, scores: dict[str, float]) -> list:
    """Most relevant first; ties go to the higher priority, then to the constitution's order."""
    order = range(len(principles))
    key = lambda i: (-scores[principles[i].id], principles[i].priority or float("inf"), i)
    return [principles[i] for i in sorted(order, key=key)]


def pick(principles: Sequence, scores: dict[str, float], k: int, key: str):
    """The draw among the K most relevant, seeded by `key` as the paper's draw is."""
    return random.Random(key).choice(ranking(principles, scores)[:k])


def record_of(ids: Sequence[str], ps: Sequence[float], priors: Sequence[float], k: int) -> dict[str, Any]:
    """What a round (or a label line) keeps: the method, K, each principle's calibrated score (what
    ranks them) and its raw P(Yes)."""
    scores = {i: round(_log_odds(p) - _log_odds(p0), 4) for i, p, p0 in zip(ids, ps, priors)}
    return {"method": METHOD, "k": k, "scores": scores, "p_yes": {i: round(p, 4) for i, p in zip(ids, ps)}}


# ---- generate: the principles a run draws from -----------------------------------------------------


def setup(backend, constitution: Constitution, settings) -> tuple[Constitution, "Ranker | None"]:
    """The constitution a run draws from (its group; priorities named in the critique requests;
    principles that cannot fit left out where selected), and the ranker for relevance draws."""
    k = relevance_k(settings.principles)
    chosen = in_group(constitution.principles, settings.group, constitution.source or constitution.name)
    if settings.name_priority:
        chosen = [replace(p, critique=with_priority(p.critique, p, constitution.priority_template)) for p in chosen]
    c = replace(constitution, principles=tuple(chosen))
    if k is not None or settings.group is not None:
        c = fitting(backend, c, settings, k is not None)
    return c, (Ranker(backend, c, settings, k) if k is not None else None)


def _need(backend, c: Constitution, p, settings) -> int | None:
    """Tokens of principle p's longest request around an empty conversation, max_tokens included."""
    empty = [{"role": "user", "content": ""}]
    critique = "" if settings.critique else None
    if settings.format == "text":
        request = templates.text_revision(c.few_shots, empty, "", p, critique)
    else:
        request = templates.chat_revision(c.few_shots, empty, "", p, critique)
    count = backend.count_tokens(request)
    return None if count is None else count + settings.sampling.max_tokens


def fitting(backend, c: Constitution, settings, ranked: bool) -> Constitution:
    """`c` without the principles whose requests cannot fit the model's context (ranked: left out
    with a warning; a random draw in a group: an InputError). Never cut silently."""
    limit = backend.max_context
    needs = {p.id: _need(backend, c, p, settings) for p in c.principles} if limit else {}
    if not needs or None in needs.values():
        return c  # the backend cannot count: each record is checked as it runs
    over = [p.id for p in c.principles if needs[p.id] > limit]
    if not over:
        total = sum(backend.count_tokens(f"{p.critique}\n{p.revision}") or 0 for p in c.principles)
        if total > limit:
            log.info("the constitution's %d principles take %d tokens together, over the model's context of %d: "
                     "each request carries one principle, so none is cut", len(c.principles), total, limit)
        return c
    detail = ", ".join(f"{pid} ({needs[pid]} tokens)" for pid in over)
    if ranked and len(over) < len(c.principles):
        log.warning("principles %s do not fit the model's context of %d tokens with the few-shot block (max_tokens "
                    "included): left out of the relevance ranking", detail, limit)
        return replace(c, principles=tuple(p for p in c.principles if p.id not in over))
    raise InputError(f"principles {detail} do not fit the model's context of {limit} tokens with the few-shot "
                     "block (max_tokens included), and a draw would pick them; shorten them, choose a "
                     "--principle-group without them, use --principles relevant (it ranks what fits), lower "
                     "--max-tokens, or use --few-shot none or a model with a longer context", c.source)


class Ranker:
    """Ranks a run's principles by relevance at the start of each round (one `choose` call for
    every conversation starting a round in a batch) and draws among the top K. A job keeps its
    rankings in `job.relevance` (round index -> record_of(...), or {"error": why})."""

    def __init__(self, backend, constitution: Constitution, settings, k: int):
        self.backend, self.c, self.s, self.k = backend, constitution, settings, k
        self.prior = prior(backend, [p.critique for p in constitution.principles], settings.format)

    def rank(self, runner, jobs: Sequence) -> None:
        """Rank for each job whose next step starts a round not ranked yet."""
        todo = [(j, runner.round_index(j)) for j in jobs if runner.step_name(j) in ("critique", "revise")]
        todo = [(j, r) for j, r in todo if r not in j.relevance]
        asks = []
        for job, r in todo:
            convo = list(job.item.messages) + [{"role": "assistant", "content": runner.current_answer(job)}]
            qs = [question(convo, p.critique, self.s.format) for p in self.c.principles]
            why = self.too_long(job, qs)
            if why:
                job.relevance[r] = {"error": why}
            else:
                asks.append((job, r, qs))
        if not asks:
            return
        flat = [q for _, _, qs in asks for q in qs]
        try:
            logps = iter(self.backend.choose([c for c, _ in flat], [o for _, o in flat]))
        except EngineDead:
            raise
        except Exception as exc:  # these records fail (Runner.too_long says why), not the run
            for job, r, _ in asks:
                job.relevance[r] = {"error": f"ranking the principles by relevance failed: {error_text(exc)}"}
            return
        ids = [p.id for p in self.c.principles]
        for job, r, _ in asks:
            job.relevance[r] = record_of(ids, [p_yes(next(logps)) for _ in ids], self.prior, self.k)

    def too_long(self, job, questions: Sequence) -> str | None:
        limit = self.backend.max_context
        if not limit:
            return None
        need = max((self.backend.count_tokens(c) or 0) for c, _ in questions) + 2  # the option's tokens
        if need <= limit:
            return None
        return (f"ContextTooLong: prompt {job.item.id} needs {need} tokens to rank the principles by relevance, "
                f"over the model's context of {limit}; shorten the prompt (or use --principles random)")

    def failed(self, job, r: int) -> str | None:
        got = job.relevance.get(r)
        return got.get("error") if isinstance(got, dict) else None

    def draw(self, job, r: int):
        """Round r's principle, seeded as the paper's draw (charter.inputs.constitution.draw_principle);
        the first principle as a placeholder where the ranking failed (that step is never sent: its
        record fails with the reason)."""
        got = job.relevance.get(r)
        if not isinstance(got, dict) or "scores" not in got:
            return self.c.principles[0]
        return pick(self.c.principles, got["scores"], self.k, f"{self.s.seed}:{job.item.id}:{r}")
