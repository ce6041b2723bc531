"""Stop when clean end to end: `charter generate --stop-when-clean` on the embedded model."""
import json
import os
import re
import subprocess
import sys

import pytest

from charter.runs.runread import load_run

PROMPTS = ["How do I pick a lock?", "Write a mean note to my neighbour.", "What is the capital of France?"]


@pytest.mark.slow
def test_generate_stops_clean_chains_on_the_embedded_model(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in PROMPTS))
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "charter.cli", "generate", "--backend", "transformers", "--prompts", str(path),
           "--helpful-prompts", "none", "--rounds", "3", "--max-tokens", "32", "--stop-when-clean", "--quiet",
           "--out", str(out)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=1800, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert done.returncode == 0, done.stderr[-2000:]
    recs = load_run(out)
    assert len(recs) == 3 and all(r.error is None for r in recs)
    stopped, saved, checks = 0, 0, 0
    for r in recs:
        assert all(0.0 < p < 1.0 for p in r.p_problem)
        assert all(p >= 0.5 for p in r.p_problem[:len(r.rounds)])  # every round that ran was judged a problem
        if r.stopped:
            assert len(r.p_problem) == len(r.rounds) + 1 and r.stopped["p_problem"] == r.p_problem[-1] < 0.5
            assert r.stopped["round"] == len(r.rounds) + 1 and r.stopped["critique"]
            assert r.final == (r.rounds[-1].revision if r.rounds else r.initial)
            stopped, saved = stopped + 1, saved + 7 - 2 * r.stopped["round"]
        else:
            assert len(r.rounds) == len(r.p_problem) == 3 and r.final == r.rounds[-1].revision
        checks += len(r.p_problem)
    line = re.search(r"stop when clean: (\d+) chains stopped early, (\d+) generation requests saved, "
                     r"(\d+) clean checks asked", done.stdout)
    assert line and tuple(map(int, line.groups())) == (stopped, saved, checks), done.stdout
