"""The llama.cpp backend on the real embedded GGUF (SmolLM2-135M-Instruct, Q4_1)."""
from __future__ import annotations

import pytest

pytest.importorskip("xllamacpp")

from charter.backends import models  # noqa: E402
from charter.backends import create_backend  # noqa: E402
from charter.backends.llamacpp import LlamaCppBackend  # noqa: E402
from charter.errors import BackendError  # noqa: E402
from charter.types import Completion, Sampling  # noqa: E402

pytestmark = pytest.mark.slow

GREEDY = Sampling(max_tokens=16, temperature=0.0)
QUESTIONS = ["What is 2+2?", "Name a color.", "Say hello.", "What is the capital of Italy?"]
CONVOS = [[{"role": "user", "content": q}] for q in QUESTIONS]


@pytest.fixture(scope="module")
def backend():
    try:
        models.embedded_gguf_path()
    except BackendError as exc:
        pytest.skip(str(exc))
    b = create_backend("llamacpp", "embedded", n_parallel=4)
    yield b
    b.close()


def test_registry_builds_it(backend):
    assert isinstance(backend, LlamaCppBackend)
    assert backend.name == "llamacpp" and backend.model_id == "embedded"
    assert backend.n_ctx == 4 * 4096  # per-slot context = n_ctx / n_parallel


@pytest.fixture(scope="module")
def greedy_batch(backend):
    return backend.chat(CONVOS, GREEDY)


def test_chat_batch_in_order(backend, greedy_batch):
    out = backend.chat(CONVOS, Sampling(max_tokens=24, temperature=0.7, seed=1))
    assert len(out) == 4 and all(isinstance(c, Completion) for c in out)
    assert all(c.text.strip() for c in out)
    assert all(0 < c.completion_tokens <= 24 and c.prompt_tokens > 0 for c in out)
    assert all(c.finish_reason in ("stop", "length") for c in out)
    # Order: each greedy answer equals the one for the same conversation sent alone.
    alone = [backend.chat([c], GREEDY)[0].text for c in CONVOS]
    assert [c.text for c in greedy_batch] == alone
    assert len(set(alone)) == 4


def test_greedy_is_deterministic(backend, greedy_batch):
    # Not a documented llama.cpp guarantee, but on CPU each sequence's logits come out
    # bit-identical whatever else shares the batch (and with or without a cached prefix), so
    # greedy text repeats across calls and batch compositions.
    again = backend.chat(list(reversed(CONVOS)), GREEDY)[::-1]
    assert [c.text for c in again] == [c.text for c in greedy_batch]


def test_seeded_sampling_repeats(backend):
    s = Sampling(max_tokens=16, temperature=1.0, seed=123)
    assert backend.complete(["Once upon a time"], s)[0].text == backend.complete(["Once upon a time"], s)[0].text


def test_stop_strings_cut_output(backend):
    free = backend.complete(["1, 2, 3, 4,"], Sampling(max_tokens=20, temperature=0.0))[0]
    assert " 7" in free.text  # the model counts on; without a stop it passes 7
    cut = backend.complete(["1, 2, 3, 4,"], Sampling(max_tokens=20, temperature=0.0, stop=(" 7",)))[0]
    assert " 7" not in cut.text and free.text.startswith(cut.text)
    assert cut.finish_reason == "stop" and cut.completion_tokens < free.completion_tokens


def test_max_tokens_gives_length(backend):
    c = backend.complete(["Write a very long essay about the sea."], Sampling(max_tokens=5, temperature=0.0))[0]
    assert c.completion_tokens == 5 and c.finish_reason == "length"


def test_complete_raw_text(backend):
    out = backend.complete(["The capital of France is", "def add(a, b):\n    return"], GREEDY)
    assert "Paris" in out[0].text
    assert out[1].text.strip() and out[0].prompt_tokens == 5


def test_score_prefers_plausible(backend):
    good, bad = backend.score(["The capital of France is"] * 2, [" Paris.", " zebra purple of the."])
    assert good.logprob > bad.logprob and good.n_tokens == 2
    convo = [{"role": "user", "content": "What is the capital of France?"}]
    good, bad = backend.score([convo, convo], ["The capital of France is Paris.", "Zebra purple quickly the of."])
    assert good.mean > bad.mean and good.logprob < 0


def test_score_counts_continuation_tokens(backend):
    prompt = "The capital of France is"
    text = backend.complete([prompt], Sampling(max_tokens=3, temperature=0.0))[0].text
    score = backend.score([prompt], [text])[0]
    assert score.n_tokens == len(backend.tokenize(text)) and -20 < score.logprob < 0
    assert backend.score([prompt], [""])[0].n_tokens == 0


def test_engine_error_is_backend_error(backend):
    with pytest.raises(BackendError, match="context"):
        backend.complete(["word " * 5000], GREEDY)  # longer than one slot's 4096 tokens


@pytest.mark.parametrize("model", ["/no/such/model.gguf", __file__])
def test_bad_path(model):
    with pytest.raises(BackendError):
        LlamaCppBackend(model)


def test_two_backends_in_one_process(backend):
    other = LlamaCppBackend("embedded", n_parallel=1, n_ctx=2048)
    try:
        assert other.complete(["Hello"], Sampling(max_tokens=4, temperature=0.0))[0].completion_tokens == 4
    finally:
        other.close()
    other.close()  # idempotent
    with pytest.raises(BackendError, match="closed"):
        other.complete(["Hello"], GREEDY)
    assert backend.complete(["Hello"], Sampling(max_tokens=2, temperature=0.0))[0].text


def test_shared_prefix_is_copied_into_slots_not_recomputed(backend):
    from charter.inputs import templates
    from charter.inputs.constitution import load_constitution

    shots = templates.few_shot_messages(load_constitution().few_shots)
    prefix = backend._rendered_prefix(shots)
    prompts = [backend.render(shots + c) for c in CONVOS]  # what a few-shot request looks like
    answers = ["It is 4.", "Blue.", "Hello there!", "Rome."]
    before = backend.score(prompts, answers)  # each slot prefills the block itself
    backend.chat(CONVOS, GREEDY)  # the slots now hold short prompts instead
    backend.share_prefix(prefix)
    n_prefix = len(backend.tokenize(prefix, add_special=True, parse_special=True))

    def cached(prompt):  # what llama.cpp found in the slot's KV when the request arrived
        request = backend._pinned({"prompt": prompt, "max_tokens": 1, "temperature": 0.0}, prompt)
        return backend._call("handle_completions", request)["timings"]["cache_n"]

    assert all(n >= n_prefix - 2 for n in backend._map(cached, prompts))  # a boundary token may differ
    backend.chat(CONVOS, GREEDY)
    after = backend.score(prompts, answers)  # scored on copied KV
    # Same log-probs up to rounding: llama.cpp itself moves these by up to ~0.2 nats between cache
    # states and batch splits (measured: -5.66 vs -5.86 for one request, no copying involved), so
    # greedy text can flip on a near-tie; KV of the wrong tokens would move them by whole nats.
    assert all(abs(a.logprob - b.logprob) < 0.5 for a, b in zip(after, before))
