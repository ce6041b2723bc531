"""Direct AI feedback as the RL reward (d-RLAIF, Lee et al. 2023, arXiv 2309.00267).

`charter train rl --reward feedback` scores each completion with the feedback model itself instead
of a preference model trained on its labels. The question is the one `charter label` asks
(charter.rlcai.questions): the paper's multiple-choice question under one feedback principle,
asked in both option orders and position-averaged.

Form: paired against a reference answer, the starting policy's own answer to the same prompt
(sampled once before training, with the run's temperature, top-p, max_tokens and seed). The reward
is P(completion better than the reference), in [0, 1]; 0.5 means "as good as the start". Why
paired and why this reference: the question compares two options, and a one-option form of it
normalises to 1 whatever the answer; pairs of the policy's own samples are what `label` asks
about, so the feedback model sees the distribution its labels (and a PM trained on them) come
from, where answers of similar quality give informative probabilities, unlike a fixed refusal
that most answers beat or lose to outright. A fixed reference per prompt also keeps a prompt's
RLOO group comparable: every sample meets the same opponent under the same principle (one drawn
per prompt, seeded). The feedback model is any Charter backend (an OpenAI-compatible server on
other hardware included), called by TRL through a plain reward function that scores each batch
of completions concurrently (charter.pipeline.scheduler). TRL also takes async reward functions, but only
to run several of them side by side; it waits for them before each step, so one reward function
gains nothing from being async.
"""
from __future__ import annotations

import hashlib
import json
import logging
from typing import Any, Sequence

from charter.errors import RunError
from charter.rlcai.data import FeedbackSet, draw_principles
from charter.rlcai.questions import asking, few_shot_prefix, pair_preference, question, sample
from charter.types import Message, Sampling

log = logging.getLogger("charter.train")


def prompt_key(prompt: Sequence[Message]) -> str:
    """A stable id of a prompt (its messages): seeds its principle draw and finds its reference."""
    return hashlib.sha1(json.dumps(list(prompt), sort_keys=True).encode()).hexdigest()[:16]


REFERENCE_CHUNK = 64  # prompts sampled per call: the bar moves while the references are made


def reference_answers(backend, prompts: Sequence[Sequence[Message]], sampling: Sampling,
                      progress: bool = True) -> dict[str, str]:
    """{prompt_key: one answer of `backend` (the starting policy) to the prompt}. Chunks keep each
    row's seed (the call's + its index, as vLLM seeds rows), so they sample what one call would."""
    from dataclasses import replace

    from charter.pipeline.jobrun import progress_bar

    refs: dict[str, str] = {}
    with progress_bar(len(prompts), progress, unit=" references") as bar:
        for start in range(0, len(prompts), REFERENCE_CHUNK):
            chunk = [list(p) for p in prompts[start:start + REFERENCE_CHUNK]]
            seeded = replace(sampling, seed=sampling.seed + start) if sampling.seed is not None else sampling
            refs.update((prompt_key(p), t) for p, t in zip(chunk, sample(backend, chunk, "chat", seeded)))
            bar.update(len(chunk))
    return refs


class FeedbackReward:
    """A TRL reward function: P(completion better than its prompt's reference) under its principle."""

    __name__ = "feedback"  # TRL names the metric rewards/feedback/mean after it

    def __init__(self, backend, fs: FeedbackSet, references: dict[str, str], fmt: str = "chat", seed: int = 0):
        self.backend, self.fs, self.references, self.fmt, self.seed = backend, fs, references, fmt, seed
        self.prefix = few_shot_prefix(fs.examples, fmt, cot=False)
        if self.prefix and backend is not None:
            backend.share_prefix(self.prefix)  # every question starts with it: loaded once where slots hold KV

    def principle(self, prompt: Sequence[Message]):
        return draw_principles(self.fs.principles, self.seed, prompt_key(prompt))[0]

    def __call__(self, prompts: Sequence[Sequence[Message]], completions: Sequence[Any], **_: Any) -> list[float]:
        """One reward per completion, the batch scored concurrently: one scheduler program per
        completion (its two option orders as Choice steps), so an engine that batches internally
        has the whole batch in flight and one that batches per call gets it in full calls."""
        from charter.pipeline.scheduler import run_programs

        questions = [self.questions(prompt, done) for prompt, done in zip(prompts, completions)]
        rewards: list[float | None] = [None] * len(questions)

        def on_done(i: int, answered, error: str | None) -> None:
            if error is not None:
                raise RunError(f"the feedback model failed to score a completion: {error}")
            rewards[i] = pair_preference(answered[0].probs, answered[1].probs)

        run_programs(self.backend, range(len(questions)), lambda i: asking(self.prefix, questions[i], self.fmt),
                     on_done, batch_size=max(2, 2 * len(questions)))  # a per-call engine: the batch in one call
        return rewards  # type: ignore[return-value]

    def questions(self, prompt: Sequence[Message], done: Any) -> list[tuple[str, int]]:
        """The feedback question on (completion, reference) in both option orders."""
        ref = self.references.get(prompt_key(prompt))
        if ref is None:
            raise RunError("the feedback reward got a prompt it has no reference answer for; "
                           "the dataset must be the one build_rl_trainer made")
        text = (done[-1]["content"] if isinstance(done, list) else str(done)).strip()
        p = self.principle(prompt).text
        return [(question(prompt, p, [text, ref]), 2), (question(prompt, p, [ref, text]), 2)]

    def reference_rows(self, prompts: Sequence[Sequence[Message]]) -> list[dict[str, Any]]:
        """What each prompt's completions were compared with: written to OUT/feedback_references.jsonl."""
        return [{"prompt": list(p), "reference": self.references.get(prompt_key(p)),
                 "principle": self.principle(p).id} for p in prompts]

    def close(self) -> None:
        if self.backend is not None:
            self.backend.close()
        self.backend = None


def build_feedback_reward(cfg, prompts: Sequence[Sequence[Message]], progress: bool = True) -> FeedbackReward:
    """The feedback backend, the principles and the starting policy's reference answers (rl.RLConfig)."""
    from charter.backends import SCORED_QUESTION_TOKENS, open_model
    from charter.rlcai.data import load_feedback

    fs = load_feedback(cfg.principles, cfg.few_shot)
    start_judges = (cfg.feedback_model or cfg.model) == cfg.model  # the feedback model is the starting policy
    scored = len(prompts) * cfg.samples * 2 * SCORED_QUESTION_TOKENS  # an epoch of completions, both orders
    budget = scored + (len(prompts) * cfg.max_tokens if start_judges else 0)  # + the reference answers
    # said first: loading the models and sampling the references take minutes before training starts
    log.info("charter train rl: loading the feedback model %s, then sampling %d reference answers of the starting "
             "policy (one per prompt) before training", cfg.feedback_model or cfg.model, len(prompts))
    feedback = open_model(cfg.feedback_model or cfg.model, cfg.feedback_backend, budget=budget, **cfg.feedback_options)
    try:
        sampling = cfg.sampling()
        if start_judges:
            refs = reference_answers(feedback, prompts, sampling, progress)
        else:  # the starting policy is a checkpoint being trained: transformers reads it
            with open_model(cfg.model, "transformers") as start:
                refs = reference_answers(start, prompts, sampling, progress)
    except BaseException:
        feedback.close()
        raise
    log.info("charter train rl: feedback reward from %s (%s), %d reference answers of the starting policy",
             feedback.model_id or cfg.feedback_model or cfg.model, feedback.name or cfg.feedback_backend, len(refs))
    return FeedbackReward(feedback, fs, refs, cfg.format, cfg.seed)
