"""`--executor ray` on a small local Ray instance (2 CPUs): the fake backend (a killed worker, lazy
chunks) and the real embedded model (slow)."""
import json
from collections import Counter

import pytest

from charter.errors import BackendError, RunError
from charter.pipeline import ray_executor
from charter.generate import GenerateConfig
from charter.inputs.constitution import load_constitution
from charter.generate import generate, settings_from
from charter.runs.runread import load_run
from charter.types import PromptItem
from support import GEN, fails, kill_a_worker_after

ray = pytest.importorskip("ray")


pytestmark = pytest.mark.usefixtures("local_ray")  # one small local Ray for the module


@pytest.mark.slow
def test_ray_run_writes_same_directory_and_resumes(tmp_path):
    base = dict(executor="ray", backend="transformers", workers=2, helpful_samples=1, rounds=1, max_tokens=12, batch_size=2, seed=5,
                out=str(tmp_path / "run"), backend_options={"threads": 1})
    s1 = generate(GenerateConfig(limit=1, **base), progress=False)
    assert s1.records == 2 and s1.failures == 0
    s2 = generate(GenerateConfig(limit=3, **base), progress=False)
    assert s2.skipped == 2 and s2.records == 4 and s2.failures == 0
    ids = [json.loads(line)["id"] for line in (tmp_path / "run" / "records.jsonl").read_text().splitlines()]
    assert len(ids) == len(set(ids)) == 6
    recs = load_run(tmp_path / "run")
    assert all(r.initial and r.backend == "transformers" for r in recs)
    assert all(len(r.rounds) == 1 and r.rounds[0].critique for r in recs if r.kind == "red_team")


def test_ray_with_fake_backend_matches_local(tmp_path):
    common = dict(backend="fake", limit=5, rounds=2, helpful_samples=1, batch_size=2)
    generate(GenerateConfig(executor="ray", workers=2, out=str(tmp_path / "ray"), **common), progress=False)
    generate(GenerateConfig(out=str(tmp_path / "local"), **common), progress=False)
    key = lambda r: (r.id, r.initial, [(x.principle, x.critique, x.revision) for x in r.rounds])
    assert sorted(map(key, load_run(tmp_path / "ray"))) == sorted(map(key, load_run(tmp_path / "local")))


@pytest.mark.slow
def test_ray_with_one_vllm_engine_per_worker(tmp_path):
    """Ray workers each hold a vLLM engine (the CPU wheel here); the driver still writes the run."""
    opts = {"kv_cache_memory_bytes": 1 << 30, "max_model_len": 4096}
    cfg = GenerateConfig(executor="ray", backend="vllm", workers=1, limit=2, helpful_samples=1, rounds=1,
                         max_tokens=12, batch_size=2, seed=5, out=str(tmp_path / "run"), backend_options=opts)
    s = generate(cfg, progress=False)
    assert s.records == 4 and s.failures == 0
    recs = load_run(tmp_path / "run")
    assert all(r.initial and r.backend == "vllm" for r in recs)
    ids = [json.loads(line)["id"] for line in (tmp_path / "run" / "records.jsonl").read_text().splitlines()]
    assert len(ids) == len(set(ids)) == 4


def _ids(run):
    return [json.loads(line)["id"] for line in (run / "records.jsonl").read_text().splitlines()]


def test_killed_worker_loses_nothing_and_writes_nothing_twice(tmp_path, monkeypatch):
    """A worker killed mid-run: its chunks are retried on a new worker; every record once."""
    common = dict(backend="fake", limit=100, rounds=1, helpful_samples=1, batch_size=4)
    local = generate(GenerateConfig(out=str(tmp_path / "local"), **common), progress=False)
    pools = kill_a_worker_after(monkeypatch, 20, lambda rec: rec.id)
    s = generate(GenerateConfig(executor="ray", workers=2, out=str(tmp_path / "ray"), **common), progress=False)
    assert pools[0].replaced == 1 and s.records == local.records == 200 and s.failures == 0
    ids = _ids(tmp_path / "ray")
    assert len(ids) == len(set(ids)) == 200
    key = lambda r: (r.id, r.initial, r.final)
    assert sorted(map(key, load_run(tmp_path / "ray"))) == sorted(map(key, load_run(tmp_path / "local")))


def test_prompts_are_read_lazily(tmp_path):
    """The driver pulls chunks only as workers free up: memory follows what is in flight."""
    pulled, seen = Counter(), []
    items = [PromptItem(id=f"p{i}", kind="helpful", messages=({"role": "user", "content": f"q{i}"},))
             for i in range(400)]

    def stream():
        for it in items:
            pulled["n"] += 1
            yield it

    cfg = GenerateConfig(executor="ray", backend="fake", workers=2, batch_size=5, helpful_samples=1)
    ray_executor.run_on_ray(cfg, load_constitution("default", "default"), settings_from(cfg), stream(),
                            lambda r: seen.append((r.id, pulled["n"])), workload=400)
    assert sorted(i for i, _ in seen) == sorted(it.id for it in items)
    most = 2 * ray_executor.IN_FLIGHT * 5  # every slot full, never more
    assert max(n - k for k, (_, n) in enumerate(seen)) <= most


def test_a_worker_backend_that_fails_to_open_is_one_line(tmp_path, capsys):
    args = [*GEN, "--executor", "ray", "--workers", "1", "--backend-option", "bogus=1", "--limit", "2",
            "--out", str(tmp_path / "run")]
    fails(capsys, args, r"^error: on a Ray worker: unknown option 'bogus' for backend 'fake'")


class _Job:
    """A job whose `open` or `run` fails as told."""

    def __init__(self, fail_in: str, exc: BaseException | None = None):
        self.fail_in, self.exc = fail_in, exc

    def open(self, workload):
        if self.fail_in == "exit":
            import os
            os._exit(1)  # the worker process dies before it can say why
        if self.fail_in == "open":
            raise self.exc

    def capacity(self):
        return 0

    def run(self, items):
        if self.fail_in == "run":
            raise self.exc
        return items

    def close(self):
        pass


@pytest.fixture
def sent_by_value():
    """This module's classes travel to the workers as code: the workers cannot import tests."""
    import sys

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    yield
    ray.cloudpickle.unregister_pickle_by_value(sys.modules[__name__])


@pytest.mark.parametrize("fail_in, exc, error, message", [
    ("open", BackendError("no model; pass a path"), BackendError, r"^on a Ray worker: no model; pass a path$"),
    ("run", KeyError("usage"), RunError, r"^on a Ray worker: the run stopped: a worker failed with KeyError: 'usage'"),
    ("exit", None, BackendError, r"^a Ray worker died while opening its backend \(its process ended: killed, out of "
                                 r"memory or crashed\); the Ray session's logs say more"),
])
def test_what_a_worker_raises_reaches_the_driver_as_one_line(fail_in, exc, error, message, sent_by_value):
    cfg = GenerateConfig(executor="ray", backend="fake", workers=1)
    with pytest.raises(error, match=message) as got:
        ray_executor.run_job(cfg, _Job(fail_in, exc), ["a", "b"], lambda r: None)
    assert "\n" not in str(got.value)
