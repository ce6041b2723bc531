"""Any OpenAI-compatible HTTP server (vLLM, SGLang, TGI, llama.cpp's server, Ollama, hosted APIs).

A thin wrapper over the official ``openai`` client (its async one, on an event loop of ours),
which already retries 408/409/429/5xx, timeouts and connection resets with exponential backoff and
jitter, honouring Retry-After: we set its retry budget and per-read timeout, and give each request
a deadline on top. A server that sends a byte every few seconds never trips a per-read timeout, so
without the deadline one request (and the run) could hang for ever; at the deadline the request is
cancelled, which closes its connection. What the server answers is checked (a 200 with an HTML
page, an SSE stream or no choices is not a completion). Every final failure is a BackendError (the
pipeline marks that record failed; a re-run retries it). The API key is read from an environment
variable and never stored in the run directory.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
import re
import threading
from typing import Any, Sequence

from charter.backends.base import Backend
from charter.errors import BackendError
from charter.types import Completion, Message, Sampling, Score

log = logging.getLogger("charter.backends.openai")

RETRY_WAIT = 8.0  # the client's longest backoff between two tries (seconds)
# What an API-key variable is called; anything else (HOME, a database URL) would be sent as a key.
_KEY_VARIABLE = re.compile(r"(?i)key|token|secret|passw|credential|auth")
# What a reply that is not a completion raises when read as one (missing or mistyped fields).
_MALFORMED = (AttributeError, TypeError, ValueError, IndexError, KeyError)


def _cut(text: str, stops: Sequence[str]) -> tuple[str, bool]:
    """Cut at the first stop string (servers differ in whether they strip it)."""
    hits = [text.find(s) for s in stops if s in text]
    return (text[: min(hits)], True) if hits else (text, False)


async def _all(coros: list) -> list:
    """Every request of one call at once; the first failure (in order) is the call's."""
    results = await asyncio.gather(*coros, return_exceptions=True)
    for r in results:
        if isinstance(r, BaseException):
            raise r
    return results


