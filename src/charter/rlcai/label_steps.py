"""What `charter label` asks of the engines, as one scheduler program per prompt (charter.pipeline.scheduler).

A prompt's program samples its answers from the policy (one step per answer, each seeded by the
prompt and its index, so a streamed run gives the same answers whatever order its steps reach the
engine in), then asks the feedback model about every pair, principle and option order at once:
the question's option log-probs (Choice), after chain-of-thought reasoning (Sample) with --cot.
Pairs of empty or identical answers are skipped. The steps name their backend, "policy" or
"feedback": one engine serves both when the policy is the feedback model.

LabelJob holds what the program needs and opens its backends: the local run and each Ray worker
(charter.pipeline.ray_executor) use the same object.
"""
from __future__ import annotations

import dataclasses
import itertools
from typing import Any, Generator, Sequence

from charter.inputs.constitution import in_group, with_priority
from charter.pipeline import relevance
from charter.rlcai.data import FeedbackSet, draw_principles
from charter.rlcai.label_store import error_line
from charter.rlcai.questions import asking, few_shot_prefix, pair_preference, question
from charter.pipeline.jobrun import ProgramJob
from charter.pipeline.scheduler import Choice, Program, Sample, run_programs, seeded
from charter.inputs.templates import TEXT_STOPS, text_initial
from charter.types import PromptItem

POLICY, FEEDBACK = "policy", "feedback"


def answer_temperatures(n: int, temperatures: Sequence[float], default: float) -> list[float]:
    """The temperature of answer i of a prompt: temperatures[i % len] (NeMo's CAI recipe), else `default`."""
    return [float(temperatures[i % len(temperatures)]) if temperatures else default for i in range(n)]


def on_backend(program: Generator, name: str) -> Generator:
    """`program`'s steps, sent to the backend named `name`; returns what it returns."""
    results = None
    try:
        while True:
            steps = program.send(results)
            results = yield [dataclasses.replace(s, backend=name) for s in steps]
    except StopIteration as stop:
        return stop.value


def same_model(cfg) -> bool:
    """The policy is the feedback model: one engine serves both."""
    return (cfg.feedback_model or cfg.policy) == cfg.policy and (cfg.feedback_backend or cfg.backend) == cfg.backend


def label_budget(cfg, prompts: int) -> tuple[int, int]:
    """The most tokens the policy and the feedback model generate over `prompts` prompts (a scored
    question weighs SCORED_QUESTION_TOKENS: it generates none, yet costs), which `auto` sizes to."""
    from charter.backends import SCORED_QUESTION_TOKENS

    questions = prompts * cfg.samples * (cfg.samples - 1) * cfg.ensemble  # every pair, both orders
    return (prompts * cfg.samples * cfg.max_tokens,
            questions * ((cfg.cot_max_tokens if cfg.cot else 0) + SCORED_QUESTION_TOKENS))


def open_backends(cfg, policy, feedback, prompts: int | None) -> tuple[Any, Any, list]:
    """The policy and feedback backends (opened unless given, `auto` sized to `prompts` prompts
    when known); the third value lists the ones opened here, to close."""
    from charter.backends import open_model

    answers, judging = label_budget(cfg, prompts) if prompts is not None else (None, None)
    same, own = same_model(cfg), []
    try:
        if policy is None:
            budget = answers + judging if same and answers is not None else answers
            policy = open_model(cfg.policy, cfg.backend, budget=budget, **cfg.backend_options)
            own.append(policy)
        if feedback is None and same:
            feedback = policy
        elif feedback is None:
            feedback = open_model(cfg.feedback_model or cfg.policy, cfg.feedback_backend or cfg.backend,
                                  budget=judging, **cfg.backend_options)
            own.append(feedback)
    except BaseException:  # the feedback model failed to load (or Ctrl-C): the policy's engine goes too
        for backend in own:
            backend.close()
        raise
    return policy, feedback, own


class LabelJob(ProgramJob):
    """A label run's settings and feedback set, its program per prompt, and its backends once open.
    Picklable before `open` (a Ray worker gets a copy and opens its own engines)."""

    def __init__(self, cfg, fs: FeedbackSet):
        super().__init__()
        self.cfg, self.fs = dataclasses.replace(cfg), chosen_principles(fs, cfg)  # a plain copy of cfg
        self.k = relevance.relevance_k(getattr(cfg, "principle_draw", "random"), "--principle-draw")
        self.prior: list[float] = []  # the principles' P(Yes) for a neutral exchange (relevance draws), once open
        self.prefix = few_shot_prefix(fs.examples, cfg.format, cfg.cot)
        self.band = (cfg.clamp_low, cfg.clamp_high) if cfg.cot else None
        self.text = (cfg.policy_format or cfg.format) == "text"  # the policy continues raw transcripts
        sampling = cfg.sampling()
        if self.text:
            sampling = dataclasses.replace(sampling, stop=tuple(dict.fromkeys((*sampling.stop, *TEXT_STOPS))))
        # answer i's sampling before its seed (made once: a Sampling checks itself when made)
        self.answers = [dataclasses.replace(sampling, temperature=t)
                        for t in answer_temperatures(cfg.samples, cfg.temperatures, cfg.temperature)]
        self.cot = cfg.sampling("cot_") if cfg.cot else None

    def open(self, prompts: int | None = None, policy=None, feedback=None) -> None:
        """The policy and feedback backends: those given, the others opened (`auto` sized to
        `prompts` prompts); the few-shot block is shared with the feedback engine once."""
        policy, feedback, self.own = open_backends(self.cfg, policy, feedback, prompts)
        self.backends = {POLICY: policy, FEEDBACK: feedback}
        if self.prefix:
            feedback.share_prefix(self.prefix)
        if self.k is not None:
            try:
                self.prior = relevance.prior(feedback, [p.text for p in self.fs.principles], self.cfg.format)
            except BaseException:  # the engines opened here end with the failure
                self.close()
                raise

    def program(self, item: PromptItem) -> Program:
        return label_prompt(item, self)

    def failed(self, item: PromptItem, error: str) -> dict:
        return error_line(item, error)


