"""The CAI loop: respond -> (critique -> revise) x N, one record per prompt, and its schedulers.

Conversations advance independently. Engines that batch internally (vLLM, llama.cpp, servers)
get `concurrency` conversations in flight, each submitting its next step the moment its last one
returns. In-process engines that batch per call (transformers) get batches of up to `batch_size`
steps of one prompt family (plain answers vs. few-shot critique/revision). A finished record is
written at once and a new prompt takes its place. The scheduler follows the backend's declared
`concurrency`; each step's request is prepared (encoded) once by the backend, checked against its
`max_context`, and sent as prepared.
"""
from __future__ import annotations

import hashlib
import threading
import time
from itertools import chain, islice
from dataclasses import dataclass, field, replace
from typing import Callable, Iterable, Sequence

from charter.inputs import templates
from charter.backends.base import Backend, EngineDead
from charter.inputs.constitution import draw_principle
from charter.errors import BackendError, stop_error
from charter.redact import error_text  # a server may echo credentials (URL userinfo, headers)
from charter.pipeline import clean_check, relevance
from charter.pipeline.scheduler import Failures, run_threads
from charter.types import Completion, Constitution, FewShotRound, Message, PromptItem, Record, Round, Sampling


@dataclass
class Settings:
    rounds: int = 4
    critique: bool = True
    format: str = "chat"
    seed: int = 0
    batch_size: int = 16
    sampling: Sampling = field(default_factory=Sampling)
    context: str = "full"  # "full": round k sees every earlier round; "latest": the latest revision only
    stop_when_clean: bool = False  # after each critique, ask if it found a problem; if not, stop (clean_check)
    clean_threshold: float = 0.5  # stop when P(problem) is below this
    principles: str = "random"  # each round's draw: "random" (the paper) or "relevant[:K]" (pipeline.relevance)
    group: str | None = None  # draw only from this group of a prioritised constitution
    name_priority: bool = False  # the critique requests name their principle's priority


@dataclass
class Job:
    item: PromptItem
    record: Record
    step: int = 0  # 0 = initial answer; then critique/revision steps
    critique: str | None = None  # this round's critique, once written
    check_due: bool = False  # the critique waits for its clean check (stop_when_clean) before the revision
    relevance: dict = field(default_factory=dict)  # round -> its principles' ranking (relevance draws)
    t0: float = field(default_factory=time.time)

    @property
    def family(self) -> str:
        return "check" if self.check_due else "plain" if self.step == 0 else "few-shot"


def plan(item: PromptItem, s: Settings) -> list[str]:
    """The steps of one prompt: 'initial', then per round ['critique',] 'revise'."""
    if item.kind == "helpful":
        return ["initial"]
    per_round = ["critique", "revise"] if s.critique else ["revise"]
    return ["initial"] + per_round * s.rounds


