"""The transformers backend on the real embedded model (SmolLM2-135M, converted once and cached)."""
from __future__ import annotations

import math
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach the hub from tests

import pytest

pytest.importorskip("transformers")

from charter.errors import BackendError
from charter.backends.models import resolve_hf_checkpoint
from charter.types import Sampling

GREEDY = Sampling(max_tokens=16, temperature=0)

QUESTIONS = ["What is 2+2?", "Why is the sky blue?", "Tell me about cats and why people love them."]


def convo(text):
    return [{"role": "user", "content": text}]


@pytest.fixture(scope="module")
def checkpoint():
    try:
        return resolve_hf_checkpoint("embedded")
    except BackendError as exc:
        pytest.skip(str(exc))


@pytest.fixture(scope="module")
def backend(checkpoint):
    from charter.backends.hf import HFBackend

    b = HFBackend("embedded", batch_size=4)
    yield b
    b.close()


def test_conversion_writes_a_plain_checkpoint(checkpoint):
    from transformers import AutoConfig, AutoTokenizer

    names = os.listdir(checkpoint)
    assert "config.json" in names
    assert any(n.endswith(".safetensors") for n in names)
    config = AutoConfig.from_pretrained(checkpoint)
    assert getattr(config, "quantization_config", None) is None
    tok = AutoTokenizer.from_pretrained(checkpoint)
    assert tok.chat_template and tok.eos_token == "<|im_end|>"
    assert resolve_hf_checkpoint("embedded") == checkpoint  # cached: no second conversion


def test_chat_batch_returns_text(backend):
    out = backend.chat([convo(q) for q in QUESTIONS], GREEDY)
    assert len(out) == 3
    for c in out:
        assert c.text.strip() and c.prompt_tokens > 10 and 0 < c.completion_tokens <= 16
        assert c.finish_reason in ("stop", "length")
        assert "<|im_end|>" not in c.text


def test_greedy_batch_matches_single(backend):
    convos = [convo(q) for q in QUESTIONS + ["hi"]]  # different lengths: padding in the batch
    batch = [c.text for c in backend.chat(convos, GREEDY)]
    single = [backend.chat([c], GREEDY)[0].text for c in convos]
    assert batch == single


def test_stop_strings_cut_the_text(backend):
    prompt = "Count: 1, 2, 3, 4, 5, 6,"
    free = backend.complete([prompt], GREEDY)[0]
    assert "8" in free.text
    cut = backend.complete([prompt], Sampling(max_tokens=16, temperature=0, stop=("8",)))[0]
    assert "8" not in cut.text and free.text.startswith(cut.text)
    assert cut.finish_reason == "stop" and cut.completion_tokens < free.completion_tokens


def test_score_prefers_plausible_text(backend):
    ctx = convo("What is the capital of France?")
    good, bad = backend.score([ctx, ctx], ["The capital of France is Paris.", "zxq blorp fnord wug"])
    assert good.n_tokens > 0 and bad.n_tokens > 0
    assert good.mean > bad.mean


def test_score_matches_manual_logprob(backend):
    import torch

    context, continuation = "The capital of France is", " Paris, a large city."
    (got,) = backend.score([context], [continuation])
    tok = backend.tokenizer
    ctx_ids = tok(context)["input_ids"]
    full = tok(context + continuation)["input_ids"]
    assert full[: len(ctx_ids)] == ctx_ids
    with torch.no_grad():
        logits = backend.model(input_ids=torch.tensor([full])).logits[0].float()
    logp = torch.log_softmax(logits, -1)
    manual = sum(logp[i - 1, full[i]].item() for i in range(len(ctx_ids), len(full)))
    assert got.n_tokens == len(full) - len(ctx_ids)
    assert math.isclose(got.logprob, manual, abs_tol=1e-3)


def test_missing_local_path_is_a_clear_error(tmp_path):
    from charter.backends.hf import HFBackend

    with pytest.raises(BackendError, match="does not exist"):
        HFBackend(str(tmp_path / "nope"))
    with pytest.raises(BackendError, match="config.json"):
        HFBackend(str(tmp_path))


def test_unavailable_hub_id_is_a_clear_error():
    from charter.backends.hf import HFBackend

    if os.environ.get("HF_HUB_OFFLINE") != "1":
        pytest.skip("needs HF_HUB_OFFLINE=1 so that no download is attempted")
    with pytest.raises(BackendError, match="--model embedded"):
        HFBackend("charter-test/no-such-model")


def test_sampling_is_seeded_and_varies_with_the_seed(backend):
    convos = [convo("Tell me a short story about a dragon.")] * 2
    first = [c.text for c in backend.chat(convos, Sampling(max_tokens=16, temperature=1.0, seed=3))]
    again = [c.text for c in backend.chat(convos, Sampling(max_tokens=16, temperature=1.0, seed=3))]
    other = [c.text for c in backend.chat(convos, Sampling(max_tokens=16, temperature=1.0, seed=4))]
    assert first == again
    assert first[0] != first[1] and other != first  # rows and seeds draw different tokens


def test_a_step_is_tokenized_once_for_its_count_and_its_call(backend, monkeypatch):
    """The pipeline prepares a step once, counts its tokens, then sends it: the count and the call
    ask the tokenizer nothing more, and the prepared step generates what the request would."""
    calls = []
    encode = backend._encode
    monkeypatch.setattr(backend, "_encode", lambda *a: calls.append(a) or encode(*a))
    convo = [{"role": "user", "content": "A question asked once, then sent."}]
    (prepared,) = backend.prepare([convo])
    assert len(calls) == 1 and backend.count_tokens(prepared) == len(backend.prompt_ids(prepared))
    greedy = Sampling(max_tokens=8, temperature=0)
    sent = backend.chat([prepared], greedy)
    assert len(calls) == 1
    assert sent == backend.chat([convo], greedy) and len(calls) == 2
    assert backend.count_tokens(convo) == len(prepared) == sent[0].prompt_tokens
