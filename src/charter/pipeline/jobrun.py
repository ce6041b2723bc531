"""What every resumable job shares around its engine work: a clean stop on Ctrl-C or SIGTERM, the
count of what it saved, a progress bar, and `ProgramJob`, the part of a job that drives its
programs through the scheduler on the backends it holds.

Signals: while a job runs in the main thread, SIGTERM (what `timeout`, Slurm, Kubernetes and
systemd send) stops it exactly as Ctrl-C does: finished work saved, the engine closed, then
Interrupted (exit code 128 + the signal: 130, 143). Only signals left at Python's defaults are
taken over, and only for the job: the previous handlers are back when the job returns.
"""
from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from typing import Any, Iterable

from charter.errors import CharterError
from charter.pipeline.scheduler import run_programs


class Interrupted(CharterError):
    """Ctrl-C or SIGTERM: the work finished so far is saved; nothing is written after this.
    exit_code: 128 + the signal's number (130 for Ctrl-C, 143 for SIGTERM), as a shell reports it."""

    exit_code = 130

    def __init__(self, message: str, signum: int = signal.SIGINT):
        super().__init__(message)
        self.exit_code = 128 + int(signum)


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


def ignore_ctrl_c() -> None:
    """After the first Ctrl-C (or SIGTERM): a second one must not break the clean-up with a
    traceback (stop_signals restores the handlers after the job)."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        if getattr(signal.getsignal(signal.SIGTERM), "charter_stop", False):  # ours: stop_signals
            signal.signal(signal.SIGTERM, signal.SIG_IGN)


def file_size(path) -> int:
    try:
        return os.path.getsize(path)
    except OSError:
        return 0


def lines_since(path, offset: int) -> int:
    """Complete lines appended to `path` after byte `offset`."""
    try:
        with open(path, "rb") as fh:
            fh.seek(offset)
            return sum(chunk.count(b"\n") for chunk in iter(lambda: fh.read(1 << 20), b""))
    except OSError:
        return 0


_PROGRESS = {"on": True}  # the process-wide switch (set_progress); each call's `progress` can only turn bars off


def set_progress(enabled: bool) -> None:
    """Turn Charter's progress bars (on stderr, or a notebook widget) on or off for the whole process,
    as transformers' disable_progress_bar() does for its own; a call's `progress=False` is per call."""
    _PROGRESS["on"] = bool(enabled)


def progress_enabled() -> bool:
    return _PROGRESS["on"]


def progress_bar(total: int, progress: bool, unit: str = "step"):
    """tqdm.auto (a widget in a notebook, text on stderr elsewhere); on a pipe or log file, a line
    every 30 s instead of redraws. Off when `progress` is False or set_progress(False) was called."""
    from tqdm.auto import tqdm

    tty = sys.stderr.isatty()
    return tqdm(total=total, unit=unit, disable=not (progress and progress_enabled()), dynamic_ncols=tty,
                mininterval=0.5 if tty else 30, leave=True, file=sys.stderr)


class ProgramJob:
    """A job's programs on its backends (role -> backend): `open` sets `backends` (and `own`, the
    ones it opened, closed by `close`); a subclass gives `program(item)` and `failed(item, error)`,
    the line of an item that failed. Picklable before `open`: a Ray worker opens its own."""

    cfg: Any

    def __init__(self) -> None:
        self.backends: dict[str, Any] = {}
        self.own: list = []

    def __getstate__(self) -> dict:
        return {**self.__dict__, "backends": {}, "own": []}

    def capacity(self) -> int:
        """Items an engine that batches internally keeps in flight (0: it batches per call)."""
        return min(int(b.concurrency or 0) for b in self.backends.values())

    def run(self, items: Iterable[Any], on_line=None) -> list[dict]:
        """Every item's line (a failed item's says why) to `on_line` as each finishes, else returned."""
        lines: list[dict] = []
        on_line = on_line or lines.append
        run_programs(self.backends, items, self.program,
                     lambda item, line, error: on_line(line if error is None else self.failed(item, error)),
                     batch_size=self.cfg.batch_size)
        return lines

    def close(self) -> None:
        own, self.own, self.backends = self.own, [], {}
        for backend in own:
            backend.close()

    def run_here(self, given: tuple, items: Iterable[Any], on_line, ready, count: int | None) -> None:
        """The job in this process, on the backends `given` or on ones opened for `count` items;
        `ready()` once they are open. Whatever ends the run, the engines opened here close."""
        self.open(count, *given)
        try:
            ready()
            self.run(items, on_line)
        except KeyboardInterrupt:
            ignore_ctrl_c()  # before closing the engine, which can take a few seconds
            raise
        finally:
            self.close()  # an engine's worker processes must not outlive the run


__all__ = ["Interrupted", "stop_signals", "ignore_ctrl_c", "file_size", "lines_since", "progress_bar",
           "set_progress", "progress_enabled", "ProgramJob"]
