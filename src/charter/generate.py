"""The CAI loop: respond -> (critique -> revise) x N, one record per prompt.

Conversations advance independently: a pool of in-flight jobs, each at its own step, and every
backend call takes the next step of up to `batch_size` jobs that share a prompt family (plain
answers vs. few-shot critique/revision), so engines can reuse the shared few-shot prefix. A
finished job is written at once and a new prompt takes its place.
"""
from __future__ import annotations

import hashlib
import threading
import time
from collections import deque
from dataclasses import dataclass, field, replace
from typing import Callable, Iterable, Sequence

from charter import templates
from charter.backends.base import Backend, EngineDead
from charter.constitution import draw_principle
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


@dataclass
class Job:
    item: PromptItem
    record: Record
    step: int = 0  # 0 = initial answer; then critique/revision steps
    critique: str | None = None  # this round's critique, once written
    t0: float = field(default_factory=time.time)

    @property
    def family(self) -> str:
        return "plain" if self.step == 0 else "few-shot"


def plan(item: PromptItem, s: Settings) -> list[str]:
    """The steps of one prompt: 'initial', then per round ['critique',] 'revise'."""
    if item.kind == "helpful":
        return ["initial"]
    per_round = ["critique", "revise"] if s.critique else ["revise"]
    return ["initial"] + per_round * s.rounds


class Runner:
    def __init__(self, backend: Backend, constitution: Constitution, settings: Settings,
                 on_record: Callable[[Record], None]):
        self.backend, self.c, self.s = backend, constitution, settings
        self.on_record = on_record
        self.calls = 0
        self.fatal: EngineDead | None = None  # set when the engine died: no new conversations start
        self.stopped = False  # set on interrupt: finished records are no longer written
        self.sampling = settings.sampling
        if settings.format == "text":  # turn boundaries end every step cleanly
            self.sampling = Sampling(**{**settings.sampling.to_dict(), "stop": tuple(settings.sampling.stop) + templates.TEXT_STOPS})

    def new_job(self, item: PromptItem) -> Job:
        rec = Record(id=item.id, kind=item.kind, prompt=list(item.messages), sample=item.sample, source=item.source,
                     model=self.backend.model_id, backend=self.backend.name, format=self.s.format,
                     sampling=self.sampling.to_dict(), tokens={"prompt": 0, "completion": 0})
        return Job(item, rec)

    def step_name(self, job: Job) -> str:
        return plan(job.item, self.s)[job.step]

    def round_index(self, job: Job) -> int:
        return (job.step - 1) // (2 if self.s.critique else 1)

    def current_answer(self, job: Job) -> str:
        return job.record.rounds[-1].revision if job.record.rounds else (job.record.initial or "")

    def request(self, job: Job):
        name, prompt = self.step_name(job), job.item.messages
        text = self.s.format == "text"
        if name == "initial":
            return templates.text_initial(prompt) if text else templates.chat_initial(prompt)
        p = draw_principle(self.c, self.s.seed, job.item.id, self.round_index(job))
        shots, past = self.c.few_shots, self.past(job)
        answer = (job.record.initial or "") if past else self.current_answer(job)
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
        """Apply one completion; True when the job is finished."""
        name, text = self.step_name(job), out.text.strip()
        job.record.tokens["prompt"] += out.prompt_tokens
        job.record.tokens["completion"] += out.completion_tokens
        if name == "initial":
            job.record.initial = text
        elif name == "critique":
            job.critique = text
        else:
            pid = draw_principle(self.c, self.s.seed, job.item.id, self.round_index(job)).id
            job.record.rounds.append(Round(pid, job.critique, text))
            job.critique = None
        job.step += 1
        return job.step >= len(plan(job.item, self.s))

    def finish(self, job: Job, error: str | None = None) -> None:
        if self.stopped:
            return
        rec = job.record
        rec.error = error
        rec.final = None if error else self.current_answer(job)
        rec.timings = {"seconds": round(time.time() - job.t0, 3), "finished": round(time.time(), 3)}
        self.on_record(rec)

    def call(self, batch: Sequence[Job]) -> list[Completion]:
        requests = [self.request(j) for j in batch]
        sampling = replace(self.sampling, seed=self.call_seed(batch))
        if self.s.format == "text":
            return self.backend.complete(requests, sampling)
        return self.backend.chat(requests, sampling)

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
        queue, active = deque(items), []
        window = 2 * self.s.batch_size  # enough jobs in flight to fill a batch of one family
        while queue or active:
            while queue and len(active) < window:
                active.append(self.new_job(queue.popleft()))
            batch = pick_batch(active, self.s.batch_size)
            try:
                outs = self.call(batch)
            except EngineDead as exc:  # every job in flight fails with the cause; the run stops
                for job in active:
                    self.finish(job, f"{type(exc).__name__}: {exc}")
                raise
            except Exception as exc:  # a failed call fails its records, not the run
                outs, error = None, f"{type(exc).__name__}: {exc}"
            for i, job in enumerate(batch):
                if outs is None or self.advance(job, outs[i]):
                    self.finish(job, None if outs is not None else error)
                    active.remove(job)

    def drive(self, job: Job, lock: threading.Lock) -> str | None:
        """Take one conversation through all its steps; its error, if a call failed."""
        while True:
            try:
                out = self.call([job])[0]
            except EngineDead as exc:
                self.fatal = self.fatal or exc
                return f"{type(exc).__name__}: {exc}"
            except Exception as exc:  # a failed call fails its record, not the run
                return f"{type(exc).__name__}: {exc}"
            with lock:
                if self.advance(job, out):
                    return None

    def run_streaming(self, items: Iterable[PromptItem], workers: int) -> None:
        """For engines that batch internally (vLLM, llama.cpp slots, HTTP servers): `workers`
        conversations in flight, each advancing step by step on its own, so a prompt's round 2
        never waits for another prompt's round 1 and the engine's batch stays full."""
        queue, lock = deque(items), threading.Lock()

        def worker() -> None:
            while True:
                with lock:
                    if not queue or self.fatal or self.stopped:
                        return
                    job = self.new_job(queue.popleft())
                error = self.drive(job, lock)
                with lock:
                    self.finish(job, error)

        threads = [threading.Thread(target=worker, daemon=True) for _ in range(max(1, workers))]
        for t in threads:
            t.start()
        try:
            for t in threads:
                while t.is_alive():
                    t.join(0.2)  # short waits: Ctrl-C reaches the main thread at once
        except BaseException:
            self.stopped = True  # nothing is written after an interrupt
            raise
        if self.fatal:
            raise self.fatal