class Runner:
    def __init__(self, backend: Backend, constitution: Constitution, settings: Settings,
                 on_record: Callable[[Record], None], on_step: Callable[[], None] | None = None):
        self.backend, self.c, self.s = backend, constitution, settings
        self.c, self.ranker = relevance.setup(backend, constitution, settings)  # its group, ranked draws
        self.on_record, self.on_step = on_record, on_step or (lambda: None)
        self.failures = Failures()
        self.calls = 0
        self.fatal: BaseException | None = None  # set when the run must stop (a dead engine, a failed write)
        self.stopped = False  # set on interrupt: finished records are no longer written
        self.sampling = settings.sampling
        if settings.format == "text":  # turn boundaries end every step cleanly
            self.sampling = Sampling(**{**settings.sampling.to_dict(), "stop": tuple(settings.sampling.stop) + templates.TEXT_STOPS})

    def new_job(self, item: PromptItem) -> Job:
        rec = Record(id=item.id, kind=item.kind, prompt=list(item.messages), sample=item.sample, source=item.source,
                     model=self.backend.model_id, backend=self.backend.name, format=self.s.format,
                     sampling=self.sampling.to_dict(), tokens={"prompt": 0, "completion": 0})
        return Job(item, rec)

    def draw(self, job: Job):
        """This round's principle: the paper's seeded draw, or among the most relevant (--principles)."""
        if self.ranker:
            return self.ranker.draw(job, self.round_index(job))
        return draw_principle(self.c, self.s.seed, job.item.id, self.round_index(job))

    def step_name(self, job: Job) -> str:
        return "check" if job.check_due else plan(job.item, self.s)[job.step]

    def round_index(self, job: Job) -> int:
        return (job.step - 1) // (2 if self.s.critique else 1)

    def current_answer(self, job: Job) -> str:
        return job.record.rounds[-1].revision if job.record.rounds else (job.record.initial or "")

    def request(self, job: Job):
        name, prompt = self.step_name(job), job.item.messages
        text = self.s.format == "text"
        if name == "initial":
            return templates.text_initial(prompt) if text else templates.chat_initial(prompt)
        p = self.draw(job)
        shots, past = self.c.few_shots, self.past(job)
        answer = (job.record.initial or "") if past else self.current_answer(job)
        if name == "check":
            return clean_check.contexts(prompt, self.current_answer(job), p, job.critique or "", self.s.format)
        if name == "critique":
            build = templates.text_critique if text else templates.chat_critique
            return build(shots, prompt, answer, p, past)
        build = templates.text_revision if text else templates.chat_revision
        return build(shots, prompt, answer, p, job.critique if self.s.critique else None, past)

    def shared_prefix(self) -> list[Message] | str:
        """What every critique/revision request of this run starts with: the few-shot block."""
        shots, critique = self.c.few_shots, self.s.critique
        if self.s.format == "text":
            return templates.few_shot_text(shots, critique)
        return templates.few_shot_messages(shots, critique)

    def past(self, job: Job) -> list[FewShotRound]:
        """Earlier rounds in the shape of a demonstration's, when the context keeps them."""
        if self.s.context != "full":
            return []
        principles = [self.c.principle(r.principle) for r in job.record.rounds]
        return [FewShotRound(p.critique, r.critique or "", p.revision, r.revision)
                for p, r in zip(principles, job.record.rounds)]

    def advance(self, job: Job, out: Completion) -> bool:
        """Apply one completion (a clean check's P(problem)); True when the job is finished."""
        if job.check_due:
            return self.checked(job, out)
        name, text = self.step_name(job), out.text.strip()
        job.record.tokens["prompt"] += out.prompt_tokens
        job.record.tokens["completion"] += out.completion_tokens
        if name == "initial":
            job.record.initial = text
        elif name == "critique":
            job.critique, job.check_due = text, self.s.stop_when_clean
        else:
            pid = self.draw(job).id
            job.record.rounds.append(Round(pid, job.critique, text, job.relevance.get(self.round_index(job))))
            job.critique = None
        job.step += 1
        self.on_step()
        return job.step >= len(plan(job.item, self.s))

    def checked(self, job: Job, p: float) -> bool:
        """Apply a clean check's P(problem): below the threshold the chain ends with the answer it
        has, the critique kept in `record.stopped`; its skipped steps count as done (the bar's total)."""
        rec, job.check_due = job.record, False
        rec.p_problem = (rec.p_problem or []) + [round(p, 4)]
        if p >= self.s.clean_threshold:
            return False
        pid = self.draw(job).id
        rec.stopped = {"round": len(rec.rounds) + 1, "p_problem": round(p, 4), "principle": pid,
                       "critique": job.critique}
        for _ in range(len(plan(job.item, self.s)) - job.step):
            self.on_step()
        return True

    def finish(self, job: Job, error: str | None = None) -> None:
        if self.stopped:
            return
        rec = job.record
        rec.error = error
        rec.final = None if error else self.current_answer(job)
        rec.timings = {"seconds": round(time.time() - job.t0, 3), "finished": round(time.time(), 3)}
        self.on_record(rec)

    def tally(self, exc: BaseException | None) -> None:
        """Count each backend call's outcome; stop when the first calls all fail the same way."""
        self.failures.tally(exc)
        self.fatal = self.fatal or self.failures.fatal

    def prepare(self, batch: Sequence[Job]) -> list:
        """Each job's next request as the backend sends it: encoded once, for both the context
        check and the call. A batch of clean checks is sent as built (`choose` takes the questions)."""
        if self.ranker:  # a round's principle is drawn once its principles are ranked
            self.ranker.rank(self, batch)
        if batch and batch[0].check_due:
            return [self.request(j) for j in batch]
        return self.backend.prepare([self.request(j) for j in batch])

    def too_long(self, job: Job, prompt) -> str | None:
        """Why this step cannot run in the model's context (None if it can): checked before the
        engine sees it, so a huge prompt fails its record instead of exhausting memory."""
        if self.ranker and self.ranker.failed(job, self.round_index(job)):  # its ranking did not fit, or failed
            return self.ranker.failed(job, self.round_index(job))
        limit = self.backend.max_context
        if job.check_due:  # the longer of its two questions, and the options' few tokens
            prompt = max(prompt, key=lambda q: len(str(q)))
        count = self.backend.count_tokens(prompt) if limit else None
        if count is None:
            return None
        need = count + (clean_check.ROOM if job.check_due else self.sampling.max_tokens)
        if need <= limit:
            return None
        return (f"ContextTooLong: prompt {job.item.id} ({job.item.source or 'prompts'}) needs {need} tokens at step "
                f"'{self.step_name(job)}' (max_tokens {self.sampling.max_tokens} included), over the model's "
                f"context of {limit}; shorten the prompt, or lower --max-tokens or --rounds (or --context latest)")

    def call(self, batch: Sequence[Job], prompts: Sequence) -> list[Completion]:
        """One backend call on the jobs' prepared requests: one Completion per request, or a
        BackendError (which fails these records, like any failed call); for clean checks, each
        one's P(problem). A check takes no seed: sampled steps keep theirs with or without checks."""
        if batch and batch[0].check_due:
            return clean_check.ask(self.backend, prompts)
        sampling = replace(self.sampling, seed=self.call_seed(batch))
        send = self.backend.complete if self.s.format == "text" else self.backend.chat
        outs = send(prompts, sampling)
        if not isinstance(outs, list) or len(outs) != len(batch) or not all(isinstance(o, Completion) for o in outs):
            got = f"{len(outs)} items" if isinstance(outs, list) else type(outs).__name__
            raise BackendError(f"the {self.backend.name or 'backend'} backend returned {got} for {len(batch)} "
                               "requests instead of one completion each; the backend has a bug")
        return outs

    def call_seed(self, batch: Sequence[Job]) -> int | None:
        """A fresh seed per call (engines that reseed per call would otherwise repeat one random
        stream). A lone conversation's step gets a seed of its own (prompt id, step), so streamed
        runs are reproducible whatever order the steps reach the engine in."""
        self.calls += 1
        if self.sampling.seed is None:
            return None
        if len(batch) == 1:
            key = f"{self.sampling.seed}:{batch[0].item.id}:{batch[0].step}".encode()
            return int.from_bytes(hashlib.sha256(key).digest()[:4], "big") >> 1
        return self.sampling.seed * 1_000_003 + self.calls

    def run(self, items: Iterable[PromptItem]) -> None:
        """Batch scheduler for in-process engines that batch per call (transformers)."""
        source, active, more = iter(items), [], True  # taken as jobs finish: memory is the window
        window = 2 * self.s.batch_size  # enough jobs in flight to fill a batch of one family
        while (more or active) and not self.fatal:
            while more and len(active) < window:
                item = next(source, None)
                more = item is not None
                if more:
                    active.append(self.new_job(item))
            if not active:
                break
            batch, prompts = self.screen(pick_batch(active, self.s.batch_size), active)
            if not batch:
                continue
            try:
                outs = self.call(batch, prompts)
            except EngineDead as exc:  # every job in flight fails with the cause; the run stops
                for job in active:
                    self.finish(job, error_text(exc))
                raise
            except Exception as exc:  # a failed call fails its records, not the run
                outs, failure, error = None, exc, error_text(exc)
            self.tally(None if outs is not None else failure)
            for i, job in enumerate(batch):
                if outs is None or self.advance(job, outs[i]):
                    self.finish(job, None if outs is not None else error)
                    active.remove(job)
        if self.fatal:
            raise self.fatal

    def screen(self, batch: list[Job], active: list[Job]) -> tuple[list[Job], list]:
        """The batch, and its prepared requests, without the jobs whose step does not fit the
        context (those fail here)."""
        keep, prompts = [], []
        for job, prompt in zip(batch, self.prepare(batch)):
            error = self.too_long(job, prompt)
            if error:
                self.finish(job, error)
                active.remove(job)
            else:
                keep.append(job)
                prompts.append(prompt)
        return keep, prompts

    def drive(self, job: Job, lock: threading.Lock) -> str | None:
        """Take one conversation through all its steps; its error, if a call failed."""
        while True:
            try:
                (prompt,) = self.prepare([job])
                too_long = self.too_long(job, prompt)
                if too_long:
                    return too_long
                out = self.call([job], [prompt])[0]
            except EngineDead as exc:
                self.fatal = self.fatal or exc
                return error_text(exc)
            except Exception as exc:  # a failed call fails its record, not the run
                with lock:
                    self.tally(exc)
                return error_text(exc)
            with lock:
                self.tally(None)
                if self.advance(job, out):
                    return None

    def run_streaming(self, items: Iterable[PromptItem], workers: int) -> None:
        """For engines that batch internally (vLLM, llama.cpp slots, HTTP servers): `workers`
        conversations in flight, each advancing step by step on its own, so a prompt's round 2
        never waits for another prompt's round 1 and the engine's batch stays full."""
        source, lock = iter(items), threading.Lock()
        head = list(islice(source, workers))  # no more threads than prompts
        queue = chain(head, source)  # taken one at a time under the lock: memory is what is in flight

        def worker() -> None:
            while True:
                with lock:
                    if self.fatal or self.stopped:
                        return
                    item = next(queue, None)
                    if item is None:
                        return
                    job = self.new_job(item)
                error = self.drive(job, lock)
                with lock:
                    self.finish(job, error)

        def guarded() -> None:
            """The one place a failure in a worker lands: outside a backend call (those fail their
            record in `drive`) nothing can be skipped safely, e.g. the prompt stream or a write
            failed, so the run stops with it, raised once by the main thread."""
            try:
                worker()
            except BaseException as exc:
                with lock:
                    self.fatal = self.fatal or stop_error(exc)

        run_threads(guarded, max(1, min(workers, len(head))), lock,
                    lambda: setattr(self, "stopped", True))  # nothing is written after an interrupt
        if self.fatal:
            raise self.fatal


