"""Benchmark: SFT training throughput and peak memory, full fine-tuning vs LoRA, through `charter.train`.

    .venv/bin/python bench/train.py [--model embedded] [--steps 4] [--batch 4] [--tokens 256] [--variants full,lora]

Each variant runs in its own subprocess (so peak RSS, /proc VmHWM, is its own) on synthetic rows
truncated to exactly --tokens tokens; the first step is a warm-up and is not timed. Variants:
full, lora, with suffixes -nogc (no gradient checkpointing; TRL turns it on by default) and -bf16
(CPU autocast to bf16; pays only on CPUs with native bf16), e.g. full-nogc,lora-nogc-bf16.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def peak_rss_gb() -> float:
    with open("/proc/self/status") as fh:  # VmHWM: this process's peak resident set
        kb = next(int(line.split()[1]) for line in fh if line.startswith("VmHWM:"))
    return kb / 2**20


def one(args) -> dict:
    from transformers import TrainerCallback

    from charter.train.sft import build_sft_trainer, load_sft_config

    words = " ".join(f"word{i}" for i in range(args.tokens))  # far longer than --tokens after tokenizing
    rows = [{"messages": [{"role": "user", "content": f"Question {i}?"}, {"role": "assistant", "content": words}]}
            for i in range(args.batch * args.steps)]
    with tempfile.TemporaryDirectory() as tmp:
        data = os.path.join(tmp, "rows.jsonl")
        with open(data, "w") as fh:
            fh.writelines(json.dumps(r) + "\n" for r in rows)
        trainer_opts = {"max_steps": args.steps, "max_length": args.tokens, "per_device_train_batch_size": args.batch,
                        "save_strategy": "no", "logging_steps": args.steps}
        if "-bf16" in args.variant:
            trainer_opts["bf16"] = True
        if "-nogc" in args.variant:
            trainer_opts["gradient_checkpointing"] = False
        cfg = load_sft_config(None, model=args.model, data=data, out=os.path.join(tmp, "out"),
                              lora=args.variant.startswith("lora"), trainer=trainer_opts)
        trainer = build_sft_trainer(cfg, progress=False)
        stamps: list[float] = []

        class Clock(TrainerCallback):
            def on_step_end(self, *_, **__):
                stamps.append(time.perf_counter())

        trainer.add_callback(Clock())
        trainer.train()
    per_step = (stamps[-1] - stamps[0]) / max(len(stamps) - 1, 1)
    return {"variant": args.variant, "s_per_step": per_step, "tokens_per_s": args.batch * args.tokens / per_step,
            "peak_gb": peak_rss_gb()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="embedded")
    ap.add_argument("--steps", type=int, default=4, help="optimizer steps per variant (first one is warm-up)")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--tokens", type=int, default=256, help="tokens per row")
    ap.add_argument("--variants", default="full,lora")
    ap.add_argument("--variant", help=argparse.SUPPRESS)  # set in the per-variant subprocess
    args = ap.parse_args()
    if args.variant:
        print("RESULT " + json.dumps(one(args)), flush=True)
        return
    print(f"SFT on {args.model}: batch {args.batch} x {args.tokens} tokens, {args.steps} steps ({args.steps - 1} timed)")
    print(f"{'variant':<10} {'s/step':>8} {'tokens/s':>9} {'peak RSS':>9}")
    for variant in args.variants.split(","):
        cmd = [sys.executable, __file__, "--variant", variant] + sys.argv[1:]
        out = subprocess.run(cmd, capture_output=True, text=True)
        line = next((ln for ln in out.stdout.splitlines() if ln.startswith("RESULT ")), None)
        if line is None:
            print(f"{variant:<10} failed:\n{out.stderr[-2000:]}")
            continue
        r = json.loads(line[len("RESULT "):])
        print(f"{variant:<10} {r['s_per_step']:>8.2f} {r['tokens_per_s']:>9.0f} {r['peak_gb']:>7.2f} GB", flush=True)


if __name__ == "__main__":
    main()
