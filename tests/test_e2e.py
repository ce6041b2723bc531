"""End to end on the real embedded model (SmolLM2-135M-Instruct) through the transformers backend
(tests/test_vllm_backend.py runs the same on vLLM)."""
import re
import sys
from pathlib import Path

import pytest

from charter.generate import GenerateConfig
from charter.generate import generate
from charter.runs.runread import load_run

from sigkill import kill_midway_then_resume

pytestmark = pytest.mark.slow
SMALL = dict(limit=2, helpful_samples=1, rounds=2, max_tokens=24, batch_size=8, seed=1)


@pytest.fixture(scope="module")
def backend():
    from charter.backends import create_backend

    b = create_backend("transformers", "embedded")
    yield b
    b.close()


def check_run(out: Path, rounds: int, critique: bool) -> None:
    recs = load_run(out)
    assert len(recs) == 2 + 2 and all(r.error is None for r in recs)
    for r in recs:
        assert r.initial and r.tokens["completion"] > 0 and r.model == "embedded"
        if r.kind == "red_team":
            assert len(r.rounds) == rounds and r.final == r.rounds[-1].revision
            assert all((x.critique is not None) == critique for x in r.rounds)
            assert all(x.revision for x in r.rounds)


@pytest.mark.parametrize("fmt", ["chat", "text"])
@pytest.mark.parametrize("critique", [True, False])
def test_generate_real_model(backend, tmp_path, fmt, critique):
    cfg = GenerateConfig(format=fmt, critique=critique, out=str(tmp_path / "run"), **SMALL)
    s = generate(cfg, backend=backend, progress=False)
    assert s.records == 4 and s.failures == 0 and s.tokens > 0
    check_run(tmp_path / "run", 2, critique)


def test_text_format_stops_at_turn_boundaries(backend, tmp_path):
    cfg = GenerateConfig(format="text", out=str(tmp_path / "run"), **{**SMALL, "max_tokens": 64})
    generate(cfg, backend=backend, progress=False)
    for r in load_run(tmp_path / "run"):
        texts = [r.initial] + [t for x in r.rounds for t in (x.critique, x.revision)]
        assert not any(tag in t for t in texts for tag in ("\n\nHuman:", "\n\nCritiqueRequest:", "\n\nRevisionRequest:"))


def test_resume_after_sigkill(tmp_path):
    """Kill the CLI mid-run; the same command finishes the run with every record exactly once."""
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "charter.cli", "generate", "--backend", "transformers", "--limit", "4", "--helpful-samples", "1",
           "--rounds", "1", "--max-tokens", "16", "--batch-size", "2", "--quiet", "--out", str(out)]
    before, done = kill_midway_then_resume(cmd, out, 8)
    skipped = int(re.search(r"(\d+) already done", done.stdout).group(1))
    assert before <= skipped < 8  # records written before the kill were kept, not redone


def test_helpful_samples_differ(backend, tmp_path):
    """Two samples of one prompt in one batch must be two draws, not one draw twice."""
    cfg = GenerateConfig(limit=2, helpful_samples=2, rounds=0, max_tokens=24, out=str(tmp_path / "run"))
    generate(cfg, backend=backend, progress=False)
    helpful = [r for r in load_run(tmp_path / "run") if r.kind == "helpful"]
    by_prompt = {}
    for r in helpful:
        by_prompt.setdefault(r.prompt[-1]["content"], []).append(r.initial)
    assert len(by_prompt) == 2 and all(len(set(v)) == 2 for v in by_prompt.values())


def test_prompt_over_the_context_fails_its_record_with_bounded_memory(backend, tmp_path):
    """A ~9k-token prompt (the embedded model's context is 8192) fails its own record with the
    prompt, its length and the limit; the short prompt beside it is answered."""
    import resource

    prompts = tmp_path / "p.jsonl"
    prompts.write_text('{"prompt": "What is the capital of France?"}\n{"prompt": "' + "tell me more " * 3000 + '"}\n')
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    cfg = GenerateConfig(prompts=str(prompts), helpful_prompts="none", rounds=1, max_tokens=8, out=str(tmp_path / "run"))
    s = generate(cfg, backend=backend, progress=False)
    recs = sorted(load_run(tmp_path / "run"), key=lambda r: len(r.prompt[-1]["content"]))
    assert s.records == 2 and s.failures == 1 and recs[0].error is None and recs[0].final
    assert "ContextTooLong" in recs[1].error and "context of 8192" in recs[1].error and recs[1].id in recs[1].error
    grown_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak
    assert grown_kib < 2 * 2**20, f"memory grew by {grown_kib / 2**20:.1f} GiB"
