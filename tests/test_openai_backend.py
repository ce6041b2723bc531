"""The openai backend against a real OpenAI-compatible server on 127.0.0.1 (llama.cpp's server,
embedded in xllamacpp, serving the embedded GGUF), directly and through a fault-injecting proxy."""
import json
import socket
from collections import Counter

import pytest

from charter.generate import GenerateConfig
from charter.generate import generate
from charter.runs.runread import load_run
from charter.types import Sampling

from fault_proxy import Blackhole, FaultProxy

pytest.importorskip("xllamacpp")
pytest.importorskip("openai")
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def server_url():
    from charter.backends.llamacpp import LlamaCppBackend

    engine = LlamaCppBackend("embedded", n_parallel=4)  # its HTTP server listens on loopback
    yield engine._url
    engine.close()


def run_cfg(tmp_path, url, **kw):
    opts = {"base_url": url + "/v1", "concurrency": 4, **kw.pop("options", {})}
    base = dict(backend="openai", model="smollm2", backend_options=opts, limit=2, helpful_samples=1, rounds=1,
                max_tokens=16, out=str(tmp_path / "run"), seed=3)
    return GenerateConfig(**{**base, **kw})


def test_generate_and_resume(server_url, tmp_path, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-do-not-log-me")
    s = generate(run_cfg(tmp_path, server_url, limit=1), progress=False)
    assert s.records == 2 and s.failures == 0
    s2 = generate(run_cfg(tmp_path, server_url), progress=False)
    assert s2.skipped == 2 and s2.records == 2
    recs = load_run(tmp_path / "run")
    assert len(recs) == 4 and all(r.error is None and r.initial for r in recs)
    assert all(len(r.rounds) == 1 and r.rounds[0].critique for r in recs if r.kind == "red_team")
    for f in (tmp_path / "run").iterdir():
        assert "sk-do-not-log-me" not in f.read_text()


def test_text_format_and_logprobs(server_url):
    from charter.backends import create_backend

    b = create_backend("openai", "smollm2", base_url=server_url + "/v1", concurrency=2)
    outs = b.chat([[{"role": "user", "content": "Name a fruit."}]] * 2, Sampling(max_tokens=8, temperature=0, logprobs=True))
    assert outs[0].text == outs[1].text and outs[0].logprob is not None and outs[0].logprob < 0
    done = b.complete(["\n\nHuman: Count to three.\n\nAssistant:"], Sampling(max_tokens=40, temperature=0, stop=("\n\nHuman:",)))
    assert done[0].text and "\n\nHuman:" not in done[0].text
    b.close()


def test_faulty_server_every_record_once(server_url, tmp_path):
    """Drops, 429 + Retry-After, 500/503 and stalls: the run completes, each record exactly once."""
    with FaultProxy(server_url, fault_rate=0.35, seed=7) as proxy:
        cfg = run_cfg(tmp_path, proxy.url, limit=4, options={"timeout": 120.0, "max_retries": 12})
        s = generate(cfg, progress=False)
    lines = (tmp_path / "run" / "records.jsonl").read_text().splitlines()
    ids = Counter(json.loads(line)["id"] for line in lines)
    assert s.failures == 0 and len(ids) == 8 and max(ids.values()) == 1
    assert sum(v for k, v in proxy.counts.items() if k != "ok") >= 3, proxy.counts


def test_hung_server_times_out_per_record(tmp_path):
    with Blackhole() as hole:
        cfg = run_cfg(tmp_path, hole.url, limit=1, helpful_prompts="none", options={"timeout": 0.5, "max_retries": 1})
        s = generate(cfg, progress=False)
    recs = load_run(tmp_path / "run")
    assert s.failures == len(recs) == 1 and "APITimeoutError" in recs[0].error


def test_dead_server_fails_records_not_run(tmp_path):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed once we leave: nothing listens there
    cfg = run_cfg(tmp_path, f"http://127.0.0.1:{port}", options={"timeout": 1.0, "max_retries": 1})
    s = generate(cfg, progress=False)
    recs = load_run(tmp_path / "run")
    assert s.failures == len(recs) == 4
    assert all("APIConnectionError" in r.error and "127.0.0.1" in r.error for r in recs)
