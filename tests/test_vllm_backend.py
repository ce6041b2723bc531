"""vLLM runs only where a GPU is lent; everywhere else these tests skip with the reason."""
import pytest

from charter.types import Sampling


def _gpu() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except ImportError:
        return False


needs_gpu = pytest.mark.skipif(not _gpu(), reason="vLLM needs a CUDA GPU; none here")


@pytest.fixture(scope="module")
def backend():
    pytest.importorskip("vllm")
    from charter.backends import create_backend

    b = create_backend("vllm", "embedded", gpu_memory_utilization=0.3, max_model_len=4096)
    yield b
    b.close()


@needs_gpu
def test_chat_complete_score(backend):
    outs = backend.chat([[{"role": "user", "content": "Name a colour."}]] * 3, Sampling(max_tokens=12, temperature=0))
    assert len({o.text for o in outs}) == 1 and outs[0].text and outs[0].completion_tokens <= 12
    done = backend.complete(["\n\nHuman: Hi\n\nAssistant:"], Sampling(max_tokens=30, stop=("\n\nHuman:",)))
    assert "\n\nHuman:" not in done[0].text
    good, bad = backend.score(["The capital of France is"] * 2, [" Paris.", " zebra lamp."])
    assert good.mean > bad.mean


def test_missing_vllm_message(monkeypatch):
    import builtins

    from charter.backends import create_backend
    from charter.errors import BackendError

    real = builtins.__import__
    monkeypatch.setattr(builtins, "__import__", lambda n, *a, **k: (_ for _ in ()).throw(ImportError(n)) if n == "vllm" else real(n, *a, **k))
    with pytest.raises(BackendError, match=r"charter\[vllm\]"):
        create_backend("vllm", "embedded")
