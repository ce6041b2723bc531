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


def test_generate_prints_the_backend_auto_chose(tmp_path, capsys, monkeypatch):
    made = []

    def fake_create(name, model, **options):
        from charter.backends.fake import FakeBackend

        made.append(name)
        return FakeBackend(model)

    monkeypatch.setattr(backends, "create_backend", fake_create)
    monkeypatch.setattr(backends, "vllm_imports", lambda: False)
    from charter.generate import generate

    generate(GenerateConfig(limit=1, rounds=1, out=str(tmp_path / "r")), progress=False)
    assert made == ["transformers"]
    assert "backend auto -> transformers" in capsys.readouterr().err


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
