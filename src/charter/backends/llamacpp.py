"""llama.cpp backend: xllamacpp embeds llama.cpp's own server (continuous batching, slots,
prompt-prefix caching) in-process; we talk to it with OpenAI-style request dicts.

Concurrency: ``Server.handle_*`` block the calling thread but release the GIL, so a thread pool
keeps every slot busy and llama.cpp batches the in-flight requests into one decode step.

Scoring: this llama.cpp build rejects ``echo`` ("Only no echo is supported"), so prompt-token
logprobs are unavailable. Instead we teacher-force: the continuation's exact token ids become a
grammar (``root ::= <[id1]> <[id2]> ...``) so generation can only produce them, and
``n_probs`` with ``post_sampling_probs: false`` reports each forced token's log-softmax of the raw
logits, i.e. log p(token | context, previous tokens), exactly what scoring needs.
"""
from __future__ import annotations

import itertools
import json
import logging
import os
import tempfile
import threading
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable, Sequence, TypeVar

from charter.backends import models
from charter.backends.base import Backend
from charter.errors import BackendError
from charter.types import Completion, Message, Sampling, Score

log = logging.getLogger("charter.backends.llamacpp")
T = TypeVar("T")
R = TypeVar("R")

# Per-slot context: llama.cpp splits n_ctx evenly over n_parallel slots (non-unified KV cache),
# so the default total scales with the slot count. 4096 holds the ~2k-token few-shot prefix plus
# a conversation and its answer, at a small KV cost per slot for small models.
SLOT_CTX = 4096
# One conversation in flight per slot, no queue: when a conversation's step ends, its slot is the
# only idle one, so its next step lands on the slot that already holds its KV and only the new
# tokens are prefilled. With requests queued, a freed slot takes whichever conversation is next
# and keeps only the shared few-shot prefix: llama.cpp's prefill is slow on CPU, so the pipeline
# slows down (bench/backends.py's notes).
QUEUE_FACTOR = 1
# Where share_prefix keeps the shared prefix's KV (inside the slot save directory).
PREFIX_FILE = "charter-shared-prefix.bin"
# Sampling means the same on every backend: plain temperature + nucleus, no hidden truncation
# (llama.cpp's defaults would add top_k=40, min_p=0.05).
NEUTRAL_SAMPLERS = {"top_k": 0, "min_p": 0.0, "typical_p": 1.0, "repeat_penalty": 1.0}


def _resolve_gguf(model: str) -> Path:
    """The embedded SmolLM2 GGUF, or a local .gguf path, with a clear error otherwise."""
    return models.resolve_gguf(model)  # one rule, which a dry run checks too


def _import_xllamacpp():
    try:
        import xllamacpp  # heavy native module: only imported when this backend is created
    except ImportError as exc:
        raise BackendError("the llamacpp backend needs xllamacpp; pip install 'charter[llamacpp]'") from exc
    return xllamacpp


def _set_params(target: Any, values: dict[str, Any], prefix: str = "") -> None:
    """Set CommonParams fields; ``sampling={"top_k": 0}`` or ``**{"sampling.top_k": 0}`` nest."""
    for key, value in values.items():
        head, _, rest = key.partition(".")
        if rest:
            value, key = {rest: value}, head
        if not hasattr(target, key):
            raise BackendError(f"unknown llama.cpp server parameter '{prefix}{key}'")
        if isinstance(value, dict):
            _set_params(getattr(target, key), value, f"{prefix}{key}.")
            continue
        try:
            setattr(target, key, value)
        except (TypeError, ValueError) as exc:
            raise BackendError(f"bad value for llama.cpp parameter '{prefix}{key}': {exc}") from exc


def _sampling_fields(sampling: Sampling) -> dict[str, Any]:
    """Sampling -> request fields. temperature 0 makes llama.cpp sample greedily."""
    fields: dict[str, Any] = {
        "max_tokens": sampling.max_tokens,
        "temperature": sampling.temperature,
        "top_p": sampling.top_p,
        "stop": list(sampling.stop),
        "cache_prompt": True,  # reuse the KV of a shared prefix (few-shot block, same convo)
        **NEUTRAL_SAMPLERS,
    }
    if sampling.seed is not None:
        fields["seed"] = sampling.seed
    return fields


def _token_grammar(ids: Sequence[int]) -> str:
    """A GBNF grammar that admits exactly this token sequence (teacher forcing)."""
    return "root ::= " + " ".join(f"<[{i}]>" for i in ids)


