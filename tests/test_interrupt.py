"""Ctrl-C on the real CLI while requests hang on a server that never answers: the command exits
within seconds, says what is saved, prints no traceback (a second Ctrl-C included), and writes
nothing after it."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from fault_proxy import Blackhole


def test_ctrl_c_on_hanging_requests_exits_at_once(tmp_path):
    out = tmp_path / "run"
    with Blackhole() as hole:
        cmd = [sys.executable, "-m", "charter.cli", "generate", "--backend", "openai", "--model", "m",
               "--base-url", hole.url + "/v1", "--limit", "4", "--rounds", "1", "--quiet", "--out", str(out),
               "--backend-option", "timeout=300"]
        env = {**os.environ, "OPENAI_API_KEY": "x"}
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        deadline = time.time() + 60
        while not (out / "config.yaml").exists() and time.time() < deadline:
            time.sleep(0.1)
        time.sleep(2)  # requests are in flight and hanging
        t0 = time.time()
        proc.send_signal(signal.SIGINT)
        time.sleep(0.2)
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)  # an impatient second Ctrl-C
        _, err = proc.communicate(timeout=30)
        took = time.time() - t0
    assert proc.returncode == 130, err
    assert took < 5, f"exit took {took:.1f}s"
    assert "interrupted: 0 records saved" in err and "Traceback" not in err
    records = out / "records.jsonl"
    assert not records.exists() or records.read_text() == ""
