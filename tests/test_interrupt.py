"""Ctrl-C (and SIGTERM) on the real CLI while requests hang on a server that never answers: the
command exits within seconds, says what is saved, prints no traceback (a second Ctrl-C included),
and writes nothing after it."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from fault_proxy import Blackhole


def _hanging_run(out, hole) -> subprocess.Popen:
    """`charter generate` with its requests in flight on a server that never answers."""
    cmd = [sys.executable, "-m", "charter.cli", "generate", "--backend", "openai", "--model", "m",
           "--base-url", hole.url + "/v1", "--limit", "4", "--rounds", "1", "--quiet", "--out", str(out),
           "--backend-option", "timeout=300"]
    env = {**os.environ, "OPENAI_API_KEY": "x"}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.time() + 60
    while not (out / "config.yaml").exists() and time.time() < deadline:
        time.sleep(0.1)
    time.sleep(2)  # requests are in flight and hanging
    return proc


# Ctrl-C twice (an impatient user); SIGTERM, what `timeout`, Slurm, Kubernetes and systemd send.
@pytest.mark.parametrize("signals, code", [((signal.SIGINT, signal.SIGINT), 130), ((signal.SIGTERM,), 143)],
                         ids=["ctrl-c", "sigterm"])
def test_a_stop_signal_on_hanging_requests_exits_at_once(tmp_path, signals, code):
    out = tmp_path / "run"
    with Blackhole() as hole:
        proc = _hanging_run(out, hole)
        t0 = time.time()
        for sig in signals:
            if proc.poll() is None:
                proc.send_signal(sig)
                time.sleep(0.2)
        _, err = proc.communicate(timeout=30)
        took = time.time() - t0
    assert proc.returncode == code, err
    assert took < 5, f"exit took {took:.1f}s"
    assert "interrupted: 0 records saved" in err and "Traceback" not in err
    records = out / "records.jsonl"
    assert not records.exists() or records.read_text() == ""