class LlamaCppBackend(Backend):
    name = "llamacpp"

    def __init__(
        self,
        model: str,
        n_parallel: int = 8,
        n_ctx: int | None = None,
        threads: int | None = None,
        **server_params: Any,
    ):
        self.model_id = model
        self.path = _resolve_gguf(model)
        if n_parallel < 1:
            raise BackendError(f"n_parallel must be at least 1, got {n_parallel}")
        self.n_parallel = n_parallel
        # Conversations the pipeline keeps in flight (it advances each independently): enough to
        # refill a slot as soon as it frees.
        self.concurrency = QUEUE_FACTOR * n_parallel
        self.n_ctx = n_ctx or SLOT_CTX * n_parallel
        xlc = _import_xllamacpp()
        params = self._params(xlc, threads, server_params)
        try:
            self._server = xlc.Server(params)
        except Exception as exc:  # the engine reports load failures as plain exceptions
            raise BackendError(f"llama.cpp could not load {self.path}: {exc}") from exc
        self._url = self._server.listening_address
        # Bypass any HTTP(S)_PROXY: the embedded server listens on loopback only.
        self._http = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        self._pool = ThreadPoolExecutor(QUEUE_FACTOR * n_parallel, thread_name_prefix="llamacpp")
        self._lock = threading.Lock()
        # Each pool thread sends to its own slot, so a conversation's next step (sent by the one
        # idle thread) finds its KV; _has_prefix says which slots start with the shared prefix.
        self._thread = threading.local()
        self._slot_ids = itertools.count()
        self._prefix: Sequence[Message] | str | None = None
        self._has_prefix = [False] * n_parallel

    def _params(self, xlc: Any, threads: int | None, server_params: dict[str, Any]) -> Any:
        params = xlc.CommonParams()
        params.model.path = str(self.path)
        params.n_parallel = self.n_parallel
        params.n_ctx = self.n_ctx
        params.cont_batching = True
        params.cache_prompt = True
        params.verbosity = 0  # errors only; llama.cpp's info log is per token-batch noise
        self._slot_dir = tempfile.TemporaryDirectory(prefix="charter-slots-")
        params.slot_save_path = self._slot_dir.name + "/"  # share_prefix copies KV through it
        if threads:
            params.cpuparams.n_threads = threads
            params.cpuparams_batch.n_threads = threads
        _set_params(params, server_params)
        return params

    # -- running requests -------------------------------------------------------------------

    def _require_server(self) -> Any:
        server = self._server
        if server is None:
            raise BackendError("the llamacpp backend is closed")
        return server

    def _map(self, fn: Callable[[T], R], items: Sequence[T]) -> list[R]:
        """Run fn over items on the pool (results in input order); the first failure wins."""
        self._require_server()
        futures = [self._pool.submit(fn, item) for item in items]
        try:
            return [f.result() for f in futures]
        except BaseException:
            for f in futures:
                f.cancel()  # don't start queued requests whose batch already failed
            raise

    def _call(self, method: str, request: dict[str, Any]) -> dict[str, Any]:
        """One engine request; llama.cpp reports request errors as {"error": {...}}."""
        handler = getattr(self._require_server(), method)
        try:
            result = handler(request)
        except Exception as exc:  # e.g. ValueError for malformed messages
            raise BackendError(f"llama.cpp rejected the request: {exc}") from exc
        if isinstance(result, str):  # some versions hand back JSON text
            result = json.loads(result)
        if "error" in result:
            err = result["error"]
            msg = err.get("message", err) if isinstance(err, dict) else err
            raise BackendError(f"llama.cpp request failed: {msg}")
        return result

    @staticmethod
    def _completion(result: dict[str, Any], text: str) -> Completion:
        choice = result["choices"][0]
        usage = result.get("usage") or {}
        finish = "length" if choice.get("finish_reason") == "length" else "stop"
        return Completion(
            text or "", int(usage.get("prompt_tokens", 0)), int(usage.get("completion_tokens", 0)), finish
        )

    # -- Backend protocol -------------------------------------------------------------------

    def chat(self, convos: Sequence[Sequence[Message]], sampling: Sampling) -> list[Completion]:
        fields = _sampling_fields(sampling)

        def one(convo: Sequence[Message]) -> Completion:
            request = self._pinned({"messages": [dict(m) for m in convo], **fields}, convo)
            result = self._call("handle_chat_completions", request)
            return self._completion(result, result["choices"][0]["message"].get("content"))

        return self._map(one, convos)

    def complete(self, prompts: Sequence[str], sampling: Sampling) -> list[Completion]:
        fields = _sampling_fields(sampling)

        def one(prompt: str) -> Completion:
            result = self._call("handle_completions", self._pinned({"prompt": prompt, **fields}, prompt))
            return self._completion(result, result["choices"][0].get("text"))

        return self._map(one, prompts)

    def score(
        self, contexts: Sequence[Sequence[Message] | str], continuations: Sequence[str]
    ) -> list[Score]:
        if len(contexts) != len(continuations):
            raise BackendError(f"score got {len(contexts)} contexts but {len(continuations)} continuations")
        return self._map(lambda pair: self._score_one(*pair), list(zip(contexts, continuations)))

    def _score_one(self, context: Sequence[Message] | str, continuation: str) -> Score:
        prompt = context if isinstance(context, str) else self.render(context)
        ctx_ids = self.tokenize(prompt, add_special=True, parse_special=True)
        cont_ids = self.tokenize(continuation, add_special=False, parse_special=False)
        if not cont_ids:
            return Score(0.0, 0)
        request = {
            "prompt": ctx_ids,
            "max_tokens": len(cont_ids),
            "temperature": 0.0,
            "grammar": _token_grammar(cont_ids),
            "n_probs": 1,
            "post_sampling_probs": False,  # log-softmax of the raw logits, not the sampler's
            "cache_prompt": True,
        }
        content = (self._call("handle_completions", self._pinned(request, prompt))["choices"][0].get("logprobs") or {}).get("content") or []
        got = [t["id"] for t in content]
        if got != cont_ids:
            raise BackendError(f"llama.cpp did not follow the forced continuation ({len(got)}/{len(cont_ids)} tokens)")
        return Score(float(sum(t["logprob"] for t in content)), len(cont_ids))

    # -- slots and the shared prefix ----------------------------------------------------------

    def share_prefix(self, prefix: Sequence[Message] | str) -> None:
        """Many requests will start with `prefix` (the few-shot block): prefill it once, then copy
        its KV into a slot (llama.cpp's slot save/restore, a few ms) whenever a request that starts
        with it lands on a slot that lacks it, instead of every slot prefilling it (seconds each on
        a CPU). Optional: without it, llama.cpp's own prompt cache still reuses what a slot holds."""
        text = prefix if isinstance(prefix, str) else self._rendered_prefix(prefix)
        self._call("handle_completions", {"prompt": text, "max_tokens": 1, "temperature": 0.0, "id_slot": 0,
                                          "cache_prompt": True})
        try:
            self._post("/slots/0?action=save", {"filename": PREFIX_FILE})
        except BackendError as exc:  # e.g. endpoint_slots=False: each slot then prefills it itself
            log.warning("llama.cpp could not save the shared prefix, so it is not copied: %s", exc)
            return
        with self._lock:
            self._prefix = prefix
            self._has_prefix = [slot == 0 for slot in range(self.n_parallel)]

    def _rendered_prefix(self, messages: Sequence[Message]) -> str:
        """The chat template's text for `messages` as the start of a longer conversation: where two
        conversations that continue it with different user turns still agree."""
        return os.path.commonprefix([self.render([*messages, {"role": "user", "content": c}]) for c in "ab"])

    def _starts_with_prefix(self, request: Sequence[Message] | str) -> bool:
        prefix = self._prefix
        if prefix is None or isinstance(prefix, str) != isinstance(request, str):
            return False
        if isinstance(request, str):
            return request.startswith(prefix)
        return len(request) > len(prefix) and all(dict(m) == dict(p) for m, p in zip(request, prefix))

    def _pinned(self, request: dict[str, Any], content: Sequence[Message] | str) -> dict[str, Any]:
        """`request` bound to this thread's slot, with the shared prefix loaded there if it needs it."""
        slot = getattr(self._thread, "slot", None)
        if slot is None:
            slot = self._thread.slot = next(self._slot_ids) % self.n_parallel
        shared = self._starts_with_prefix(content)
        if shared and not self._has_prefix[slot]:
            self._post(f"/slots/{slot}?action=restore", {"filename": PREFIX_FILE})
        self._has_prefix[slot] = shared
        return {**request, "id_slot": slot}

    # -- template and tokenizer (the embedded server's HTTP endpoints, loopback only) --------

    def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        self._require_server()
        req = urllib.request.Request(
            self._url + path, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
        )
        try:
            with self._http.open(req, timeout=600) as resp:
                return json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            raise BackendError(f"llama.cpp {path} failed: {exc.read().decode(errors='replace')[:300]}") from exc
        except (urllib.error.URLError, OSError) as exc:
            raise BackendError(f"llama.cpp {path} failed: {exc}") from exc

    @property
    def url(self) -> str:
        """The embedded server's address (loopback): OpenAI-compatible clients can use it too."""
        return self._url

    def render(self, convo: Sequence[Message]) -> str:
        """The GGUF's chat template applied to convo, ending where the assistant turn starts."""
        return self._post("/apply-template", {"messages": [dict(m) for m in convo]})["prompt"]

    def tokenize(self, text: str, add_special: bool = False, parse_special: bool = False) -> list[int]:
        body = {"content": text, "add_special": add_special, "parse_special": parse_special}
        return [int(t) for t in self._post("/tokenize", body)["tokens"]]

    # -- lifecycle ---------------------------------------------------------------------------

    def close(self) -> None:
        """Finish in-flight requests, then drop the Server: its destructor stops the loop."""
        with self._lock:
            if self._server is None:
                return
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._server = None  # the only reference: ~Server joins llama.cpp's threads here
            self._slot_dir.cleanup()

    def __repr__(self) -> str:
        return f"LlamaCppBackend(model={self.model_id!r}, n_parallel={self.n_parallel}, n_ctx={self.n_ctx})"
