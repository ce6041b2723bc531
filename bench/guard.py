"""Benchmark: what guard classifiers cost a generation run.

    .venv/bin/python bench/guard.py --guard DIR [--backend auto] [--prompts 16] [--rounds 1] [--max-tokens 64]

DIR is what `charter train classifier --kind both --out DIR` writes. Prints a table: `charter
generate` wall time on the same prompts without and with `--guard DIR` (a fresh engine per run,
its start not timed), the records each guard stage blocked (a blocked prompt is not generated,
so a guarded run can be the faster one), and the classifiers' own cost measured apart: the input
classifier per prompt, the streaming output classifier per answer token (one forward pass per
answer, every prefix's score read from it).
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from charter.backends import open_model  # noqa: E402
from charter.guard.model import load_guards  # noqa: E402
from charter.generate import GenerateConfig, generate  # noqa: E402
from charter.runs.runread import load_run  # noqa: E402
from charter.types import Sampling  # noqa: E402


def run(args, guard: str | None):
    """(seconds, summary, records) of one generate run on a fresh engine (its start untimed)."""
    backend = open_model(args.model, args.backend)
    backend.chat([[{"role": "user", "content": "Hi"}]], Sampling(max_tokens=4))  # warm up, untimed
    try:
        with tempfile.TemporaryDirectory() as out:
            cfg = GenerateConfig(backend=args.backend, model=args.model, limit=args.prompts, rounds=args.rounds,
                                 helpful_prompts="none", max_tokens=args.max_tokens, batch_size=args.batch_size,
                                 out=out, seed=args.seed, guard=guard)
            t0 = time.perf_counter()
            summary = generate(cfg, backend=backend, progress=False)
            return time.perf_counter() - t0, summary, load_run(out)
    finally:
        backend.close()


def classifier_cost(guard_dir: str, records) -> dict[str, float]:
    """Seconds per prompt (input) and per answer token (output), on the unguarded run's texts."""
    guards, cost = load_guards(guard_dir), {}
    for clf in guards.values():  # first calls pay one-off set-up: untimed
        clf.score(["warm-up"])
    if "input" in guards:
        prompts = [r.prompt for r in records]
        t0 = time.perf_counter()
        guards["input"].score_messages(prompts)
        cost["input_s_per_prompt"] = (time.perf_counter() - t0) / len(prompts)
    if "output" in guards:
        answers = [(r.prompt, a) for r in records for a in [r.initial, *(x.revision for x in r.rounds)] if a]
        t0, tokens = time.perf_counter(), 0
        for prompt, answer in answers:
            tokens += len(guards["output"].stream_scores(prompt, answer))
        cost["output_s_per_token"] = (time.perf_counter() - t0) / max(tokens, 1)
        cost["output_tokens"] = tokens
    return cost


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--guard", required=True, help="classifier directory (charter train classifier --kind both)")
    ap.add_argument("--backend", default="auto")
    ap.add_argument("--model", default="embedded")
    ap.add_argument("--prompts", type=int, default=16)
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    plain_s, plain, records = run(args, None)
    guarded_s, guarded, _ = run(args, args.guard)
    cost = classifier_cost(args.guard, records)
    print(f"{args.prompts} red-team prompts, {args.rounds} round(s), max_tokens {args.max_tokens}, "
          f"backend {args.backend}, model {args.model}")
    print(f"{'run':<22}{'wall s':>9}{'records':>9}{'tokens':>9}{'blocked in':>12}{'blocked out':>13}")
    print(f"{'generate':<22}{plain_s:>9.1f}{plain.records:>9}{plain.tokens:>9}{'-':>12}{'-':>13}")
    print(f"{'generate --guard':<22}{guarded_s:>9.1f}{guarded.records:>9}{guarded.tokens:>9}"
          f"{guarded.blocked['input']:>12}{guarded.blocked['output']:>13}")
    print(f"guarded / plain wall time: {guarded_s / plain_s:.2f}x")
    if "input_s_per_prompt" in cost:
        print(f"input classifier: {cost['input_s_per_prompt'] * 1e3:.1f} ms per prompt")
    if "output_s_per_token" in cost:
        print(f"streaming output classifier: {cost['output_s_per_token'] * 1e3:.2f} ms per answer token "
              f"({cost['output_tokens']} tokens; generation ran at {plain.tokens / plain_s:.1f} tok/s)")


if __name__ == "__main__":
    main()
