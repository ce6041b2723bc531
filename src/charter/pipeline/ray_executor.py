"""`--executor ray` (generate, label): the same work, sharded over Ray workers.

Each worker is a Ray actor holding a copy of the job (a picklable object that opens its backends:
e.g. one vLLM engine per GPU, or one transformers model per CPU slot, and runs the ordinary
scheduler on a chunk of prompts). The driver stays the only writer of the run: results come back
chunk by chunk and are handed on as each chunk finishes, so resume works exactly as for local runs
and a crash loses at most the chunks in flight. `RAY_ADDRESS` (or `ray start --address`) picks an existing cluster; without it
a local Ray instance is started.

At scale: chunks are cut from the prompt stream lazily and each worker has at most IN_FLIGHT of
them at a time, so the driver holds only what is in flight, whatever the run's size. A worker
that dies (killed, out of memory, node lost) is replaced and its unfinished chunks go back to the
front of the queue: a chunk's records are written only once its result arrives, so nothing is
lost and nothing is written twice.
"""
from __future__ import annotations

import contextlib
import itertools
import logging
import os
import signal
import threading
from collections import deque
from typing import Any, Callable, Iterable, Iterator, Protocol

from charter.backends.watchdog import Watchdog
from charter.errors import BackendError, stop_error
from charter.types import Constitution, PromptItem, Record

log = logging.getLogger("charter.ray")

# Chunks per worker at a time: one running, one queued so the worker never waits on the driver
# (an engine that batches internally runs both at once).
IN_FLIGHT = 2
# Replacements of dead workers per worker slot before the run gives up (a worker that dies on
# every chunk is a bug or a broken node, not bad luck).
MAX_REPLACEMENTS = 3


class Job(Protocol):
    """What a worker runs: `open` its backends (sized to `workload`, its share of the run), then
    `run` chunks of prompts into picklable results; `capacity`: prompts its engines keep in flight
    (0: they batch per call)."""

    def open(self, workload: int | None) -> None: ...
    def capacity(self) -> int: ...
    def run(self, items: list) -> list: ...
    def close(self) -> None: ...


class GenerateJob:
    """generate's work: the critique-revision pipeline on one backend."""

    def __init__(self, backend: str, model: str, options: dict, constitution: Constitution, settings):
        self.spec = (backend, model, options)
        self.constitution, self.settings = constitution, settings

    def open(self, workload: int | None = None) -> None:
        from charter.backends import open_model

        backend, model, options = self.spec
        budget = None if workload is None else workload * self.settings.sampling.max_tokens
        self.backend = open_model(model, backend, workload=workload, budget=budget, **options)

    def capacity(self) -> int:
        return int(self.backend.concurrency or 0)

    def run(self, items: list[PromptItem]) -> list[dict]:
        from charter.pipeline.cai import run_items

        out: list[Record] = []
        run_items(self.backend, self.constitution, self.settings, items, out.append)
        return [r.to_dict() for r in out]

    def close(self) -> None:
        self.backend.close()  # an engine's own processes (vLLM's EngineCore) end with it


class _Worker:
    """Body of the Ray actor: one job, its backends open, many chunks. A job that cannot open its
    backends keeps the actor alive to raise why at every call: a constructor that raises reaches
    the driver only as ActorDiedError, the worker's exception flattened into traceback text."""

    def __init__(self, job: Job, workload: int | None = None):
        self.job, self.failure = job, None
        try:
            job.open(workload)
        except Exception as exc:
            self.failure = exc
        # engines that batch internally take concurrent chunks; the others run one at a time
        self._lock = contextlib.nullcontext() if self.failure is None and job.capacity() else threading.Lock()

    def _started(self) -> None:
        if self.failure is not None:
            raise self.failure

    def capacity(self) -> int:
        self._started()
        return self.job.capacity()

    def run(self, items: list) -> list:
        self._started()
        with self._lock:
            return self.job.run(items)

    def close(self) -> None:
        if self.failure is None:
            self.job.close()


def _get(ray, ref):
    """ray.get; what a worker raised comes back as one line that says it happened on a Ray worker
    (a CharterError keeps its class; anything else is stop_error's RunError)."""
    from ray.exceptions import RayTaskError

    try:
        return ray.get(ref)
    except RayTaskError as exc:
        err = stop_error(exc.cause)
        err.args = (f"on a Ray worker: {err}",)
        raise err from exc


def _first_capacity(ray, pool: "_Pool") -> int:
    """The first worker's capacity: waits for its backends to open."""
    from ray.exceptions import RayActorError

    try:
        return _get(ray, pool.workers[0].capacity.remote())
    except RayActorError as exc:
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        # a failed start of the actor itself (its job could not be unpacked there) ends with the exception
        why = lines[-1] if exc.actor_init_failed and lines else "its process ended: killed, out of memory or crashed"
        raise BackendError(f"a Ray worker died while opening its backend ({why}); the Ray session's logs say more "
                           "(/tmp/ray/session_latest/logs on a local Ray)") from exc


