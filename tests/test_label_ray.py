"""`label --executor ray` on a small local Ray instance (2 CPUs), fake backends: the same rows as a
local run, and a worker killed mid-run loses nothing and writes nothing twice."""
import json

import pytest

from charter.rlcai.labels import LabelConfig, label
from charter.rlcai.label_store import transcripts_path
from support import kill_a_worker_after

ray = pytest.importorskip("ray")


pytestmark = pytest.mark.usefixtures("local_ray")  # one small local Ray for the module


def cfg(tmp_path, name, **kw):
    base = dict(backend="fake", backend_options={"vary": True}, few_shot="none", samples=2, batch_size=4,
                out=str(tmp_path / name / "labels.jsonl"))
    return LabelConfig(**{**base, **kw}).validate()


def ids(path):
    return [json.loads(x)["id"] for x in open(path)]


def test_killed_worker_loses_nothing_and_writes_nothing_twice(tmp_path, monkeypatch):
    local = label(cfg(tmp_path, "local", limit=40), progress=False)
    pools = kill_a_worker_after(monkeypatch, 10, lambda line: line["id"])
    c = cfg(tmp_path, "ray", limit=40, executor="ray", workers=2)
    s = label(c, progress=False)
    assert pools[0].replaced == 1 and s.failures == 0 and s.prompts == 40
    assert s.rows == local.rows == 40  # one pair per prompt, each labelled once
    assert sorted(ids(c.out)) == sorted(ids(tmp_path / "local" / "labels.jsonl"))
    lines = [json.loads(x)["id"] for x in transcripts_path(c.out).read_text().splitlines()]
    assert len(lines) == len(set(lines)) == 40
    again = label(c, progress=False)  # finished: resumed without starting a worker
    assert again.resumed == 40 and len(pools) == 1


def test_backends_given_in_python_are_refused_on_ray(tmp_path):
    from charter.backends.fake import FakeBackend
    from charter.errors import ConfigError

    with pytest.raises(ConfigError, match="each worker opens its own"):
        label(cfg(tmp_path, "r", limit=2, executor="ray"), policy=FakeBackend(), progress=False)
    assert not (tmp_path / "r").exists()


def test_a_worker_backend_that_fails_to_open_is_one_line(tmp_path):
    from charter.errors import BackendError

    c = cfg(tmp_path, "r", limit=2, executor="ray", workers=1, backend_options={"bogus": 1})
    with pytest.raises(BackendError, match=r"^on a Ray worker: unknown option 'bogus' for backend 'fake'") as got:
        label(c, progress=False)
    assert "\n" not in str(got.value)
