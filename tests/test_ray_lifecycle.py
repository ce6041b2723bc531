"""A local Ray that `--executor ray` starts for a run ends with the run (no raylet left behind), and
Ray's own SIGTERM handler does not replace the job's."""
import signal

import pytest

from charter.generate import GenerateConfig
from charter.generate import generate
from charter.runs.runread import load_run

ray = pytest.importorskip("ray")


def test_a_ray_started_for_the_run_is_shut_down_after_it(tmp_path):
    assert not ray.is_initialized()
    previous = signal.signal(signal.SIGTERM, signal.SIG_DFL)
    try:
        cfg = GenerateConfig(executor="ray", workers=1, backend="fake", limit=2, rounds=1, helpful_samples=1,
                             out=str(tmp_path / "run"))
        summary = generate(cfg, progress=False)
        assert summary.records == 4 and len(load_run(tmp_path / "run")) == 4
        assert not ray.is_initialized()
        assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # not Ray's sys.exit handler
    finally:
        signal.signal(signal.SIGTERM, previous)
