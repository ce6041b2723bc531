"""generate: SIGTERM stops a job like Ctrl-C (the library's handlers only while the job runs), the
interrupt message counts exactly what is on disk, and no credential reaches a record or config.yaml."""
from __future__ import annotations

import os
import signal
import threading

import pytest

from charter.backends.fake import FakeBackend
from charter.generate import GenerateConfig
from charter.inputs.constitution import load_constitution
from charter.generate import Interrupted, generate
from charter.pipeline.cai import Runner, Settings
from charter.runs.store import RunStore
from charter.runs.runread import load_run
from charter.types import PromptItem

KEY = "sk-live-0123456789abcdef"


def cfg(tmp_path, **kw):
    base = dict(backend="fake", limit=4, rounds=1, helpful_prompts="none", out=str(tmp_path / "run"))
    return GenerateConfig(**{**base, **kw})


def test_sigterm_stops_the_job_like_ctrl_c_and_handlers_come_back(tmp_path, default_sigterm):
    before = signal.getsignal(signal.SIGTERM)

    class Terminated(FakeBackend):
        def chat(self, convos, sampling):
            if len(self.calls) == 6:  # a record or two finished: SIGTERM, as `timeout` sends it
                os.kill(os.getpid(), signal.SIGTERM)
            return super().chat(convos, sampling)

    with pytest.raises(Interrupted) as info:
        generate(cfg(tmp_path, batch_size=1), backend=Terminated(), progress=False)
    assert info.value.exit_code == 143
    saved = len(load_run(tmp_path / "run"))
    assert 1 <= saved < 4 and str(info.value).startswith(f"interrupted: {saved} records saved")
    assert signal.getsignal(signal.SIGTERM) == before
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_a_callers_own_sigterm_handler_is_left_alone(tmp_path):
    seen = []
    previous = signal.signal(signal.SIGTERM, lambda *a: seen.append(a[0]))
    try:
        class Terminated(FakeBackend):
            def chat(self, convos, sampling):
                if not self.calls:
                    os.kill(os.getpid(), signal.SIGTERM)
                return super().chat(convos, sampling)

        summary = generate(cfg(tmp_path), backend=Terminated(), progress=False)
        assert summary.records == 4 and seen == [signal.SIGTERM]
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_the_interrupt_count_is_what_the_file_holds(tmp_path, monkeypatch):
    """Ctrl-C landing just after a record was written (before it was counted): still counted."""
    append = RunStore.append
    written = []

    def append_then_ctrl_c(self, record):
        append(self, record)
        written.append(record.id)
        if len(written) == 3:
            raise KeyboardInterrupt

    monkeypatch.setattr(RunStore, "append", append_then_ctrl_c)
    with pytest.raises(Interrupted) as info:
        generate(cfg(tmp_path), backend=FakeBackend(), progress=False)
    lines = (tmp_path / "run" / "records.jsonl").read_text().count("\n")
    assert lines == 3 and str(info.value).startswith("interrupted: 3 records saved")


def test_streaming_interrupt_waits_for_the_record_being_written(monkeypatch):
    """The streaming scheduler stops with a record half-written by a worker: that record is
    finished (and counted) before the job reports, and nothing is written after."""
    writing, release, written = threading.Event(), threading.Event(), []

    def on_record(rec):
        writing.set()
        release.wait(5)
        written.append(rec.id)

    class Streaming(FakeBackend):
        concurrency = 2

    runner = Runner(Streaming(), load_constitution(), Settings(rounds=0), on_record)
    items = [PromptItem(id=f"p{i}", kind="red_team", messages=[{"role": "user", "content": f"q{i}"}])
             for i in range(6)]
    timer = threading.Timer(0.3, release.set)

    def interrupt():
        writing.wait(5)
        timer.start()
        raise KeyboardInterrupt

    class Joiner(threading.Thread):
        def join(self, timeout=None):
            interrupt()

    monkeypatch.setattr(threading, "Thread", Joiner)  # Ctrl-C reaches the main thread in join()
    with pytest.raises(KeyboardInterrupt):
        runner.run_streaming(items, 2)
    monkeypatch.undo()
    count = len(written)
    assert count >= 1, "the record being written when the interrupt came is complete"
    release.set()
    threading.Event().wait(0.5)
    assert len(written) == count, "nothing is written after the interrupt"


def test_credentials_never_reach_records_or_config(tmp_path):
    class Leaky(FakeBackend):
        def chat(self, convos, sampling):
            raise RuntimeError(f"401 from http://user:{KEY}@api.example/v1: echoed headers "
                               f"{{'Authorization': 'Bearer {KEY}'}}")

    options = {"base_url": f"http://user:{KEY}@api.example/v1", "api_key": KEY}
    generate(cfg(tmp_path, backend_options=options), backend=Leaky(), progress=False)
    run = tmp_path / "run"
    for name in ("records.jsonl", "config.yaml"):
        text = (run / name).read_text()
        assert KEY not in text, name
    errors = [r.error for r in load_run(run)]
    assert errors and all("RuntimeError: 401 from http://***@api.example/v1" in e for e in errors)
    assert "http://***@api.example/v1" in (run / "config.yaml").read_text()
    # the same settings resume the run (the fingerprint hashes the values in use, not the masked ones)
    generate(cfg(tmp_path, backend_options=options), backend=Leaky(), progress=False)
