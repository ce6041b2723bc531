"""The openai backend against a real vLLM server on 127.0.0.1 (the CPU wheel here): generate,
resume, and scoring through the completions endpoint's `echo`; stopping a server's processes."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from charter.generate import GenerateConfig
from charter.generate import generate
from charter.runs.runread import load_run



@pytest.fixture(scope="module")
def server_url(tmp_path_factory):
    from charter.backends.vllm_server import start_server, stop_server

    small = ["--max-model-len", "4096", "--max-num-batched-tokens", "4096", "--kv-cache-memory-bytes", str(1 << 30)]
    with open(tmp_path_factory.mktemp("vllm") / "server.log", "w") as log:
        proc, url = start_server("embedded", log, name="smollm2", extra=small)
        yield url
        stop_server(proc)


@pytest.mark.slow
def test_generate_resume_and_score_through_a_vllm_server(server_url, tmp_path):
    base = dict(backend="openai", model="smollm2", backend_options={"base_url": server_url, "concurrency": 16},
                helpful_samples=1, rounds=2, max_tokens=24, seed=3, out=str(tmp_path / "run"))
    s1 = generate(GenerateConfig(limit=2, **base), progress=False)
    assert s1.records == 4 and s1.failures == 0
    s2 = generate(GenerateConfig(limit=4, **base), progress=False)  # resume: only the new prompts
    assert s2.skipped == 4 and s2.records == 4 and s2.failures == 0
    recs = load_run(tmp_path / "run")
    assert len(recs) == 8 and all(r.initial and r.error is None for r in recs)
    assert all(len(r.rounds) == 2 and r.rounds[0].critique for r in recs if r.kind == "red_team")

    from charter.backends import create_backend

    b = create_backend("openai", "smollm2", base_url=server_url)
    good, bad = b.score(["The capital of France is"] * 2, [" Paris.", " zebra lamp."])
    assert good.n_tokens > 0 and good.mean > bad.mean
    b.close()


def test_stop_server_also_kills_what_outlives_the_server_process(tmp_path):
    """A child that ignores SIGTERM (as vLLM's EngineCore can outlive its API process) is killed."""
    from charter.backends.vllm_server import stop_server

    stubborn = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print(flush=True); time.sleep(300)"
    leader = (f"import subprocess, sys, time; c = subprocess.Popen([sys.executable, '-c', {stubborn!r}], "
              "stdout=subprocess.PIPE); c.stdout.readline(); print(c.pid, flush=True); time.sleep(300)")
    proc = subprocess.Popen([sys.executable, "-c", leader], stdout=subprocess.PIPE, text=True, start_new_session=True)
    child = int(proc.stdout.readline())
    stop_server(proc, grace_s=10)
    assert proc.returncode is not None
    for _ in range(50):
        if not alive(child):
            break
        __import__("time").sleep(0.1)
    assert not alive(child)


def alive(pid: int) -> bool:
    """Running (neither gone nor a zombie waiting for init to reap it)."""
    try:
        return "State:\tZ" not in Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
