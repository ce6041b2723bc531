"""The schedulers' failure paths on the fake backend: prompts over the context, a dead engine, a
run whose every request fails, Ctrl-C, and the per-step progress and error summary."""
from __future__ import annotations

import _thread
import time

import pytest

from charter.backends.base import EngineDead
from charter.backends.fake import FakeBackend
from charter.generate import GenerateConfig
from charter.errors import BackendError
from charter.generate import Interrupted, generate
from charter.inputs.prompts import load_prompts
from charter.runs.runread import load_run


def cfg(tmp_path, **kw):
    base = dict(backend="fake", limit=6, rounds=2, helpful_prompts="none", out=str(tmp_path / "run"))
    return GenerateConfig(**{**base, **kw})


class Engine(FakeBackend):
    """A fake engine with a context limit, optionally streaming, optionally dying."""

    def __init__(self, concurrency=None, max_context=None, die_after=None, fail_all=None, interrupt_after=None):
        super().__init__()
        if concurrency:
            self.concurrency = concurrency
        self.max_context, self.die_after, self.fail_all = max_context, die_after, fail_all
        self.interrupt_after, self.interrupted = interrupt_after, False

    def count_tokens(self, request) -> int:
        text = request if isinstance(request, str) else self.render(request)
        return len(text.split())

    def _one(self, prompt, sampling):
        n = len(self.calls)
        if self.fail_all:
            raise ConnectionError(self.fail_all)
        if self.die_after is not None and n >= self.die_after:
            raise EngineDead("the vLLM engine died (RuntimeError: boom)")
        if self.interrupt_after is not None and n >= self.interrupt_after and not self.interrupted:
            self.interrupted = True
            _thread.interrupt_main()  # Ctrl-C reaches the main thread, whichever thread calls
        if self.interrupt_after is not None:
            time.sleep(0.05)  # slow enough that the run is still going when the signal lands
        return super()._one(prompt, sampling)


@pytest.mark.parametrize("concurrency", [None, 4])
def test_a_prompt_over_the_context_fails_its_record_only(tmp_path, concurrency):
    huge = tmp_path / "p.jsonl"
    huge.write_text('{"prompt": "short one"}\n{"prompt": "' + "word " * 5000 + '"}\n{"prompt": "short two"}\n')
    engine = Engine(concurrency=concurrency, max_context=2000)
    s = generate(cfg(tmp_path, prompts=str(huge), max_tokens=64), backend=engine, progress=False)
    recs = {r.prompt[-1]["content"][:9]: r for r in load_run(tmp_path / "run")}
    assert s.records == 3 and s.failures == 1
    bad = recs["word word"]
    assert "ContextTooLong" in bad.error and "context of 2000" in bad.error and bad.id in bad.error
    assert "5" in bad.error and "max_tokens 64" in bad.error
    assert not any("word word" in c for c in engine.calls)  # never sent to the engine
    assert recs["short one"].error is None and recs["short two"].error is None


@pytest.mark.parametrize("concurrency", [None, 3])
def test_engine_death_fails_records_in_flight_stops_and_resumes(tmp_path, concurrency):
    engine = Engine(concurrency=concurrency, die_after=4)
    with pytest.raises(EngineDead, match="engine died"):
        generate(cfg(tmp_path, batch_size=2), backend=engine, progress=False)
    recs = load_run(tmp_path / "run")
    assert recs and all("engine died" in r.error for r in recs if r.error)
    assert len(recs) < 6  # stopped, not one failure per remaining prompt
    s = generate(cfg(tmp_path, batch_size=2), backend=FakeBackend(), progress=False)
    assert s.failures == 0 and {r.id for r in load_run(tmp_path / "run") if r.error is None} == \
        {it.id for it in load_prompts("default", "red_team", None, 6)}


def test_a_run_whose_every_request_fails_stops_early_with_the_cause(tmp_path):
    engine = Engine(concurrency=2, fail_all="connection refused by 127.0.0.1:9")
    with pytest.raises(BackendError, match="the first 8 requests all failed with: ConnectionError"):
        generate(cfg(tmp_path, limit=40), backend=engine, progress=False)
    assert len(load_run(tmp_path / "run")) < 12


def test_summary_lists_distinct_errors(tmp_path):
    prompts = tmp_path / "p.txt"
    prompts.write_text("alpha\nbeta BOOM\ngamma\ndelta BOOM\nepsilon\n")
    s = generate(cfg(tmp_path, prompts=str(prompts), batch_size=1), backend=FakeBackend(fail_on="BOOM"), progress=False)
    assert s.records == 5 and s.failures == 2
    assert "\n  2 records failed: RuntimeError: scripted failure on 'BOOM'" in s.line()


@pytest.mark.parametrize("concurrency", [None, 3])
def test_ctrl_c_says_what_is_saved_and_writes_nothing_after(tmp_path, concurrency):
    engine = Engine(concurrency=concurrency, interrupt_after=9)
    with pytest.raises(Interrupted, match=r"interrupted: \d+ records saved"):
        generate(cfg(tmp_path, batch_size=1), backend=engine, progress=False)
    records = tmp_path / "run" / "records.jsonl"
    before = records.read_text() if records.exists() else ""
    time.sleep(0.3)  # worker threads that were mid-call must not write after the interrupt
    assert (records.read_text() if records.exists() else "") == before


def test_progress_moves_per_step(tmp_path):
    from charter.inputs.constitution import load_constitution
    from charter.generate import settings_from
    from charter.pipeline.cai import run_items

    steps, recs = [], []
    c = cfg(tmp_path, limit=2, rounds=2)
    run_items(FakeBackend(), load_constitution(), settings_from(c), load_prompts("default", "red_team", None, 2),
              recs.append, lambda: steps.append(len(recs)))
    assert len(steps) == 2 * 5 and steps[0] == 0  # one tick per step, before any record is done


class Encoding(FakeBackend):
    """A backend whose prepare encodes each request (as HF-tokenizer backends do with token ids):
    the context check and the call must both get the encoding, made once per step."""

    max_context = 10**6

    def __init__(self, concurrency=None):
        super().__init__()
        self.concurrency, self.prepared = concurrency, 0

    def prepare(self, requests):
        self.prepared += len(requests)
        return [("encoded", r) for r in requests]

    def count_tokens(self, request):
        assert request[0] == "encoded"
        return 1

    def chat(self, convos, sampling):
        assert all(c[0] == "encoded" for c in convos)
        return super().chat([c[1] for c in convos], sampling)


@pytest.mark.parametrize("concurrency", [None, 3])
def test_each_step_is_prepared_once_then_checked_and_sent_as_prepared(tmp_path, concurrency):
    engine = Encoding(concurrency)
    s = generate(cfg(tmp_path, limit=4, batch_size=2), backend=engine, progress=False)
    assert s.records == 4 and s.failures == 0
    assert engine.prepared == len(engine.calls) == 4 * 5