def pick_batch(active: list[Job], size: int) -> list[Job]:
    """Up to `size` jobs of the largest family (ties: the oldest job's family), oldest first."""
    families: dict[str, list[Job]] = {}
    for job in active:
        families.setdefault(job.family, []).append(job)
    best = max(families.values(), key=len)  # dicts keep insertion order: ties go to the oldest
    return best[:size]


# ---- the `charter generate` job: config -> items -> runner -> store ---------------------------


@dataclass
class Summary:
    records: int = 0
    failures: int = 0
    skipped: int = 0
    tokens: int = 0
    seconds: float = 0.0

    def line(self) -> str:
        rate = self.tokens / self.seconds if self.seconds else 0.0
        return (f"{self.records} records written ({self.failures} failed), {self.skipped} already done; "
                f"{self.tokens} tokens generated in {self.seconds:.1f}s ({rate:.1f} tok/s)")


def resolve_items(cfg) -> list[PromptItem]:
    from charter.prompts import load_prompts

    items = load_prompts(cfg.prompts, "red_team", cfg.prompt_field, cfg.limit)
    if cfg.helpful_prompts != "none" and cfg.helpful_samples > 0:
        items += load_prompts(cfg.helpful_prompts, "helpful", cfg.prompt_field, cfg.limit, cfg.helpful_samples)
    return items


def settings_from(cfg) -> Settings:
    sampling = Sampling(max_tokens=cfg.max_tokens, temperature=cfg.temperature, top_p=cfg.top_p, seed=cfg.seed)
    return Settings(cfg.rounds, cfg.critique, cfg.format, cfg.seed, cfg.batch_size, sampling, cfg.context)


def generate(cfg, backend: Backend | None = None, force: bool = False, progress: bool = True) -> Summary:
    """Run (or resume) a generation job described by a GenerateConfig."""
    import json

    from tqdm import tqdm

    from charter.constitution import load_constitution
    from charter.store import RunStore

    constitution = load_constitution(cfg.constitution, cfg.few_shot)
    items = resolve_items(cfg)
    store = RunStore(cfg.out)
    parts = {"constitution": str(constitution.principles), "few-shot": str(constitution.few_shots)}
    store.open(cfg.to_dict(), cfg.fingerprint(json.dumps(list(parts.values()))), force, parts=parts)
    done = store.done_ids()
    todo = [it for it in items if it.id not in done]
    summary = Summary(skipped=len(items) - len(todo))
    if not todo:
        return summary
    bar = tqdm(total=len(todo), unit="rec", disable=not progress, dynamic_ncols=True)
    t0 = time.time()

    def on_record(rec: Record) -> None:
        store.append(rec)
        summary.records += 1
        summary.failures += rec.error is not None
        summary.tokens += rec.tokens.get("completion", 0)
        bar.update(1)
        bar.set_postfix_str(f"{summary.tokens / max(time.time() - t0, 1e-9):.0f} tok/s", refresh=False)

    try:
        if cfg.executor == "ray":
            from charter.ray_executor import run_on_ray

            run_on_ray(cfg, constitution, settings_from(cfg), todo, on_record)
        else:
            run_local(cfg, backend, constitution, todo, on_record)
    finally:
        bar.close()
        summary.seconds = time.time() - t0
    return summary


def run_local(cfg, backend: Backend | None, constitution: Constitution, todo: list[PromptItem],
              on_record: Callable[[Record], None]) -> None:
    import sys

    from charter.backends import AUTO, create_backend, resolve_backend

    own = backend is None
    if own:
        name = resolve_backend(cfg.backend, cfg.model)
        if cfg.backend == AUTO:
            print(f"backend auto -> {name} ({'vLLM imports here' if name == 'vllm' else 'no vLLM here'})",
                  file=sys.stderr)
        backend = create_backend(name, cfg.model, **cfg.backend_options)
    try:
        run_items(backend, constitution, settings_from(cfg), todo, on_record)
    finally:
        if own:
            backend.close()  # an engine's worker processes must not outlive the run


def run_items(backend: Backend, constitution: Constitution, settings: Settings, items: list[PromptItem],
              on_record: Callable[[Record], None]) -> None:
    """The scheduler that suits the engine: streaming where it batches internally."""
    runner = Runner(backend, constitution, settings, on_record)
    share = getattr(backend, "share_prefix", None)  # optional: engines with per-slot KV
    if share and constitution.few_shots and settings.rounds and any(it.kind != "helpful" for it in items):
        share(runner.shared_prefix())
    workers = getattr(backend, "concurrency", None)
    runner.run_streaming(items, workers) if workers else runner.run(items)
