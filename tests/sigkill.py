"""Kill a `charter generate` CLI (and its engine processes) part-way, then run it again."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path


def kill_midway_then_resume(cmd: list[str], out: Path, total: int, wait_s: float = 400):
    """SIGKILL the command's process group once 2 records are on disk; the same command then
    runs to the end. Returns (records on disk at the kill, the second run); asserts that every
    record is written exactly once."""
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    records = out / "records.jsonl"
    deadline = time.time() + wait_s
    while time.time() < deadline and proc.poll() is None:
        if records.exists() and records.read_text().count("\n") >= 2:
            break
        time.sleep(0.1)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    before = records.read_text().count("\n")
    assert 2 <= before < total, "the run should have been killed part-way"
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    ids = [json.loads(line)["id"] for line in records.read_text().splitlines()]
    assert len(ids) == len(set(ids)) == total
    return before, done
