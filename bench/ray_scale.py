"""Benchmark: `charter generate --executor ray` at scale on the fake backend.

    .venv/bin/python bench/ray_scale.py [--prompts 100000] [--workers 1 2] [--rounds 4] [--kill]

The fake backend answers instantly, so what is left is Charter's own work: the driver cutting
chunks and appending records, Ray moving them, the workers running the pipeline. One row per
worker count: wall time, records/s, the driver's peak RSS (this process only: Ray's own processes
are not the driver), and with --kill one worker killed a third of the way through (records
must still come out once each).
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
import threading
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import psutil  # noqa: E402
import ray  # noqa: E402

from charter.pipeline import ray_executor  # noqa: E402
from charter.generate import GenerateConfig  # noqa: E402
from charter.generate import generate  # noqa: E402


def peak_rss(stop: threading.Event, out: list) -> None:
    proc = psutil.Process()
    while not stop.wait(0.2):
        out[0] = max(out[0], proc.memory_info().rss)


def killer(pools: list, total: int, out_dir: str, stop: threading.Event) -> None:
    """Kill worker 0 once a third of the records are written."""
    path = os.path.join(out_dir, "records.jsonl")
    while not stop.wait(0.5):
        if pools and os.path.exists(path) and os.path.getsize(path) and _lines(path) >= total // 3:
            ray.kill(pools[0].workers[0])
            return


def _lines(path: str) -> int:
    with open(path, "rb") as f:
        return sum(1 for _ in f)


def one(args, workers: int, prompts: str) -> dict:
    pools, init = [], ray_executor._Pool.__init__

    def keep(self, *a, **k):
        init(self, *a, **k)
        pools.append(self)

    ray_executor._Pool.__init__ = keep
    stop, peak = threading.Event(), [0]
    with tempfile.TemporaryDirectory() as out:
        threading.Thread(target=peak_rss, args=(stop, peak), daemon=True).start()
        if args.kill:
            threading.Thread(target=killer, args=(pools, args.prompts, out, stop), daemon=True).start()
        cfg = GenerateConfig(backend="fake", executor="ray", workers=workers, prompts=prompts, helpful_prompts="none",
                             rounds=args.rounds, max_tokens=32, batch_size=args.batch_size, out=out)
        t0 = time.time()
        s = generate(cfg, progress=False)
        wall = time.time() - t0
        stop.set()
        ids = [json.loads(line)["id"] for line in open(os.path.join(out, "records.jsonl"))]
    ray_executor._Pool.__init__ = init
    return {"workers": workers, "records": s.records, "unique": len(set(ids)), "lines": len(ids), "wall": wall,
            "rate": s.records / wall, "rss": peak[0] / 2**20, "replaced": pools[0].replaced if pools else 0}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--prompts", type=int, default=100_000)
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--batch-size", type=int, default=64, help="prompts per chunk (fake backend: no concurrency)")
    ap.add_argument("--kill", action="store_true", help="kill one worker a third of the way through")
    args = ap.parse_args()
    ray.init(num_cpus=max(args.workers) + 1, include_dashboard=False, log_to_driver=False,
             object_store_memory=256 * 2**20)
    with tempfile.TemporaryDirectory() as tmp:
        prompts = os.path.join(tmp, "prompts.jsonl")
        with open(prompts, "w") as f:
            for i in range(args.prompts):
                f.write(json.dumps({"prompt": f"synthetic red-team prompt number {i}"}) + "\n")
        print(f"{args.prompts} prompts x {args.rounds} rounds, fake backend, chunks of {args.batch_size}"
              f"{', one worker killed at 1/3' if args.kill else ''}")
        print("| workers | records | unique ids | wall s | records/s | driver peak RSS MB | workers replaced |")
        print("|---|---|---|---|---|---|---|")
        for n in args.workers:
            r = one(args, n, prompts)
            print(f"| {n} | {r['records']} | {r['unique']} of {r['lines']} | {r['wall']:.1f} | {r['rate']:.0f} | "
                  f"{r['rss']:.0f} | {r['replaced']} |", flush=True)
    ray.shutdown()


if __name__ == "__main__":
    main()
