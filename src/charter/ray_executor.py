"""`charter generate --executor ray`: the same pipeline, sharded over Ray workers.

Each worker is a Ray actor holding one backend instance (e.g. one vLLM engine per GPU, or one
transformers model per CPU slot) and runs the ordinary scheduler on a chunk of prompts. The driver
stays the only writer of the run directory: records come back chunk by chunk and are appended as
each chunk finishes, so resume works exactly as for local runs and a crash loses at most the
chunks in flight. `RAY_ADDRESS` (or `ray start --address`) picks an existing cluster; without it
a local Ray instance is started.
"""
from __future__ import annotations

import os
from typing import Callable

from charter.errors import BackendError
from charter.types import Constitution, PromptItem, Record


class _Worker:
    """Body of the Ray actor: one backend, many chunks."""

    def __init__(self, backend: str, model: str, options: dict, constitution: Constitution, settings,
                 workload: int | None = None):
        from charter.backends import create_backend

        self.backend = create_backend(backend, model, workload=workload, **options)
        self.constitution, self.settings = constitution, settings

    def run(self, items: list[PromptItem]) -> list[dict]:
        from charter.pipeline import run_items

        out: list[Record] = []
        run_items(self.backend, self.constitution, self.settings, items, out.append)
        return [r.to_dict() for r in out]

    def close(self) -> None:
        self.backend.close()  # an engine's own processes (vLLM's EngineCore) end with it


def _init_ray(cfg):
    try:
        import ray
    except ImportError as exc:
        raise BackendError("--executor ray needs Ray; pip install 'charter[ray]'") from exc
    if not ray.is_initialized():
        address = os.environ.get("RAY_ADDRESS")
        # a local instance gets a small object store: records are small, the machine may be too
        kwargs = {} if address else {"object_store_memory": 256 * 1024 * 1024}
        ray.init(address=address, ignore_reinit_error=True, log_to_driver=False, include_dashboard=False, **kwargs)
    return ray


def run_on_ray(cfg, constitution: Constitution, settings, todo: list[PromptItem],
               on_record: Callable[[Record], None], workload: int | None = None) -> None:
    ray = _init_ray(cfg)
    resources = {"num_cpus": 1, **cfg.worker_resources}
    n = cfg.workers or max(1, int(ray.available_resources().get("GPU" if resources.get("num_gpus") else "CPU", 1)
                                  // max(resources.get("num_gpus") or resources["num_cpus"], 1)))
    actor = ray.remote(**resources)(_Worker)
    share = None if workload is None else -(-workload // n)  # each worker's part of the run
    workers = [actor.remote(cfg.backend, cfg.model, cfg.backend_options, constitution, settings, share)
               for _ in range(n)]
    chunk = max(1, cfg.batch_size)
    chunks = [todo[i:i + chunk] for i in range(0, len(todo), chunk)]
    pool = ray.util.ActorPool(workers)
    for records in pool.map_unordered(lambda w, items: w.run.remote(items), chunks):
        for d in records:
            on_record(Record.from_dict(d))
    ray.get([w.close.remote() for w in workers])
    for w in workers:
        ray.kill(w)
