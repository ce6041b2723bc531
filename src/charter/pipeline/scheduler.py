"""Every job that runs a model, as programs of engine steps on one scheduler.

A *program* is a generator that handles one unit of work (a prompt to label, a pair to judge, an
answer to score). It yields a list of steps (`Sample` a turn, `Choice` among options, `Logprob`
of a continuation) and receives their results, in order:

    def program(item):
        answers = yield [Sample(item.messages, sampling)] * 2          # -> [Completion, Completion]
        logps = yield [Choice(question(answers), ("(A)", "(B)"))]      # -> [[logp_A, logp_B]]
        return {"id": item.id, "score": softmax(logps[0])[0]}

`run_programs` drives many programs through backends the way each engine runs fastest, and
hands each program's return value (or its error) to `on_done` the moment it finishes:

- Engines that batch internally (vLLM, llama.cpp slots, servers: `backend.concurrency`) get that
  many programs in flight, each on its own thread, each sending its next steps the moment its last
  ones return, so answers of one unit overlap the scoring of another and the engine's batch stays full.
- Engines that batch per call (transformers) get batches of up to `batch_size` like steps
  gathered across the programs in flight.

Items are taken from `items` lazily, as programs finish: memory is what is in flight.
A failed step fails its program (its error is handed to `on_done`), not the run; an engine that
died, an error raised by `on_done` (a full disk) or a stream of identical failures stops the run.
"""
from __future__ import annotations

import hashlib
import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from itertools import chain, islice
from typing import Any, Callable, Generator, Hashable, Iterable, Iterator, Mapping, Sequence

from charter.backends.base import Backend, EngineDead, Request
from charter.errors import BackendError, failure_kind, stop_error
from charter.redact import error_text
from charter.types import Sampling

MAIN = "main"  # the backend a step runs on unless it names another


@dataclass(frozen=True)
class Sample:
    """Generate one turn: `request` is a conversation (the backend applies the chat template) or,
    with text=True, raw text continued as is. Result: a charter.types.Completion."""

    request: Request
    sampling: Sampling
    text: bool = False
    backend: str = MAIN


@dataclass(frozen=True)
class Choice:
    """A multiple-choice question: the log-prob of each option as the continuation of `context`.
    Result: a list of floats, one per option (Backend.choose)."""

    context: Request
    options: tuple[str, ...]
    backend: str = MAIN


@dataclass(frozen=True)
class Logprob:
    """The log-probability of `continuation` after `context` (Backend.score: a message-list context
    takes it as the next assistant turn). Result: a charter.types.Score (sum and per token)."""

    context: Request
    continuation: str
    backend: str = MAIN


Step = Sample | Choice | Logprob
Program = Generator[Sequence[Step], list, Any]
OnDone = Callable[[Any, Any, "str | None"], None]  # (item, result or None, error or None)

# Stop a run whose first this-many steps all failed the same way (a server that is down, a wrong
# model name): every further request would fail that way too.
STOP_AFTER_SAME_FAILURES = 8


def seeded(sampling: Sampling, key: str) -> Sampling:
    """`sampling` with a seed of its own for the step named `key`, derived from sampling.seed, so
    a streamed run samples the same whatever order its steps reach the engine in (None stays None)."""
    if sampling.seed is None:
        return sampling
    digest = hashlib.sha256(f"{sampling.seed}:{key}".encode()).digest()
    return replace(sampling, seed=int.from_bytes(digest[:4], "big") >> 1)


class Failures:
    """Counts request outcomes; `fatal` is set once the run must stop (every scheduler's guard)."""

    def __init__(self) -> None:
        self.ok, self.kinds, self.fatal = 0, Counter(), None
        self.first: dict[str, str] = {}

    def tally(self, exc: BaseException | None) -> None:
        if exc is None:
            self.ok += 1
            return
        kind = failure_kind(exc)
        self.kinds[kind] += 1
        self.first.setdefault(kind, error_text(exc))
        failed = sum(self.kinds.values())
        if self.ok == 0 and len(self.kinds) == 1 and failed >= STOP_AFTER_SAME_FAILURES and self.fatal is None:
            self.fatal = BackendError(f"the first {failed} requests all failed with: {self.first[kind]}; stopped the "
                                      "run. Fix the cause, then run the same command again to retry what failed")