class OpenAIBackend(Backend):
    name = "openai"

    def __init__(self, model: str, base_url: str | None = None, api_key_env: str = "OPENAI_API_KEY",
                 concurrency: int = 16, timeout: float = 120.0, max_retries: int = 8, deadline: float | None = None,
                 max_stops: int | None = None, extra_body: dict[str, Any] | None = None):
        try:
            import openai
        except ImportError as exc:
            raise BackendError("the openai backend needs the openai client; pip install 'charter[openai]'") from exc
        base_url = base_url or os.environ.get("OPENAI_BASE_URL")
        key = os.environ.get(api_key_env) or ("EMPTY" if base_url else None)
        if key is None:
            raise BackendError(f"set {api_key_env} (or pass --base-url for a local server that needs no key)")
        if api_key_env in os.environ and not _KEY_VARIABLE.search(api_key_env):
            log.warning("api_key_env names %s, which does not look like an API-key variable: its value is sent as "
                        "the API key to %s; set api_key_env to the variable that holds that server's key",
                        api_key_env, base_url or "the OpenAI API")
        self.model_id, self.concurrency = model, concurrency
        self.max_stops, self.extra_body = max_stops, extra_body or {}
        # The most one request may take, its retries and the waits between them included.
        self.deadline = deadline or timeout * (max_retries + 1) + RETRY_WAIT * max_retries
        self._errors = (openai.APIError,)
        self.client = openai.AsyncOpenAI(base_url=base_url, api_key=key, timeout=timeout, max_retries=max_retries)
        self._slots = asyncio.Semaphore(max(1, concurrency))
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="charter-openai", daemon=True)
        self._thread.start()

    def _params(self, sampling: Sampling) -> dict[str, Any]:
        stops = list(sampling.stop)[: self.max_stops] if sampling.stop else None
        p = {"model": self.model_id, "max_tokens": sampling.max_tokens, "temperature": sampling.temperature,
             "top_p": sampling.top_p, "stop": stops, "seed": sampling.seed, "logprobs": sampling.logprobs or None}
        if self.extra_body:
            p["extra_body"] = self.extra_body
        return {k: v for k, v in p.items() if v is not None}

    def _run(self, coros: list) -> list:
        """The requests of one call, run on the backend's event loop; results in order."""
        if self._loop.is_closed():
            for c in coros:
                c.close()
            raise BackendError("the openai backend was closed; create a new one")
        future = asyncio.run_coroutine_threadsafe(_all(coros), self._loop)
        try:
            return future.result()
        except concurrent.futures.CancelledError as exc:  # close() while this call was waiting
            raise BackendError("the openai backend was closed while a request was in flight") from exc
        finally:
            future.cancel()  # Ctrl-C in the caller: its requests stop too (a no-op once done)

    async def _request(self, create, **kwargs):
        """One request under the deadline; every failure a BackendError that says what to do."""
        async with self._slots:
            try:
                return await asyncio.wait_for(create(**kwargs), self.deadline)
            except asyncio.TimeoutError as exc:
                raise BackendError(f"TimeoutError: no complete answer from {self.client.base_url} within "
                                   f"{self.deadline:g}s (a stalled or trickling server); check the server, or raise "
                                   "the backend option deadline (default: timeout x (max_retries + 1) plus the "
                                   "waits between tries)") from exc
            except self._errors as exc:  # after the client's own retries
                hint = " (is the server running?)" if type(exc).__name__ == "APIConnectionError" else ""
                raise BackendError(f"{type(exc).__name__} from {self.client.base_url}{hint}: {exc}") from exc

    def _choice(self, reply: Any) -> Any:
        """The reply's first choice; a 200 that holds none says what came instead."""
        choices = getattr(reply, "choices", None)
        if isinstance(choices, list) and choices:
            return choices[0]
        what = (f"a body that is not JSON: {str(reply)[:60]!r}" if isinstance(reply, (str, bytes))
                else "a JSON reply without choices")
        raise BackendError(f"the server at {self.client.base_url} answered with no completion ({what}); check that "
                           "base_url is the server's OpenAI API (it usually ends in /v1), not a web page or a proxy")

    def _read(self, parse, reply: Any, sampling: Sampling) -> Completion | Score:
        """`parse` applied to a reply, whose fields may be missing or of any type."""
        try:
            return parse(self._choice(reply), reply, sampling)
        except _MALFORMED as exc:
            raise BackendError(f"the server at {self.client.base_url} answered with something that is not a "
                               f"completion ({type(exc).__name__}: {exc}); check that it is an OpenAI-compatible "
                               "server") from exc

    def _completion(self, text: Any, finish: Any, usage: Any, stops: Sequence[str],
                    logprob: float | None = None) -> Completion:
        if text is not None and not isinstance(text, str):
            raise BackendError(f"the server at {self.client.base_url} returned {type(text).__name__} "
                               f"{str(text)[:60]!r} as the text of a completion; the request failed")
        text, cut = _cut(text or "", stops)
        reason = "length" if finish == "length" and not cut else "stop"
        tokens = [getattr(usage, k, None) for k in ("prompt_tokens", "completion_tokens")]
        return Completion(text, *(0 if t is None else t for t in tokens), reason, logprob)  # checked there

    def _chat_parse(self, choice, reply, sampling: Sampling) -> Completion:
        content = getattr(choice.logprobs, "content", None)
        logprob = sum(t.logprob for t in content) if content else None
        return self._completion(choice.message.content, choice.finish_reason, reply.usage, sampling.stop, logprob)

    def _text_parse(self, choice, reply, sampling: Sampling) -> Completion:
        if not isinstance(choice.text, str):  # unlike a chat message's content, never absent
            raise TypeError(f"the choice's text is {type(choice.text).__name__}")
        lp = choice.logprobs
        logprob = sum(x for x in lp.token_logprobs if x is not None) if lp and lp.token_logprobs else None
        return self._completion(choice.text, choice.finish_reason, reply.usage, sampling.stop, logprob)

    async def _chat_one(self, convo: Sequence[Message], sampling: Sampling) -> Completion:
        r = await self._request(self.client.chat.completions.create, messages=list(convo), **self._params(sampling))
        return self._read(self._chat_parse, r, sampling)

    async def _complete_one(self, prompt: str, sampling: Sampling) -> Completion:
        params = self._params(sampling)
        if sampling.logprobs:
            params["logprobs"] = 1  # the completions endpoint takes a count, not a flag
        r = await self._request(self.client.completions.create, prompt=prompt, **params)
        return self._read(self._text_parse, r, sampling)

    def chat(self, convos: Sequence[Sequence[Message]], sampling: Sampling) -> list[Completion]:
        return self._run([self._chat_one(c, sampling) for c in convos])

    def complete(self, prompts: Sequence[str], sampling: Sampling) -> list[Completion]:
        return self._run([self._complete_one(p, sampling) for p in prompts])

    async def _score_one(self, context: str | Sequence[Message], continuation: str) -> Score:
        if not isinstance(context, str):
            raise BackendError("the openai backend scores raw text only (the chat template lives on the server); "
                               "use --format text, or the transformers/llamacpp backend")
        r = await self._request(self.client.completions.create, model=self.model_id, prompt=context + continuation,
                                max_tokens=1, echo=True, logprobs=0, temperature=0.0)
        span = (len(context), len(context) + len(continuation))
        return self._read(lambda choice, _r, _s: self._score_parse(choice, span), r, None)

    def _score_parse(self, choice, span: tuple[int, int]) -> Score:
        lp = choice.logprobs
        if lp is None or lp.text_offset is None:
            raise BackendError("this server returns no prompt logprobs (echo); score with a vLLM server or the "
                               "transformers/llamacpp backend")
        picked = [x for off, x in zip(lp.text_offset, lp.token_logprobs) if span[0] <= off < span[1] and x is not None]
        return Score(float(sum(picked)), len(picked))

    def score(self, contexts: Sequence[str | Sequence[Message]], continuations: Sequence[str]) -> list[Score]:
        return self._run([self._score_one(c, x) for c, x in zip(contexts, continuations)])

    async def _shutdown(self) -> None:
        pending = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for t in pending:
            t.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        await self.client.close()

    def close(self) -> None:
        if self._loop.is_closed():
            return
        try:
            asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop).result(10)
        except Exception as exc:  # closing must not fail the run that is ending
            log.debug("openai backend: closing the client: %s", exc)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        if not self._thread.is_alive():
            self._loop.close()
