"""The vLLM engine's start, death and end on a fake AsyncLLM (the real one: test_vllm_backend.py):
an engine that dies says how in one line; vLLM's long traceback of it goes to the log."""
from __future__ import annotations

import logging
import signal
import threading
from types import SimpleNamespace

import pytest

from charter.backends import vllm_engine
from charter.backends.base import EngineDead
from charter.errors import BackendError

pytest.importorskip("vllm")


class FakeLLM:
    """vLLM's AsyncLLM as the engine uses it, whose EngineCore process ended with `exitcode`."""

    model_config = SimpleNamespace(max_model_len=64)

    def __init__(self, exitcode: int | None):
        proc = SimpleNamespace(name="EngineCore", exitcode=exitcode)
        self.engine_core = SimpleNamespace(resources=SimpleNamespace(engine_manager=SimpleNamespace(processes=[proc])))
        self.shut = 0

    @classmethod
    def from_engine_args(cls, args):
        return cls(FakeLLM.exitcode)

    def get_tokenizer(self):
        return "tokenizer"

    async def generate(self, prompt, params, request_id):
        from vllm.v1.engine.exceptions import EngineDeadError

        # what vLLM's output handler does when its EngineCore is gone
        logging.getLogger("vllm.v1.engine.async_llm").exception("AsyncLLM output_handler failed.",
                                                                exc_info=EngineDeadError())
        raise EngineDeadError()
        yield  # an async generator, as vLLM's

    def shutdown(self, timeout=None):
        self.shut += 1


@pytest.fixture
def fake_vllm(monkeypatch):
    import vllm.v1.engine.async_llm as async_llm

    monkeypatch.setattr(async_llm, "AsyncLLM", FakeLLM)
    return FakeLLM


def start() -> vllm_engine.Engine:
    from charter.backends.models import resolve_hf_checkpoint

    return vllm_engine.Engine(resolve_hf_checkpoint("embedded"), {}, vllm_engine.PROFILES["cuda"])


@pytest.mark.parametrize("exitcode, how", [
    (-signal.SIGKILL, "EngineCore was killed by SIGKILL (the out-of-memory killer sends it)"),
    (1, "EngineCore exited with code 1 (vLLM printed its error above)"),
    (None, "EngineCore failed (vLLM printed its error above)"),
])
def test_a_dead_engine_says_how_it_died_in_one_line(fake_vllm, monkeypatch, caplog, exitcode, how):
    monkeypatch.setattr(fake_vllm, "exitcode", exitcode, raising=False)
    shown = []  # what vLLM's own handlers (the terminal) get
    vllm_log = logging.getLogger("vllm.v1.engine.async_llm")
    handler = logging.Handler()
    handler.emit = shown.append
    vllm_log.addHandler(handler)
    engine = start()
    try:
        assert (engine.tokenizer, engine.max_model_len) == ("tokenizer", 64)
        with caplog.at_level(logging.DEBUG, logger="charter"), pytest.raises(EngineDead) as err:
            engine.submit([[1, 2, 3]], [None])
    finally:
        engine.close()
        vllm_log.removeHandler(handler)
    assert str(err.value) == f"the vLLM engine died: {how}; re-run the same command to resume"
    assert shown == []  # vLLM's traceback of the death is in Charter's log instead
    assert "AsyncLLM output_handler failed" in caplog.text and "EngineDeadError" in caplog.text


def test_a_closed_engine_refuses_requests_and_shuts_vllm_down_once(fake_vllm, monkeypatch):
    monkeypatch.setattr(fake_vllm, "exitcode", 0, raising=False)
    engine = start()
    llm = engine.llm
    engine.close()
    engine.close()
    assert llm.shut == 1 and engine.llm is None
    with pytest.raises(EngineDead, match="shut down"):
        engine.submit([[1]], [None])
    assert not any(isinstance(f, vllm_engine._ToLog) for f in logging.getLogger("vllm.v1.engine.async_llm").filters)


def test_a_bad_option_names_the_fields_and_leaves_nothing_running(fake_vllm):
    with pytest.raises(BackendError, match="bad vLLM engine option: .*no_such_option.*AsyncEngineArgs fields"):
        vllm_engine.Engine("embedded", {"no_such_option": 1}, vllm_engine.PROFILES["cuda"])
    assert "charter-vllm" not in [t.name for t in threading.enumerate()]


def test_an_interrupted_start_kills_the_half_started_engine_at_once(fake_vllm, monkeypatch):
    """Ctrl-C or SIGTERM while vLLM starts: its processes are killed without the SIGTERM each
    would answer with the traceback of its start; a failed start gives them the usual grace."""
    import vllm.v1.engine.async_llm as async_llm

    from charter.backends import watchdog

    closed, close = [], watchdog.Watchdog.close
    monkeypatch.setattr(watchdog.Watchdog, "close",
                        lambda self, **kw: closed.append(kw.get("grace_s")) or close(self, **kw))

    class Failing(FakeLLM):
        @classmethod
        def from_engine_args(cls, args):
            raise RuntimeError("no memory")

    monkeypatch.setattr(async_llm, "AsyncLLM", Failing)
    with pytest.raises(BackendError, match="vLLM could not load .*RuntimeError: no memory"):
        start()

    class Signalled:  # the wait for the start, as a signal handler interrupts it
        def result(self):
            raise KeyboardInterrupt

    monkeypatch.setattr(vllm_engine.Engine, "_run", lambda self, coro: coro.close() or Signalled())
    with pytest.raises(KeyboardInterrupt):
        start()
    assert closed == [None, 0]
    assert "charter-vllm" not in [t.name for t in threading.enumerate()]