def call(backends: Mapping[str, Backend], steps: Sequence[Step]) -> list:
    """Run `steps` on their backends, like steps together in one call each; results in order.
    Engines that batch internally get every call at once (steps that differ in their seed, e.g.
    a prompt's answers, are separate calls, and must not wait for one another)."""
    results: list = [None] * len(steps)
    groups = list(group(steps).items())

    def one(key: Hashable, idx: list[int]) -> None:
        kind, name = key[0], key[1]
        backend = backends[name]
        if kind == "choice":
            got = backend.choose([steps[i].context for i in idx], [steps[i].options for i in idx])
        elif kind == "logprob":
            got = backend.score([steps[i].context for i in idx], [steps[i].continuation for i in idx])
        else:
            sampling = key[2]
            fn = backend.complete if key[3] else backend.chat
            got = fn([steps[i].request for i in idx], sampling)
        if len(got) != len(idx):
            raise BackendError(f"backend '{backend.name}' returned {len(got)} results for {len(idx)} requests")
        for i, r in zip(idx, got):
            results[i] = r

    if len(groups) > 1 and all(backends[key[1]].concurrency for key, _ in groups):
        with ThreadPoolExecutor(len(groups)) as pool:
            for done in [pool.submit(one, key, idx) for key, idx in groups]:
                done.result()  # the first failure, once every call has returned
    else:
        for key, idx in groups:
            one(key, idx)
    return results


def drive(backends: Backend | Mapping[str, Backend], prog: Program) -> Any:
    """One program run to its end, each of its yields one `call`: its return value (a failure raises)."""
    if isinstance(backends, Backend):
        backends = {MAIN: backends}
    try:
        steps = next(prog)
        while True:
            steps = prog.send(call(backends, steps))
    except StopIteration as stop:
        return stop.value


def group(steps: Sequence[Step]) -> dict[Hashable, list[int]]:
    """Indices of the steps that go into one backend call, by (kind, backend, sampling, text)."""
    out: dict[Hashable, list[int]] = {}
    for i, s in enumerate(steps):
        if isinstance(s, Sample):
            key: Hashable = ("sample", s.backend, s.sampling, s.text)
        else:
            key = ("choice" if isinstance(s, Choice) else "logprob", s.backend)
        out.setdefault(key, []).append(i)
    return out


def run_programs(backends: Backend | Mapping[str, Backend], items: Iterable, program: Callable[[Any], Program],
                 on_done: OnDone, batch_size: int = 16, on_step: Callable[[int], None] | None = None) -> None:
    """Drive `program(item)` for every item; `on_done(item, result, error)` as each finishes.
    `on_step(n)` after every n steps answered (progress)."""
    if isinstance(backends, Backend):
        backends = {MAIN: backends}
    engines = list({id(b): b for b in backends.values()}.values())
    driver = _Streaming if all(b.concurrency for b in engines) else _Batched
    width = min(b.concurrency for b in engines) if driver is _Streaming else batch_size
    driver(backends, program, on_done, on_step or (lambda n: None)).run(iter(items), width)


def run_threads(target: Callable[[], None], n: int, lock: threading.Lock, on_interrupt: Callable[[], None]) -> None:
    """`n` daemon threads running `target`, joined in short waits so that Ctrl-C reaches the main
    thread at once. On an interrupt: `on_interrupt()`, then the lock taken once, so that a result
    being written at that moment is complete before the interrupt goes on."""
    threads = [threading.Thread(target=target, daemon=True) for _ in range(n)]
    for t in threads:
        t.start()
    try:
        for t in threads:
            while t.is_alive():
                t.join(0.2)
    except BaseException:
        on_interrupt()
        with lock:
            pass
        raise


class _Driver:
    def __init__(self, backends, program, on_done: OnDone, on_step) -> None:
        self.backends, self.program, self.on_done, self.on_step = backends, program, on_done, on_step
        self.failures = Failures()
        self.lock = threading.Lock()

    def start(self, item) -> tuple[Program, Sequence[Step] | None]:
        """A new program and its first steps (None: it finished without a step)."""
        prog = self.program(item)
        return prog, self.advance(item, prog, None)

    def advance(self, item, prog: Program, results: list | None) -> Sequence[Step] | None:
        """Send `results` into the program: its next steps, or None once it has finished (and
        on_done has been called)."""
        try:
            steps = next(prog) if results is None else prog.send(results)
        except StopIteration as stop:
            self.done(item, stop.value, None)
            return None
        except Exception as exc:  # the program's own logic failed on this item: its row says why
            self.done(item, None, error_text(exc))
            return None
        if not steps:
            raise BackendError("a program yielded no steps; yield at least one step or return")
        return steps

    def done(self, item, result, error: str | None) -> None:
        self.on_done(item, result, error)


