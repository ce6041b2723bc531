"""One writer per run inside one process too: a second store (another thread, another generate
call) on a run this process holds is refused; a lock file with our PID that this process does
not hold (a container that reuses PIDs, a store dropped without closing) is taken over."""
from __future__ import annotations

import gc
import json
import os
import socket
import threading

import pytest

from charter.runs import lock
from charter.backends.fake import FakeBackend
from charter.errors import RunError
from charter.generate import GenerateConfig, generate
from charter.runs.store import LOCK, RunStore
from charter.runs.runread import load_run


def test_a_second_acquire_in_this_process_is_refused_while_the_first_holds(tmp_path):
    path = lock.acquire(tmp_path / LOCK)
    try:
        with pytest.raises(RunError, match="in use by this process"):
            lock.acquire(tmp_path / LOCK)
    finally:
        lock.release(path)
    again = lock.acquire(tmp_path / LOCK)  # released: free again
    lock.release(again)
    assert not (tmp_path / LOCK).exists()


def test_a_lock_with_our_pid_that_we_do_not_hold_is_taken_over(tmp_path):
    """An earlier process with the same PID (containers restart with the same PIDs) left it."""
    old = {"pid": os.getpid(), "host": socket.gethostname(), "started": "2020-01-01T00:00:00"}
    (tmp_path / LOCK).write_text(json.dumps(old))
    path = lock.acquire(tmp_path / LOCK)
    assert json.loads(path.read_text())["started"] != old["started"]
    lock.release(path)
    assert not path.exists()


def test_a_store_dropped_without_closing_frees_its_run(tmp_path):
    RunStore(tmp_path / "r").open({"rounds": 1}, "f")  # never closed, no reference kept
    gc.collect()
    with RunStore(tmp_path / "r") as store:
        store.open({"rounds": 1}, "f")


def test_a_closed_store_collected_later_leaves_the_next_holders_lock_alone(tmp_path):
    first = RunStore(tmp_path / "r")
    first.open({"rounds": 1}, "f")
    first.close()
    with RunStore(tmp_path / "r") as second:
        second.open({"rounds": 1}, "f")
        del first
        gc.collect()
        assert (tmp_path / "r" / LOCK).exists()
        with pytest.raises(RunError, match="in use by this process"):
            RunStore(tmp_path / "r").open({"rounds": 1}, "f")


def test_two_generate_calls_in_two_threads_on_one_run(tmp_path):
    """The second call is refused while the first runs; every record is written once."""
    started, go = threading.Event(), threading.Event()

    class Slow(FakeBackend):
        def chat(self, convos, sampling):
            started.set()
            go.wait(30)
            return super().chat(convos, sampling)

    cfg = GenerateConfig(backend="fake", limit=3, rounds=1, helpful_prompts="none", out=str(tmp_path / "run"))
    results = {}
    first = threading.Thread(target=lambda: results.setdefault("first", generate(cfg, backend=Slow(), progress=False)))
    first.start()
    try:
        assert started.wait(30)
        with pytest.raises(RunError, match="in use by this process"):
            generate(cfg, backend=FakeBackend(), progress=False)
    finally:
        go.set()
        first.join(60)
    assert results["first"].records == 3
    ids = [r.id for r in load_run(tmp_path / "run")]
    assert len(ids) == len(set(ids)) == 3
    assert not (tmp_path / "run" / LOCK).exists()
