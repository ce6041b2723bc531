"""Any OpenAI-compatible HTTP server (vLLM, SGLang, TGI, llama.cpp's server, Ollama, hosted APIs).

A thin wrapper over the official ``openai`` client, which already retries 408/409/429/5xx,
timeouts and connection resets with exponential backoff and jitter, honouring Retry-After: we set
its retry budget and per-request timeout and turn the final failure into a BackendError (the
pipeline marks that record failed; a re-run retries it). The API key is read from an environment
variable and never stored in the run directory.
"""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Sequence

from charter.backends.base import Backend
from charter.errors import BackendError
from charter.types import Completion, Message, Sampling, Score


def _cut(text: str, stops: Sequence[str]) -> tuple[str, bool]:
    """Cut at the first stop string (servers differ in whether they strip it)."""
    hits = [text.find(s) for s in stops if s in text]
    return (text[: min(hits)], True) if hits else (text, False)


class OpenAIBackend(Backend):
    name = "openai"

    def __init__(self, model: str, base_url: str | None = None, api_key_env: str = "OPENAI_API_KEY",
                 concurrency: int = 16, timeout: float = 120.0, max_retries: int = 8, max_stops: int | None = None,
                 extra_body: dict[str, Any] | None = None):
        try:
            import openai
        except ImportError as exc:
            raise BackendError("the openai backend needs the openai client; pip install 'charter[openai]'") from exc
        base_url = base_url or os.environ.get("OPENAI_BASE_URL")
        key = os.environ.get(api_key_env) or ("EMPTY" if base_url else None)
        if key is None:
            raise BackendError(f"set {api_key_env} (or pass --base-url for a local server that needs no key)")
        self.model_id, self.concurrency = model, concurrency
        self.max_stops, self.extra_body = max_stops, extra_body or {}
        self._errors = (openai.APIError,)
        self.client = openai.OpenAI(base_url=base_url, api_key=key, timeout=timeout, max_retries=max_retries)
        self._pool = ThreadPoolExecutor(max(1, concurrency))

    def _params(self, sampling: Sampling) -> dict[str, Any]:
        stops = list(sampling.stop)[: self.max_stops] if sampling.stop else None
        p = {"model": self.model_id, "max_tokens": sampling.max_tokens, "temperature": sampling.temperature,
             "top_p": sampling.top_p, "stop": stops, "seed": sampling.seed, "logprobs": sampling.logprobs or None}
        if self.extra_body:
            p["extra_body"] = self.extra_body
        return {k: v for k, v in p.items() if v is not None}

    def _call(self, fn, **kwargs):
        try:
            return fn(**kwargs)
        except self._errors as exc:  # after the client's own retries
            hint = " (is the server running?)" if type(exc).__name__ == "APIConnectionError" else ""
            raise BackendError(f"{type(exc).__name__} from {self.client.base_url}{hint}: {exc}") from exc

    def _completion(self, text: str | None, finish: str | None, usage, stops: Sequence[str],
                    logprob: float | None = None) -> Completion:
        text, cut = _cut(text or "", stops)
        reason = "length" if finish == "length" and not cut else "stop"
        return Completion(text, getattr(usage, "prompt_tokens", 0) or 0, getattr(usage, "completion_tokens", 0) or 0,
                          reason, logprob)

    def _chat_one(self, convo: Sequence[Message], sampling: Sampling) -> Completion:
        r = self._call(self.client.chat.completions.create, messages=list(convo), **self._params(sampling))
        choice = r.choices[0]
        content = getattr(choice.logprobs, "content", None)
        logprob = sum(t.logprob for t in content) if content else None
        return self._completion(choice.message.content, choice.finish_reason, r.usage, sampling.stop, logprob)

    def _complete_one(self, prompt: str, sampling: Sampling) -> Completion:
        params = self._params(sampling)
        if sampling.logprobs:
            params["logprobs"] = 1  # the completions endpoint takes a count, not a flag
        r = self._call(self.client.completions.create, prompt=prompt, **params)
        lp = r.choices[0].logprobs
        logprob = sum(x for x in lp.token_logprobs if x is not None) if lp and lp.token_logprobs else None
        return self._completion(r.choices[0].text, r.choices[0].finish_reason, r.usage, sampling.stop, logprob)

    def chat(self, convos: Sequence[Sequence[Message]], sampling: Sampling) -> list[Completion]:
        return list(self._pool.map(lambda c: self._chat_one(c, sampling), convos))

    def complete(self, prompts: Sequence[str], sampling: Sampling) -> list[Completion]:
        return list(self._pool.map(lambda p: self._complete_one(p, sampling), prompts))

    def _score_one(self, context: str | Sequence[Message], continuation: str) -> Score:
        if not isinstance(context, str):
            raise BackendError("the openai backend scores raw text only (the chat template lives on the server); "
                               "use --format text, or the transformers/llamacpp backend")
        r = self._call(self.client.completions.create, model=self.model_id, prompt=context + continuation,
                       max_tokens=1, echo=True, logprobs=0, temperature=0.0)
        lp = r.choices[0].logprobs
        if lp is None or lp.text_offset is None:
            raise BackendError("this server returns no prompt logprobs (echo); score with a vLLM server or the "
                               "transformers/llamacpp backend")
        start, end = len(context), len(context) + len(continuation)
        picked = [x for off, x in zip(lp.text_offset, lp.token_logprobs) if start <= off < end and x is not None]
        return Score(float(sum(picked)), len(picked))

    def score(self, contexts: Sequence[str | Sequence[Message]], continuations: Sequence[str]) -> list[Score]:
        return list(self._pool.map(self._score_one, contexts, continuations))

    def close(self) -> None:
        self._pool.shutdown(wait=False)
        self.client.close()
