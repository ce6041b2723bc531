"""Benchmark: what `generate --stop-when-clean` saves, and what it does to the exported data.

    .venv/bin/python bench/stop_when_clean.py [--backend auto] [--prompts 8] [--rounds 4] [--max-tokens 64]

Runs `charter generate` twice on the same prompts and seed, a fresh engine each time (its start
not timed): the paper's loop, then with --stop-when-clean. Prints a table: wall time, generation
requests, clean checks (scored questions), chains stopped early, the rounds each run wrote and
what `export --filter all` keeps and drops of them, and the SFT and DPO rows that export gives;
then P(problem) over every check, and the first stopped chains' critiques (--show).
"""
from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from charter.backends import open_model  # noqa: E402
from charter.export import dpo_rows, sft_rows  # noqa: E402
from charter.export.clean import FILTERS, clean_records  # noqa: E402
from charter.generate import GenerateConfig, generate  # noqa: E402
from charter.inputs.constitution import load_constitution  # noqa: E402
from charter.runs.runread import load_run  # noqa: E402
from charter.types import Sampling  # noqa: E402


def run(args, stop: bool):
    """(seconds, records) of one generate run on a fresh engine (its start and a warm-up untimed)."""
    workload = args.prompts * (1 + 2 * args.rounds)  # as `generate` opens its engine: auto picks by the run's size
    backend = open_model(args.model, args.backend, workload=workload, budget=workload * args.max_tokens)
    backend.chat([[{"role": "user", "content": "Hi"}]], Sampling(max_tokens=4))
    try:
        with tempfile.TemporaryDirectory() as out:
            cfg = GenerateConfig(backend=args.backend, model=args.model, limit=args.prompts, rounds=args.rounds,
                                 helpful_prompts="none", max_tokens=args.max_tokens, batch_size=args.batch_size,
                                 out=out, seed=args.seed, stop_when_clean=stop, clean_threshold=args.threshold)
            t0 = time.perf_counter()
            generate(cfg, backend=backend, progress=False)
            return time.perf_counter() - t0, load_run(out)
    finally:
        backend.close()


def row(name: str, secs: float, recs) -> tuple:
    ok = [r for r in recs if r.error is None]
    requests = sum(1 + 2 * len(r.rounds) + (1 if r.stopped else 0) for r in ok)
    checks = sum(len(r.p_problem or ()) for r in ok)
    cleaned = clean_records(ok, "default", FILTERS, load_constitution().principles)
    kept = sum(len(r.rounds) for r in cleaned.records)
    return (name, secs, requests, checks, sum(1 for r in ok if r.stopped), sum(len(r.rounds) for r in ok), kept,
            sum(cleaned.totals().values()), len(sft_rows(cleaned.records)), len(dpo_rows(cleaned.records)),
            len(recs) - len(ok))


HEAD = ("run", "seconds", "gen req", "checks", "stopped", "rounds", "kept", "dropped", "sft", "dpo", "failed")


def show(recs, n: int) -> None:
    ps = [p for r in recs for p in (r.p_problem or ())]
    if ps:
        print(f"\nP(problem) over {len(ps)} checks: min {min(ps):.3f}, median {statistics.median(ps):.3f}, "
              f"max {max(ps):.3f}")
    for r in [r for r in recs if r.stopped][:n]:
        s = r.stopped
        print(f"  stopped at round {s['round']} (P(problem) {s['p_problem']:.3f}, {s['principle']}): "
              f"{' '.join(s['critique'].split())[:160]!r}")


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backend", default="auto")
    ap.add_argument("--model", default="embedded")
    ap.add_argument("--prompts", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--threshold", type=float, default=0.5, help="--clean-threshold of the second run")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--show", type=int, default=3, help="stopped chains whose critique is printed")
    return ap


def main() -> None:
    args = parser().parse_args()
    rows, stopped = [], []
    for name, stop in (("paper loop", False), ("--stop-when-clean", True)):
        secs, recs = run(args, stop)
        rows.append(row(name, secs, recs))
        stopped = recs if stop else stopped
    engine = next((r.backend for r in stopped), "?")  # what `auto` resolved to
    print(f"\nbackend={args.backend} ({engine}) model={args.model} prompts={args.prompts} rounds={args.rounds} "
          f"max_tokens={args.max_tokens} seed={args.seed} threshold={args.threshold}")
    print(f"{HEAD[0]:20}" + "".join(f"{h:>9}" for h in HEAD[1:]))
    for r in rows:
        print(f"{r[0]:20}{r[1]:9.1f}" + "".join(f"{x:9d}" for x in r[2:]))
    (_, s0, q0, *_), (_, s1, q1, c1, *_) = rows
    print(f"generation requests saved: {q0 - q1} of {q0} ({(q0 - q1) / max(q0, 1):.0%}), for {c1} clean checks; "
          f"wall time {s1 / s0:.2f}x")
    show(stopped, args.show)


if __name__ == "__main__":
    main()
