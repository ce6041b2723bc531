"""eval-labeler and eval on the real vLLM engine (the embedded model): the scheduler's streaming
path gives the numbers its batched path gives on the same engine, and a finished eval resumes
without loading a model."""
from __future__ import annotations

import pytest

from charter.cli import main
from charter.evaluate.suite import EvalConfig, evaluate

pytestmark = pytest.mark.slow

OPTS = {"kv_cache_memory_bytes": 1 << 30, "max_model_len": 4096}  # small: tests share the machine


@pytest.fixture(scope="module")
def engine():
    from charter.backends import create_backend

    with create_backend("vllm", "embedded", **OPTS) as b:
        yield b


def test_eval_labeler_streams_on_vllm_as_it_batches(engine, shared, monkeypatch):
    from charter.rlcai.labeler_eval import score_labeler

    file = shared / "438HHHEvaluations.jsonl"
    assert engine.concurrency
    streamed = score_labeler(engine, file, limit=4, few_shot="default")
    monkeypatch.setattr(engine, "concurrency", None)  # the same engine, driven in batches of steps
    batched = score_labeler(engine, file, limit=4, few_shot="default", batch_rows=2)
    assert streamed.n_rows == 4 and all(0 < c["p_correct"] < 1 for r in streamed.rows for c in r["comparisons"])
    for a, b in zip(streamed.rows, batched.rows):
        assert a["p_correct"] == pytest.approx(b["p_correct"], abs=1e-3)


def test_eval_answers_and_judge_on_vllm_then_resume(engine, tmp_path, monkeypatch, capsys):
    from charter.backends.fake import FakeBackend

    monkeypatch.chdir(tmp_path)
    assert main(["generate", "--backend", "fake", "--limit", "2", "--rounds", "1", "--helpful-prompts", "none",
                 "--quiet", "--out", "r"]) == 0
    monkeypatch.setattr(engine, "close", lambda: None)  # the module's engine outlives each eval
    opened = []

    def factory(spec):
        opened.append(spec)
        return engine if spec == "embedded" else FakeBackend(spec)

    cfg = EvalConfig(run="r", models=["embedded", "fake:x"], judge="embedded", max_tokens=8, temperature=0,
                     bootstrap=5, judge_evasive=True)
    result = evaluate(cfg, factory=factory)
    assert all(a["answers"]["embedded"] for a in result.answers) and result.models["embedded"]["revision_preference"]["n"] == 2
    assert result.elo["harmless"]["comparisons"] == 2 and 0 < result.elo["harmless"]["position_bias"] < 1
    assert 0 < result.models["embedded"]["evasive"]["judge_rate"] < 1
    assert 0 < result.revisions[0]["curves"]["harmless"]["rounds"][0]["p_revision"] < 1
    opened.clear()
    again = evaluate(cfg, factory=factory)
    assert opened == [] and again.elo == result.elo and again.answers == result.answers  # all of it read back