def chosen_principles(fs: FeedbackSet, cfg) -> FeedbackSet:
    """The principles a run draws from: its --principle-group; priorities named with --name-priority."""
    ps = in_group(fs.principles, getattr(cfg, "principle_group", None), fs.source)
    if getattr(cfg, "name_priority", False):
        ps = [dataclasses.replace(p, text=with_priority(p.text, p, fs.priority_template)) for p in ps]
    return dataclasses.replace(fs, principles=tuple(ps))


def relevance_steps(prompt: list, job: LabelJob) -> list[Choice]:
    """With --principle-draw relevant: one question per principle to the feedback model, about the prompt."""
    if job.k is None:
        return []
    fmt = job.cfg.format
    return [Choice(*relevance.question(prompt, p.text, fmt), backend=FEEDBACK) for p in job.fs.principles]


def label_prompt(item: PromptItem, job: LabelJob) -> Program:
    """One prompt: its answers (and its principles' relevance, asked beside them), then every
    comparison of them; returns its transcript line."""
    request = text_initial(list(item.messages)) if job.text else list(item.messages)
    asks = relevance_steps(list(item.messages), job)
    done = yield [Sample(request, seeded(s, f"{item.id}:answer:{i}"), text=job.text, backend=POLICY)
                  for i, s in enumerate(job.answers)] + asks
    answers = [c.text.strip() for c in done[:len(job.answers)]]
    ranked = relevance.record_of([p.id for p in job.fs.principles], [relevance.p_yes(lp) for lp in done[len(answers):]],
                                 job.prior, job.k) if asks else None
    comparisons = yield from compare_answers(item.id, list(item.messages), answers, job, ranked and ranked["scores"])
    line: dict[str, Any] = {"id": item.id, "prompt": list(item.messages), "answers": answers}
    if job.cfg.temperatures:  # each answer's temperature, kept in the line and the rows
        line["temperatures"] = [s.temperature for s in job.answers]
    if ranked is not None:
        line["relevance"] = ranked
    return {**line, "comparisons": comparisons, "error": None}


def compare_answers(pid: str, prompt: list, answers: list[str], job: LabelJob,
                    scores: dict[str, float] | None = None) -> Generator:
    """Every pair of a prompt's answers labelled, all questions asked at once; skipped pairs say why
    (`scores`: the principles' relevance, when drawn by it)."""
    pairs, questions = [], []
    for i, j in itertools.combinations(range(len(answers)), 2):
        x, y = answers[i], answers[j]
        why = "empty answer" if not x or not y else "identical answers" if x == y else None
        drawn = [] if why else pair_questions(prompt, x, y, f"{pid}:{i}-{j}", job, questions, scores)
        pairs.append((i, j, why, drawn))
    answered = iter((yield from ask_feedback(questions, job)) if questions else ())
    return [{"samples": [i, j], "skipped": why, "score_first": None} if why else
            {"samples": [i, j], **pair_result(drawn, answered, job)} for i, j, why, drawn in pairs]


def pair_questions(prompt: list, x: str, y: str, key: str, job: LabelJob, questions: list,
                   scores: dict[str, float] | None = None) -> list:
    """The principles drawn for one comparison (seeded by `key`; among the K most relevant given
    `scores`); its questions, both orders of each, appended to `questions`."""
    pool = job.fs.principles if scores is None else relevance.ranking(job.fs.principles, scores)[:job.k]
    drawn = draw_principles(pool, job.cfg.seed, key, job.cfg.ensemble)
    for p in drawn:
        questions += [(question(prompt, p.text, [x, y]), 2), (question(prompt, p.text, [y, x]), 2)]
    return drawn


def ask_feedback(questions: list, job: LabelJob) -> Generator:
    return (yield from on_backend(asking(job.prefix, questions, job.cfg.format, job.cot), FEEDBACK))


def pair_result(drawn: list, answered, job: LabelJob) -> dict:
    """One comparison from its answered questions: P(first answer better), averaged over principles."""
    asks, prefs = [], []
    for p in drawn:
        first, second = next(answered), next(answered)
        prefs.append(pair_preference(first.probs, second.probs, job.band))
        for order, a in (("xy", first), ("yx", second)):
            asks.append({"principle": p.id, "principle_text": p.text, "order": order,
                         "context": a.context[len(job.prefix):], "probs": a.probs, "reasoning": a.reasoning})
    return {"principles": [p.id for p in drawn], "per_principle": prefs, "score_first": sum(prefs) / len(prefs),
            "asks": asks}


def label_comparisons(feedback, fs: FeedbackSet, items: Sequence[dict], cfg) -> list[dict]:
    """Label comparisons {"id", "prompt", "answers": [x, y]}: transcript dicts with score = P(x better)."""
    from charter.errors import RunError

    job = LabelJob(cfg, fs)
    job.backends = {FEEDBACK: feedback}
    got: list = [None] * len(items)

    def program(k: int) -> Program:
        it = items[k]
        questions: list = []
        drawn = pair_questions(it["prompt"], *it["answers"], it["id"], job, questions)
        answered = yield from ask_feedback(questions, job)
        return {**it, **pair_result(drawn, iter(answered), job)}

    def on_done(k: int, result, error: str | None) -> None:
        if error is not None:
            raise RunError(f"comparison {items[k]['id']} failed: {error}")
        got[k] = result

    run_programs(job.backends, range(len(items)), program, on_done, batch_size=cfg.batch_size)
    return got
