"""`charter generate`: config -> prompts -> pipeline (on a backend, locally or on Ray) -> run store.

The loop itself and its schedulers live in pipeline.py; this module wires a job around them:
resume, progress, the summary, a clean stop on Ctrl-C, SIGTERM or a dead engine.

Signals: while a job runs in the main thread, SIGTERM (what `timeout`, Slurm, Kubernetes and
systemd send) stops it exactly as Ctrl-C does: finished records saved, the engine closed, then
Interrupted (exit code 128 + the signal: 130, 143). Only signals left at Python's defaults are
taken over, and only for the job: the previous handlers are back when generate() returns.
"""
from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

from charter.backends.base import Backend
from charter.errors import CharterError
from charter.pipeline import Settings, plan, run_items
from charter.workload import RateLog, completion_key, iter_items, project
from charter.types import Constitution, PromptItem, Record, Sampling

log = logging.getLogger("charter.generate")


class Interrupted(CharterError):
    """Ctrl-C or SIGTERM: the records finished so far are saved; nothing is written after this.
    exit_code: 128 + the signal's number (130 for Ctrl-C, 143 for SIGTERM), as a shell reports it."""

    exit_code = 130

    def __init__(self, message: str, signum: int = signal.SIGINT):
        super().__init__(message)
        self.exit_code = 128 + int(signum)


@dataclass
class Summary:
    records: int = 0
    failures: int = 0
    skipped: int = 0
    tokens: int = 0
    seconds: float = 0.0
    errors: Counter = field(default_factory=Counter)  # distinct error -> records

    def line(self) -> str:
        rate = self.tokens / self.seconds if self.seconds else 0.0
        text = (f"{self.records} records written ({self.failures} failed), {self.skipped} already done; "
                f"{self.tokens} tokens generated in {self.seconds:.1f}s ({rate:.1f} tok/s)")
        for error, n in self.errors.most_common(3):
            text += f"\n  {n} record{'s' if n > 1 else ''} failed: {error}"
        if len(self.errors) > 3:
            text += f"\n  ... and {len(self.errors) - 3} other errors (see the records' `error` field)"
        return text


def resolve_items(cfg) -> list[PromptItem]:
    """Every prompt of the run, in memory (generate itself streams them: charter.workload.iter_items)."""
    from charter.workload import iter_items

    return list(iter_items(cfg))


def settings_from(cfg) -> Settings:
    sampling = Sampling(max_tokens=cfg.max_tokens, temperature=cfg.temperature, top_p=cfg.top_p, seed=cfg.seed)
    return Settings(cfg.rounds, cfg.critique, cfg.format, cfg.seed, cfg.batch_size, sampling, cfg.context)


def generate(cfg, backend: Backend | None = None, force: bool = False, progress: bool = True) -> Summary:
    """Run (or resume) a generation job described by a GenerateConfig."""
    import json

    from charter.backends import check_backend_name
    from charter.constitution import load_constitution
    from charter.store import RunStore

    cfg.validate()  # a config built in Python gets the same checks as one loaded from YAML and flags
    check_backend_name(cfg.backend)  # before anything is written (config.py does not know the backends)
    constitution = load_constitution(cfg.constitution, cfg.few_shot)
    settings = settings_from(cfg)
    resuming = (Path(cfg.out) / "records.jsonl").is_file()  # only then are done prompts counted out
    parts = {"constitution": str(constitution.principles), "few-shot": str(constitution.few_shots)}
    fingerprint = cfg.fingerprint(json.dumps(list(parts.values())))
    key = completion_key(cfg, fingerprint)
    with RunStore(cfg.out) as store:  # holds the run's lock until the job ends
        finished = store.finished(key) if resuming and key and not force else None
        if finished is not None:  # marked complete, nothing changed since: neither prompts nor records read
            log.info("nothing to do: all %s prompts done", f"{finished:,}")
            return Summary(skipped=finished)
        projection = project(cfg, settings, keys=resuming)  # reads (and checks) the prompts before anything is written
        store.open(stored_config(cfg), fingerprint, force, parts=parts, ignore=cfg.NON_RESULT_KEYS)
        done = store.done_ids()
        projection.resume(done)
        log.info("%s", projection.line())
        summary = Summary(skipped=projection.skipped)
        if projection.prompts:
            todo = (it for it in iter_items(cfg) if it.id not in done)  # streamed: memory is what is in flight
            run_job(cfg, backend, constitution, todo, store, summary, progress, projection.requests)
        if key and not summary.failures and summary.records == projection.prompts:
            store.mark_complete(key, projection.skipped + projection.prompts)
    return summary


def stored_config(cfg) -> dict:
    """The config as config.yaml keeps it: credentials in backend options (a key in base_url,
    api_key) masked. The fingerprint still hashes the values in use."""
    from charter.redact import redact

    data = cfg.to_dict()
    if data.get("backend_options"):
        data["backend_options"] = redact(data["backend_options"])
    return data


