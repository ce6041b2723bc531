"""`--backend auto`, the default: vLLM where it imports, else transformers; llama.cpp for GGUF."""
import sys

import pytest

from charter import backends
from charter.config import GenerateConfig


def test_auto_is_the_default_and_picks_vllm_where_it_imports():
    assert GenerateConfig().backend == "auto"
    assert backends.resolve_backend("auto", "embedded") == "vllm"  # setup installs vLLM everywhere
    assert backends.resolve_backend("auto", "./model.GGUF") == "llamacpp"
    assert backends.resolve_backend("transformers", "embedded") == "transformers"


def test_auto_falls_back_to_transformers_when_vllm_does_not_import(monkeypatch):
    monkeypatch.setitem(sys.modules, "vllm", None)  # import vllm -> ImportError
    assert backends.resolve_backend("auto", "embedded") == "transformers"


def test_generate_logs_the_backend_auto_chose(tmp_path, caplog, monkeypatch):
    made = []

    def fake_create(name, model, **options):
        from charter.backends.fake import FakeBackend

        made.append(name)
        return FakeBackend(model)

    monkeypatch.setattr(backends, "create_backend", fake_create)
    monkeypatch.setattr(backends, "vllm_imports", lambda: False)
    from charter.generate import generate

    with caplog.at_level("INFO", logger="charter"):
        generate(GenerateConfig(limit=1, rounds=1, out=str(tmp_path / "r")), progress=False)
    assert made == ["transformers"]
    assert "backend auto -> transformers (no vLLM here)" in caplog.text


def test_unknown_backend_lists_auto():
    from charter.errors import BackendError

    with pytest.raises(BackendError, match="auto"):
        backends.check_backend_name("vlm")


def test_a_gguf_file_on_a_backend_that_cannot_read_it_names_the_one_that_can(tmp_path):
    from charter.errors import BackendError
    from charter.models import resolve_hf_checkpoint

    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF")
    with pytest.raises(BackendError, match="--backend llamacpp"):
        resolve_hf_checkpoint(str(gguf))


def test_generate_tells_the_backend_how_many_requests_the_run_makes(tmp_path, monkeypatch):
    """The workload reaches create_backend: 3 red-team prompts x (answer + 2 rounds of critique
    and revision) + 3 helpful prompts x 2 samples = 21 requests."""
    seen = []

    def fake_create(name, model, workload=None, **options):
        from charter.backends.fake import FakeBackend

        seen.append(workload)
        return FakeBackend(model)

    monkeypatch.setattr(backends, "create_backend", fake_create)
    from charter.generate import generate

    cfg = GenerateConfig(backend="fake", limit=3, rounds=2, helpful_prompts="default", helpful_samples=2,
                         out=str(tmp_path / "r"))
    generate(cfg, progress=False)
    assert seen == [3 * 5 + 3 * 2]


def test_a_backend_sizes_its_options_to_the_workload_and_the_user_wins(monkeypatch):
    """create_backend merges a backend's workload_options under the user's options."""
    from charter.backends.fake import FakeBackend

    monkeypatch.setattr(FakeBackend, "workload_options",
                        staticmethod(lambda n: {"fail_on": "big"} if n and n > 10 else {}), raising=False)
    assert backends.create_backend("fake", "m", workload=5).fail_on is None
    assert backends.create_backend("fake", "m", workload=50).fail_on == "big"
    assert backends.create_backend("fake", "m", workload=50, fail_on="mine").fail_on == "mine"


def test_vllm_compiles_only_for_long_runs_on_cpu(monkeypatch):
    from charter.backends import vllm_backend as vb

    monkeypatch.setattr(vb, "_cuda", lambda: False)
    assert vb.workload_options(None) == {} and vb.workload_options(vb.COMPILE_MIN_STEPS - 1) == {}
    assert vb.workload_options(vb.COMPILE_MIN_STEPS) == {"enforce_eager": False}
    monkeypatch.setattr(vb, "_cuda", lambda: True)  # vLLM's own default on GPU: compiled
    assert vb.workload_options(10**6) == {}


def test_every_backend_declares_the_capabilities_and_closes_as_a_context_manager():
    """The pipeline reads capabilities off the base class's declarations, never by probing."""
    import importlib

    from charter.backends.base import Backend
    from charter.backends.fake import FakeBackend

    for name, path in backends.BACKENDS.items():
        module, cls = path.split(":")
        assert issubclass(getattr(importlib.import_module(module), cls), Backend), name
    closed = []
    fake = FakeBackend()
    fake.close = lambda: closed.append(True)
    with fake as b:
        assert b.concurrency is None and b.max_context is None and b.count_tokens("x") is None
        assert b.prepare(["x", [{"role": "user", "content": "y"}]]) == ["x", [{"role": "user", "content": "y"}]]
        assert b.share_prefix("x") is None and FakeBackend.workload_options(10**6) == {}
    assert closed == [True]


def test_auto_gives_a_short_run_to_the_engine_that_starts_fastest(tmp_path, caplog, monkeypatch):
    """Below the measured break-even (requests x max_tokens) transformers finishes before vLLM has started."""
    assert backends.auto_choice("embedded", backends.AUTO_SHORT_RUN_TOKENS)[0] == "transformers"
    assert backends.auto_choice("embedded", backends.AUTO_SHORT_RUN_TOKENS + 1)[0] == "vllm"
    assert backends.auto_choice("embedded", None)[0] == "vllm"  # size unknown: the fast engine
    assert backends.auto_choice("m.gguf", 1)[0] == "llamacpp"
    from charter.backends.fake import FakeBackend
    from charter.generate import generate

    made = []
    monkeypatch.setattr(backends, "create_backend", lambda name, model, **o: made.append(name) or FakeBackend(model))
    with caplog.at_level("INFO", logger="charter"):  # 1 prompt, 1 request of 32 tokens
        generate(GenerateConfig(limit=1, rounds=0, helpful_prompts="none", max_tokens=32, out=str(tmp_path / "r")),
                 progress=False)
    assert made == ["transformers"]
    assert "backend auto -> transformers (a short run: at most 32 tokens" in caplog.text


@pytest.mark.slow
def test_a_one_record_run_under_auto_runs_on_transformers(tmp_path):
    """End to end on the embedded model: a 1-request run starts the fast engine, not vLLM."""
    from charter.generate import generate
    from charter.store import load_run

    s = generate(GenerateConfig(limit=1, rounds=0, helpful_prompts="none", max_tokens=8, seed=0,
                                out=str(tmp_path / "r")), progress=False)
    (rec,) = load_run(tmp_path / "r")
    assert s.records == 1 and rec.backend == "transformers" and rec.initial
