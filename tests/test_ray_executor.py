"""`--executor ray` on a small local Ray instance (2 CPUs) with the real embedded model."""
import json

import pytest

from charter.config import GenerateConfig
from charter.generate import generate
from charter.store import load_run

ray = pytest.importorskip("ray")
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module", autouse=True)
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, object_store_memory=128 * 1024 * 1024,
             runtime_env={"env_vars": {"HF_HUB_OFFLINE": "1", "OMP_WAIT_POLICY": "PASSIVE"}})
    yield
    ray.shutdown()


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