def run_job(cfg, backend, constitution, todo: Iterable[PromptItem], store, summary: Summary, progress: bool,
            total: int | None = None) -> None:
    """The pipeline over `todo`, each record appended as it finishes; a bar that moves per step
    (`total`: the steps `todo` takes, counted by the caller when `todo` is a stream)."""
    settings = settings_from(cfg)
    if total is None:
        todo = list(todo)
        total = total_steps(todo, settings)
    bar = progress_bar(total, progress)
    rate = RateLog(total)
    t0 = time.time()
    start = _size(store.records_path)

    def on_record(rec: Record) -> None:
        store.append(rec)
        summary.records += 1
        summary.tokens += rec.tokens.get("completion", 0)
        if rec.error is not None:
            summary.failures += 1
            summary.errors[rec.error] += 1
        bar.set_postfix_str(f"{summary.records} rec, {summary.tokens / max(time.time() - t0, 1e-9):.0f} tok/s",
                            refresh=False)

    with stop_signals() as got:
        try:
            if cfg.executor == "ray":
                from charter.ray_executor import run_on_ray

                run_on_ray(cfg, constitution, settings, todo,
                           lambda r: (on_record(r), bar.update(steps_of(r, settings)), rate.step(steps_of(r, settings))),
                           total)
            else:
                run_local(cfg, backend, constitution, settings, todo, on_record, lambda: (bar.update(1), rate.step()),
                          total)
        except KeyboardInterrupt:
            ignore_ctrl_c()
            # What is in the file: a record may be appended between a write and its count.
            summary.records = _lines_since(store.records_path, start)
            raise Interrupted(f"interrupted: {summary.records} records saved in {cfg.out} this run; "
                              "run the same command again to resume", got.get("signal", signal.SIGINT)) from None
        finally:
            bar.close()
            summary.seconds = time.time() - t0


@contextlib.contextmanager
def stop_signals():
    """In the main thread: SIGTERM raises KeyboardInterrupt like Ctrl-C (and which one came is
    noted in the yielded dict), for SIGINT/SIGTERM still at Python's defaults; all handlers are
    restored after. Elsewhere (a worker thread) nothing changes."""
    got: dict[str, int] = {}
    if threading.current_thread() is not threading.main_thread():
        yield got
        return

    def stop(signum, _frame) -> None:
        got["signal"] = signum
        raise KeyboardInterrupt

    stop.charter_stop = True

    previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    for sig, handler in previous.items():
        if handler in (signal.SIG_DFL, signal.default_int_handler):
            signal.signal(sig, stop)
    try:
        yield got
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _size(path) -> int:
    try:
        return os.path.getsize(path)
    except OSError:
        return 0


def _lines_since(path, offset: int) -> int:
    """Complete lines appended to `path` after byte `offset`."""
    try:
        with open(path, "rb") as fh:
            fh.seek(offset)
            return sum(chunk.count(b"\n") for chunk in iter(lambda: fh.read(1 << 20), b""))
    except OSError:
        return 0


def ignore_ctrl_c() -> None:
    """After the first Ctrl-C (or SIGTERM): a second one must not break the clean-up with a
    traceback (stop_signals restores the handlers after the job)."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        if getattr(signal.getsignal(signal.SIGTERM), "charter_stop", False):  # ours: stop_signals
            signal.signal(signal.SIGTERM, signal.SIG_IGN)


def total_steps(todo: Iterable[PromptItem], settings: Settings) -> int:
    """Requests the pipeline will make for `todo` (all rounds run)."""
    return sum(len(plan(it, settings)) for it in todo)


def steps_of(rec: Record, settings: Settings) -> int:
    return 1 + len(rec.rounds) * (2 if settings.critique else 1) if rec.kind == "red_team" else 1


def progress_bar(total: int, progress: bool):
    """tqdm on a terminal; on a pipe or log file, a line every 30 s instead of redraws."""
    from tqdm import tqdm

    tty = sys.stderr.isatty()
    return tqdm(total=total, unit="step", disable=not progress, dynamic_ncols=tty, mininterval=0.5 if tty else 30,
                leave=True, file=sys.stderr)


def run_local(cfg, backend: Backend | None, constitution: Constitution, settings: Settings, todo: Iterable[PromptItem],
              on_record: Callable[[Record], None], on_step: Callable[[], None] | None = None,
              workload: int | None = None) -> None:
    """The pipeline in this process, on `backend` or on one made for the run (`workload`: its
    request count, which the backend may size its settings to)."""
    from charter.backends import AUTO, auto_choice, create_backend

    own = backend is None
    if own:
        name = cfg.backend
        if name == AUTO:  # a short run goes to the engine that starts fastest
            name, why = auto_choice(cfg.model, None if workload is None else workload * cfg.max_tokens)
            log.info("backend auto -> %s (%s)", name, why)
        backend = create_backend(name, cfg.model, workload=workload, **cfg.backend_options)
    try:
        run_items(backend, constitution, settings, todo, on_record, on_step)
    except KeyboardInterrupt:
        ignore_ctrl_c()  # before closing the engine, which can take a few seconds
        raise
    finally:
        if own:
            backend.close()  # an engine's worker processes must not outlive the run
