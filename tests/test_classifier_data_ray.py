"""`classifier data --executor ray` on a small local Ray instance (2 CPUs), fake backends: the rows of
a local run, and backends given in Python refused."""
import json
from pathlib import Path

import pytest

from charter.classifier.data import ClassifierDataConfig, classifier_data

ray = pytest.importorskip("ray")
pytestmark = pytest.mark.usefixtures("local_ray")  # one small local Ray for the module


def cfg(tmp_path, name, **kw):
    base = dict(backend="fake", backend_options={"vary": True}, categories=["cyberattacks", "security-defence"],
                per_category=4, augment=["paraphrase"], batch_size=2, near_duplicate=1.0, out=str(tmp_path / name))
    return ClassifierDataConfig(**{**base, **kw})


def rows(out):
    """Each row's id, label, kind and split (texts depend on how steps were batched: a batched call is
    seeded once, by its first step)."""
    return sorted((json.loads(x)["id"], json.loads(x)["label"], json.loads(x)["kind"], s)
                  for s in ("train", "test") for x in open(Path(out) / f"{s}.jsonl"))


def test_ray_workers_write_what_a_local_run_writes(tmp_path):
    local = classifier_data(cfg(tmp_path, "local"), progress=False)
    c = cfg(tmp_path, "ray", executor="ray", workers=2)
    s = classifier_data(c, progress=False)
    assert s.failures == 0 and s.queries == 8 and s.examples == local.examples == 8 * 3
    assert rows(c.out) == rows(tmp_path / "local")
    lines = [json.loads(x)["id"] for x in (Path(c.out) / "queries.jsonl").read_text().splitlines()]
    assert len(lines) == len(set(lines)) == 8


def test_backends_given_in_python_are_refused_on_ray(tmp_path):
    from charter.backends.fake import FakeBackend
    from charter.errors import ConfigError

    with pytest.raises(ConfigError, match="each worker opens its own"):
        classifier_data(cfg(tmp_path, "r", executor="ray"), writer=FakeBackend(), progress=False)
    assert not (tmp_path / "r").exists()
