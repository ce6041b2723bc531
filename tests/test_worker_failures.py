"""Failures inside the pipeline's worker threads (streaming scheduler) and the batch loop: a failed
write ends the run with that error (never a silent exit 0 with work left), a backend that returns
junk fails the record it was asked for, and the "same failure from the start" guard compares the
kind of failure, not its text."""
from __future__ import annotations

import errno

import pytest

from charter.backends.fake import FakeBackend
from charter.cli import main
from charter.inputs.constitution import load_constitution
from charter.errors import BackendError, RunError
from charter.generate import GenerateConfig, generate
from charter.pipeline.cai import Settings, run_items
from charter.pipeline.scheduler import STOP_AFTER_SAME_FAILURES
from charter.runs.runread import load_run
from charter.types import Completion, PromptItem


def items(n):
    return [PromptItem(id=f"p{i}", kind="red_team", messages=({"role": "user", "content": f"q{i}"},))
            for i in range(n)]


def engine(concurrency):
    fake = FakeBackend()
    fake.concurrency = concurrency
    return fake


def run(backend, n, on_record, rounds=1, on_step=None, batch_size=2):
    run_items(backend, load_constitution(), Settings(rounds=rounds, batch_size=batch_size), items(n), on_record,
              on_step)


@pytest.mark.parametrize("concurrency", [None, 3])
def test_a_failed_write_ends_the_run_with_that_error(concurrency):
    written = []

    def on_record(rec):
        if len(written) == 4:
            raise OSError(errno.ENOSPC, "No space left on device", "records.jsonl")
        written.append(rec.id)

    with pytest.raises(OSError, match="No space left"):
        run(engine(concurrency), 40, on_record)
    assert len(written) == 4


@pytest.mark.parametrize("concurrency", [None, 3])
def test_a_bug_in_a_callback_ends_the_run_with_one_run_error(concurrency):
    def on_step():
        raise KeyError("tokens")

    with pytest.raises(RunError, match="KeyError") as caught:
        run(engine(concurrency), 10, lambda rec: None, on_step=on_step)
    assert isinstance(caught.value.__cause__, KeyError)  # the traceback is kept for whoever debugs it


@pytest.mark.parametrize("reply", [[], ["not a completion"], None, "text", [Completion("a", 1, 1)] * 2])
@pytest.mark.parametrize("concurrency", [None, 3])
def test_a_backend_returning_junk_fails_those_records_not_the_run(concurrency, reply):
    class Junk(FakeBackend):
        def chat(self, convos, sampling):
            if "q1" in self.render(convos[0]):
                return reply
            return super().chat(convos, sampling)

    backend = Junk()
    backend.concurrency = concurrency
    records = []
    run(backend, 6, records.append, rounds=0, batch_size=1)
    failed = {r.id for r in records if r.error}
    assert len(records) == 6 and "p1" in failed and "p0" not in failed
    assert all("BackendError" in r.error and "completion" in r.error for r in records if r.error)


def test_disk_full_in_generate_is_one_line_and_a_non_zero_exit(tmp_path, monkeypatch, capsys):
    from charter.runs import store

    appended = []
    real = store.RunStore.append

    def append(self, rec):
        if len(appended) == 3:
            raise OSError(errno.ENOSPC, "No space left on device")
        appended.append(rec.id)
        real(self, rec)

    class Streaming(FakeBackend):
        concurrency = 4

    monkeypatch.setattr(store.RunStore, "append", append)
    monkeypatch.setattr("charter.backends.fake.FakeBackend", Streaming)
    code = main(["generate", "--backend", "fake", "--limit", "12", "--rounds", "1", "--helpful-prompts", "none",
                 "--out", str(tmp_path / "run"), "--quiet"])
    err = capsys.readouterr().err
    assert code != 0
    assert "No space left on device" in err and "Traceback" not in err
    assert len(load_run(tmp_path / "run")) == 3


class Gateway(Exception):
    def __init__(self, message, status_code):
        super().__init__(message)
        self.status_code = status_code


@pytest.mark.parametrize("concurrency", [None, 2])
def test_failures_that_differ_only_in_a_request_id_stop_the_run(tmp_path, concurrency):
    class Flaky(FakeBackend):
        def chat(self, convos, sampling):
            self.calls.append("x")
            try:
                raise Gateway(f"502 Bad Gateway (request id {len(self.calls)})", 502)
            except Gateway as exc:
                raise BackendError(f"APIStatusError: {exc}") from exc

    backend = Flaky()
    backend.concurrency = concurrency
    cfg = GenerateConfig(backend="fake", limit=40, rounds=1, helpful_prompts="none", out=str(tmp_path / "run"),
                         batch_size=1)
    with pytest.raises(BackendError, match=f"first {STOP_AFTER_SAME_FAILURES}"):
        generate(cfg, backend=backend, progress=False)
    assert len(backend.calls) < 40


def test_failure_kind_is_the_type_chain_and_http_status_not_the_text():
    from charter.errors import failure_kind

    def wrapped(status, rid):
        try:
            raise Gateway(f"request id {rid}", status)
        except Gateway as exc:
            try:
                raise BackendError(f"from server: {exc}") from exc
            except BackendError as outer:
                return outer

    assert failure_kind(wrapped(502, 1)) == failure_kind(wrapped(502, 2))
    assert failure_kind(wrapped(502, 1)) != failure_kind(wrapped(503, 1))
    assert "502" in failure_kind(wrapped(502, 1)) and "Gateway" in failure_kind(wrapped(502, 1))
    assert failure_kind(ValueError("a")) == failure_kind(ValueError("b")) != failure_kind(KeyError("a"))
    assert failure_kind(Gateway("x", 502)) == "Gateway (HTTP 502)"  # what charter.pipeline.scheduler's own test expects


@pytest.mark.parametrize("args", [
    (12345, 1, 1), (None, 1, 1), ("x", "lots", 1), ("x", -1, 1), ("x", 10 ** 30, 1), ("x", float("inf"), 1),
    ("x", 1, float("nan")), ("x", True, 1), ("x", 1, 1, None), ("x", 1, 1, "stop", float("nan")),
    ("x", 1, 1, "stop", "high"),
])
def test_a_completion_of_junk_is_a_backend_error(args):
    """Every backend builds its answers as Completions: junk from any engine or server stops there."""
    with pytest.raises(BackendError, match="server|engine"):
        Completion(*args)


def test_a_whole_number_given_as_a_float_is_a_count():
    assert Completion("x", 3.0, 1).prompt_tokens == 3 and isinstance(Completion("x", 3.0, 1).prompt_tokens, int)