def _init_ray(cfg):
    """Ray, started here unless the caller already did (then the second value is True: ours to shut
    down). A local instance gets a watchdog, the third value (else None): Ray ties its GCS and raylet
    to us, but the raylet's agents, orphaned when we are killed, wait a minute on the dead GCS."""
    try:
        import ray
    except ImportError as exc:
        raise BackendError("--executor ray needs Ray; pip install 'charter[ray]'") from exc
    if ray.is_initialized():
        return ray, False, None
    address = os.environ.get("RAY_ADDRESS")
    # a local instance gets a small object store: records are small, the machine may be too
    kwargs = {} if address else {"object_store_memory": 256 * 1024 * 1024}
    dog = None if address else Watchdog()
    if dog is not None:
        dog.adopt()  # every process ray.init starts, and their descendants
    try:
        with _keep_sigterm():
            ray.init(address=address, ignore_reinit_error=True, log_to_driver=False, include_dashboard=False,
                     **kwargs)
    except BaseException:
        if dog is not None:
            dog.close()  # stops what a failed start left
        raise
    if dog is not None:
        dog.hold()
    return ray, True, dog


@contextlib.contextmanager
def _keep_sigterm():
    """ray.init installs a SIGTERM handler that exits at once: the job's own is put back."""
    main = threading.current_thread() is threading.main_thread()
    previous = signal.getsignal(signal.SIGTERM) if main else None
    try:
        yield
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _chunks(items: Iterable, size: int) -> Iterator[list]:
    it = iter(items)
    while chunk := list(itertools.islice(it, size)):
        yield chunk


class _Pool:
    """Ray actors, each fed up to IN_FLIGHT chunks; dead ones replaced, their chunks re-queued."""

    def __init__(self, ray, cfg, job: Job, workload: int | None):
        self.ray, self.cfg = ray, cfg
        resources = {"num_cpus": 1, **cfg.worker_resources}
        self.n = cfg.workers or max(1, int(ray.available_resources().get(
            "GPU" if resources.get("num_gpus") else "CPU", 1) // max(resources.get("num_gpus") or resources["num_cpus"], 1)))
        share = None if workload is None else -(-workload // self.n)  # each worker's part of the run
        self.actor = ray.remote(**{"max_concurrency": IN_FLIGHT, **resources})(_Worker)
        self.args = (job, share)
        self.workers = [self.actor.remote(*self.args) for _ in range(self.n)]
        self.load = [0] * self.n  # chunks in flight per worker slot
        self.replaced = 0

    def free_slot(self) -> int | None:
        slot = min(range(self.n), key=self.load.__getitem__)
        return slot if self.load[slot] < IN_FLIGHT else None

    def replace(self, slot: int, dead) -> None:
        if dead is not self.workers[slot]:
            return  # already replaced (several of its chunks failed)
        self.replaced += 1
        if self.replaced > MAX_REPLACEMENTS * self.n:
            raise BackendError(f"Ray workers died {self.replaced} times; see the Ray logs (ray logs --help) for the "
                           "cause, fix it and run the same command again to resume")
        log.warning("ray: worker %d died; starting a new one and retrying its chunks", slot)
        self.ray.kill(dead)
        self.workers[slot] = self.actor.remote(*self.args)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.ray.get([w.close.remote() for w in self.workers])
        for w in self.workers:
            self.ray.kill(w)


def run_on_ray(cfg, constitution: Constitution, settings, todo: Iterable[PromptItem],
               on_record: Callable[[Record], None], workload: int | None = None) -> None:
    """generate's pipeline over `todo` (any iterable, consumed lazily) on Ray workers."""
    job = GenerateJob(cfg.backend, cfg.model, cfg.backend_options, constitution, settings)
    run_job(cfg, job, todo, lambda d: on_record(Record.from_dict(d)), workload)


def run_job(cfg, job: Job, todo: Iterable, on_result: Callable[[Any], None], workload: int | None = None,
            on_ready: Callable[[], None] | None = None) -> None:
    """`job` over `todo` (consumed lazily) on Ray workers (cfg: executor settings, batch_size);
    `on_result` for each result as its chunk comes back; `on_ready` once the first worker's
    backends are up, before any chunk is sent."""
    ray, ours, dog = _init_ray(cfg)
    try:
        pool = _Pool(ray, cfg, job, workload)
        try:
            size = max(1, cfg.batch_size, _first_capacity(ray, pool))
            log.info("ray: %d workers, chunks of %d prompts, %d in flight per worker", pool.n, size, IN_FLIGHT)
            if on_ready is not None:
                on_ready()
            _drive(ray, pool, _chunks(todo, size), on_result)
        finally:
            pool.close()
    finally:
        if ours:  # a local Ray started for this run must not outlive it
            ray.shutdown()
        if dog is not None:
            dog.close()  # stops anything of Ray's that shutdown left


def _drive(ray, pool: _Pool, chunks: Iterator[list], on_result: Callable[[Any], None]) -> None:
    """Submit chunks as slots free up, hand on each finished chunk's results, retry a dead worker's."""
    from ray.exceptions import ActorDiedError, ActorUnavailableError, RayActorError

    retry: deque[list] = deque()
    flight: dict = {}  # ObjectRef -> (slot, actor, chunk)
    more = True
    while more or retry or flight:
        while (slot := pool.free_slot()) is not None and (retry or more):
            chunk = retry.popleft() if retry else next(chunks, None)
            if chunk is None:
                more = False
                break
            actor = pool.workers[slot]
            flight[actor.run.remote(chunk)] = (slot, actor, chunk)
            pool.load[slot] += 1
        if not flight:
            continue
        (ref,), _ = ray.wait(list(flight), num_returns=1)
        slot, actor, chunk = flight.pop(ref)
        pool.load[slot] -= 1
        try:
            results = _get(ray, ref)
        except (RayActorError, ActorDiedError, ActorUnavailableError):
            pool.replace(slot, actor)
            retry.append(chunk)
            continue
        for result in results:
            on_result(result)