class _Streaming(_Driver):
    """Programs on worker threads, each sending its next steps as soon as it has them."""

    def run(self, items: Iterator, width: int) -> None:
        head = list(islice(items, width))  # no more threads than items
        queue = chain(head, items)
        self.stopped = False
        run_threads(lambda: self.worker(queue), max(1, min(width, len(head))), self.lock,
                    lambda: setattr(self, "stopped", True))  # nothing is handed on after an interrupt
        if self.failures.fatal is not None:
            raise self.failures.fatal

    def worker(self, queue: Iterator) -> None:
        try:
            while True:
                with self.lock:
                    if self.failures.fatal is not None or self.stopped:
                        return
                    item = next(queue, None)
                if item is None:
                    return
                self.run_one(item)
        except BaseException as exc:  # the item stream, on_done (disk full), a bug: the run stops, said once
            with self.lock:
                if self.failures.fatal is None:
                    self.failures.fatal = stop_error(exc) if isinstance(exc, Exception) else exc

    def run_one(self, item) -> None:
        with self.lock:
            prog, steps = self.start(item)
        while steps is not None:
            try:
                results = call(self.backends, steps)
            except EngineDead as exc:
                with self.lock:
                    self.failures.fatal = self.failures.fatal or exc
                    self.done(item, None, error_text(exc))
                return
            except Exception as exc:  # a failed request fails this item, not the run
                with self.lock:
                    self.failures.tally(exc)
                    self.done(item, None, error_text(exc))
                prog.close()
                return
            with self.lock:
                self.failures.tally(None)
                self.on_step(len(steps))
                steps = self.advance(item, prog, results)

    def done(self, item, result, error: str | None) -> None:
        if not self.stopped:
            self.on_done(item, result, error)


@dataclass(eq=False)  # identity: one per program in flight
class _Active:
    item: Any
    prog: Program
    steps: Sequence[Step]
    results: list
    left: int  # steps not yet answered


class _Batched(_Driver):
    """Up to `2 * width` programs in flight; each call takes up to `width` like steps across them."""

    def run(self, items: Iterator, width: int) -> None:
        active: list[_Active] = []
        more = True
        while (more or active) and self.failures.fatal is None:
            while more and len(active) < 2 * width:
                item = next(items, None)
                more = item is not None
                if more:
                    self.take(item, active)
            if active:
                self.call_batch(active, width)
        if self.failures.fatal is not None:
            raise self.failures.fatal

    def take(self, item, active: list[_Active]) -> None:
        prog, steps = self.start(item)
        if steps is not None:
            active.append(_Active(item, prog, steps, [None] * len(steps), len(steps)))

    def call_batch(self, active: list[_Active], width: int) -> None:
        """One backend call on the largest group of like pending steps (oldest first)."""
        pending: dict[Hashable, list[tuple[_Active, int]]] = {}
        for a in active:
            for key, idx in group(a.steps).items():
                pending.setdefault(_unseeded(key), []).extend((a, i) for i in idx if a.results[i] is None)
        batch = max(pending.values(), key=len)[:width]
        steps = _one_seed([a.steps[i] for a, i in batch])
        try:
            results = call(self.backends, steps)
        except EngineDead:
            for a in active:
                self.done(a.item, None, "the engine died")
            raise
        except Exception as exc:  # a failed call fails the items of its steps, not the run
            self.failures.tally(exc)
            for a in dict.fromkeys(a for a, _ in batch):
                self.done(a.item, None, error_text(exc))
                a.prog.close()
                active.remove(a)
            return
        self.failures.tally(None)
        self.on_step(len(batch))
        self.deliver(batch, results, active)

    def deliver(self, batch, results: list, active: list[_Active]) -> None:
        for (a, i), r in zip(batch, results):
            a.results[i] = _Answered(r)
            a.left -= 1
        for a in dict.fromkeys(a for a, _ in batch):
            if a.left:
                continue
            steps = self.advance(a.item, a.prog, [r.value for r in a.results])
            if steps is None:
                active.remove(a)
            else:
                a.steps, a.results, a.left = steps, [None] * len(steps), len(steps)


@dataclass(frozen=True)
class _Answered:
    value: Any  # a result, boxed so that a None result still counts as answered


def _unseeded(key: Hashable) -> Hashable:
    """Steps that differ only in their seed go into one batched call (which gets its own seed).
    Built from the fields, not with dataclasses.replace: it runs for every pending step per call."""
    if key[0] == "sample":
        s = key[2]
        return (*key[:2], s.max_tokens, s.temperature, s.top_p, s.stop, s.logprobs, key[3], s.seed is None)
    return key


def _one_seed(steps: list[Step]) -> list[Step]:
    """A batched call is seeded once, by its first step's seed (rows get seed + row in the engine)."""
    first = steps[0]
    if not isinstance(first, Sample):
        return steps
    return [replace(s, sampling=first.sampling) for s in steps]


__all__ = ["Sample", "Choice", "Logprob", "Step", "Program", "run_programs", "seeded", "call", "drive", "failure_kind", "MAIN"]
