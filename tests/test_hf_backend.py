"""The transformers backend on the real embedded model (SmolLM2-135M, converted once and cached)."""
from __future__ import annotations

import math
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach the hub from tests

import pytest

pytest.importorskip("transformers")

from charter.errors import BackendError
from charter.models import resolve_hf_checkpoint
from charter.types import Sampling

GREEDY = Sampling(max_tokens=16, temperature=0)

# A transcript-style few-shot prefix long enough (> 256 tokens) to trigger the prefix cache.
SHOT = (
    "Human: Could you help me with my homework about the Roman Empire?\n\n"
    "Assistant: Of course. The Roman Empire began in 27 BC when Augustus became emperor.\n\n"
    "CritiqueRequest: Identify ways in which the assistant's last response is harmful.\n\n"
    "Critique: The response is accurate and harmless.\n\n"
)
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


def test_prefix_cache_does_not_change_greedy_output(backend):
    prefix = SHOT * 6
    assert len(backend.tokenizer(prefix)["input_ids"]) > 256
    prompts = [prefix + f"Human: {q}\n\nAssistant:" for q in QUESTIONS]
    backend.prefix_cache = False
    try:
        plain = [c.text for c in backend.complete(prompts, GREEDY)]
    finally:
        backend.prefix_cache = True
    cached = [c.text for c in backend.complete(prompts, GREEDY)]
    assert cached == plain
    assert backend._prefixes.store  # the cache was really used
    again = [c.text for c in backend.complete(prompts, GREEDY)]  # hit: a reused cache is not stale
    assert again == plain
    # A longer shared prefix extends the stored entry instead of recomputing it.
    longer = [prefix + "Human: Hello!\n\nAssistant: Hi.\n\nHuman: " + q for q in QUESTIONS[:2]]
    backend.prefix_cache = False
    try:
        plain = [c.text for c in backend.complete(longer, GREEDY)]
    finally:
        backend.prefix_cache = True
    assert [c.text for c in backend.complete(longer, GREEDY)] == plain


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


def test_conversation_cache_does_not_change_greedy_output(backend):
    """A conversation's next call reuses its own KV from the last call (after the shared prefix)."""
    shot = [{"role": "user", "content": SHOT * 4}, {"role": "assistant", "content": "Understood."}]

    def dialogue():
        backend._rows.clear()
        backend._prefixes.store.clear()
        convos = [shot + convo(q) for q in QUESTIONS]
        first = backend.chat(convos, GREEDY)
        convos = [c + [{"role": "assistant", "content": o.text}, {"role": "user", "content": "Say more."}]
                  for c, o in zip(convos, first)]
        second = backend.chat(convos[:2], GREEDY) + backend.chat(convos[2:], GREEDY)  # new batch shapes
        return [o.text for o in first + second], second[0].prompt_tokens

    backend.prefix_cache = False
    try:
        plain, _ = dialogue()
    finally:
        backend.prefix_cache = True
    cached, prompt_tokens = dialogue()
    assert cached == plain
    # every conversation was kept, and the second calls found them
    assert len(backend._rows.entries) == len(QUESTIONS)
    assert all(len(e.tokens) > prompt_tokens - len(e.prefix) - 20 for e in backend._rows.entries.values())


def test_rows_that_end_early_leave_the_batch_without_changing_output(backend, monkeypatch):
    """Once rows end (EOS or a stop string), the batch halts and the rest go on in a smaller
    batch from their cached KV; the text is what one uninterrupted batch gives."""
    import charter.backends.hf as hf

    questions = ["What is 2+2?", "Why is the sky blue?", "Tell me about cats and why people love them.", "hi"]
    chats = [convo(q) for q in questions]  # greedy lengths here: 11, 40, 40, 10 tokens
    texts = [f"Human: {q}\n\nAssistant:" for q in questions]
    greedy, cut = Sampling(max_tokens=40, temperature=0), Sampling(max_tokens=40, temperature=0, stop=(".",))
    runs = []
    spy = backend._run

    def counting(*args):
        runs.append(len(args[0]))
        return spy(*args)

    def outputs():
        backend._rows.clear()
        runs.clear()
        return backend.chat(chats, greedy) + backend.complete(texts, cut)

    monkeypatch.setattr(backend, "_run", counting)
    monkeypatch.setattr(hf, "HALT_ROW_STEPS", 10**9)
    whole = outputs()
    assert runs == [4, 4]  # never halted
    monkeypatch.setattr(hf, "HALT_ROW_STEPS", 16)
    halted = outputs()
    assert [o.text for o in halted] == [o.text for o in whole]
    assert [o.completion_tokens for o in halted] == [o.completion_tokens for o in whole]
    assert [o.finish_reason for o in halted] == [o.finish_reason for o in whole]
    assert len(runs) >= 4 and min(runs) < 4  # both formats halted and went on with fewer rows


def test_draw_token_samples_the_warped_distribution():
    import torch

    from charter.backends.hf import DrawToken

    torch.manual_seed(0)
    probs = torch.tensor([0.5, 0.3, 0.2, 0.0])  # a masked (top-p) token must never be drawn
    picks = DrawToken()(None, probs.log().expand(40_000, 4).clone()).argmax(-1)
    freq = torch.bincount(picks, minlength=4) / len(picks)
    assert torch.allclose(freq, probs, atol=0.01), freq
    assert freq[3] == 0


def test_sampling_is_seeded_and_varies_with_the_seed(backend):
    convos = [convo("Tell me a short story about a dragon.")] * 2
    first = [c.text for c in backend.chat(convos, Sampling(max_tokens=16, temperature=1.0, seed=3))]
    again = [c.text for c in backend.chat(convos, Sampling(max_tokens=16, temperature=1.0, seed=3))]
    other = [c.text for c in backend.chat(convos, Sampling(max_tokens=16, temperature=1.0, seed=4))]
    assert first == again
    assert first[0] != first[1] and other != first  # rows and seeds draw different tokens