def run_items(backend: Backend, constitution: Constitution, settings: Settings, items: Iterable[PromptItem],
              on_record: Callable[[Record], None], on_step: Callable[[], None] | None = None) -> None:
    """The scheduler that suits the engine: streaming where it batches internally. `items` may be
    a stream (taken as conversations finish); a stream's red-team prompts come first (generate's order)."""
    if isinstance(items, Sequence):
        red_team = any(it.kind != "helpful" for it in items)
    else:
        source = iter(items)
        first = next(source, None)
        if first is None:
            return
        red_team, items = first.kind != "helpful", chain([first], source)
    runner = Runner(backend, constitution, settings, on_record, on_step)
    if constitution.few_shots and settings.rounds and red_team:
        backend.share_prefix(runner.shared_prefix())
    try:
        if backend.concurrency:
            runner.run_streaming(items, backend.concurrency)
        else:
            runner.run(items)
    except Exception as exc:  # either scheduler: the same failure ends the run with the same error
        stop = stop_error(exc)
        if stop is exc:
            raise
        raise stop from exc


def pick_batch(active: list[Job], size: int) -> list[Job]:
    """Up to `size` jobs of the largest family (ties: the oldest job's family), oldest first."""
    families: dict[str, list[Job]] = {}
    for job in active:
        families.setdefault(job.family, []).append(job)
    best = max(families.values(), key=len)  # dicts keep insertion order: ties go to the oldest
    return best[:size]
