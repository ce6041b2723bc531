"""Benchmark: training throughput and peak memory through `charter.train` / `charter.rlcai`:
SFT (full vs LoRA), the preference model (`train pm`) and RL steps (`train rl`, RLOO).

    .venv/bin/python bench/train.py [--model embedded] [--steps 4] [--batch 4] [--tokens 256]
                                    [--rl-tokens 32] [--variants full,lora,pm,rl]

Each variant runs in its own subprocess (so peak RSS, /proc VmHWM, is its own); the first step is
a warm-up and is not timed. SFT rows are truncated to exactly --tokens tokens; PM rows are pairs of
--tokens-token answers (tokens/s counts both); an RL step samples --batch completions of up to
--rl-tokens tokens (4 per prompt), scores them with a PM and updates the policy (tokens/s counts
generated tokens). Variants: full, lora, pm, pm-lora, rl, rl-lora, with suffixes -nogc (no
gradient checkpointing; TRL turns it on by default for SFT) and -bf16 (CPU autocast to bf16;
pays only on CPUs with native bf16), e.g. full-nogc,lora-nogc-bf16.

Calibration of charter.train.common.TOKENS_PER_S (the rough time printed before training): SFT of
SmolLM2-135M, batch 4 x 256 tokens, on a shared 2-core box measured full 16-20 tokens/s and LoRA
10-51 tokens/s; an idle box is faster (~170 full was reported), so the estimate errs long.
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


def _rows(path: str, rows: list[dict]) -> str:
    with open(path, "w") as fh:
        fh.writelines(json.dumps(r) + "\n" for r in rows)
    return path


def _opts(args, steps_key: str = "max_steps") -> dict:
    opts = {steps_key: args.steps, "per_device_train_batch_size": args.batch, "save_strategy": "no",
            "logging_steps": 1}
    if "-bf16" in args.variant:
        opts["bf16"] = True
    if "-nogc" in args.variant:
        opts["gradient_checkpointing"] = False
    return opts


def sft_trainer(args, tmp: str):
    from charter.train.sft import build_sft_trainer, load_sft_config

    words = " ".join(f"word{i}" for i in range(args.tokens))  # far longer than --tokens after tokenizing
    data = _rows(os.path.join(tmp, "rows.jsonl"), [
        {"messages": [{"role": "user", "content": f"Question {i}?"}, {"role": "assistant", "content": words}]}
        for i in range(args.batch * args.steps)])
    cfg = load_sft_config(None, model=args.model, data=data, out=os.path.join(tmp, "out"),
                          lora=args.variant.startswith("lora"), trainer={**_opts(args), "max_length": args.tokens})
    return build_sft_trainer(cfg, progress=False), args.batch * args.tokens


def pm_trainer(args, tmp: str):
    from charter.train.pm import build_pm_trainer, load_pm_config

    good, bad = " ".join(["good"] * args.tokens), " ".join(["bad"] * args.tokens)  # ~1 token per word
    rows = [{"prompt": [{"role": "user", "content": f"Question {i}?"}],
             "chosen": [{"role": "assistant", "content": good}], "rejected": [{"role": "assistant", "content": bad}],
             "score": 0.8} for i in range(args.batch * args.steps)]
    data = _rows(os.path.join(tmp, "pm.jsonl"), rows)
    cfg = load_pm_config(None, model=args.model, data=data, out=os.path.join(tmp, "out"), eval_share=0.0,
                         lora="-lora" in args.variant, trainer={**_opts(args), "max_length": 2 * args.tokens + 64})
    trainer, _ = build_pm_trainer(cfg, progress=False)
    if not len(trainer.train_dataset):
        raise SystemExit("every PM row was longer than max_length")
    lengths = [len(c) + len(r) for c, r in zip(trainer.train_dataset["chosen_ids"], trainer.train_dataset["rejected_ids"])]
    return trainer, args.batch * sum(lengths) / len(lengths)


def rl_trainer(args, tmp: str):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from charter.backends.models import resolve_hf_checkpoint
    from charter.train.rl import build_rl_trainer, load_rl_config

    path, pm = resolve_hf_checkpoint(args.model), os.path.join(tmp, "pm")
    AutoModelForSequenceClassification.from_pretrained(path, num_labels=1).save_pretrained(pm)  # an untrained head
    AutoTokenizer.from_pretrained(path).save_pretrained(pm)
    prompts = _rows(os.path.join(tmp, "p.jsonl"), [{"prompt": f"Tell me a story about thing {i}."} for i in range(64)])
    cfg = load_rl_config(None, model=args.model, pm=pm, out=os.path.join(tmp, "out"), prompts=prompts,
                         helpful_prompts="none", max_tokens=args.rl_tokens, lora="-lora" in args.variant,
                         trainer=_opts(args))
    return build_rl_trainer(cfg, progress=False), None  # tokens counted from the log


def one(args) -> dict:
    from transformers import TrainerCallback

    build = pm_trainer if args.variant.startswith("pm") else rl_trainer if args.variant.startswith("rl") else sft_trainer
    with tempfile.TemporaryDirectory() as tmp:
        trainer, tokens = build(args, tmp)
        stamps: list[float] = []
        lengths: list[float] = []  # RL: mean completion length of each step, from TRL's log

        class Clock(TrainerCallback):
            def on_step_end(self, *_, **__):
                stamps.append(time.perf_counter())

            def on_log(self, *_, logs=None, **__):
                if logs and "completions/mean_length" in logs:
                    lengths.append(logs["completions/mean_length"])

        trainer.add_callback(Clock())
        trainer.train()
    per_step = (stamps[-1] - stamps[0]) / max(len(stamps) - 1, 1)
    if tokens is None:  # RL: generated tokens per step (timed steps only)
        tokens = args.batch * sum(lengths[1:]) / max(len(lengths) - 1, 1)
    return {"variant": args.variant, "s_per_step": per_step, "tokens_per_s": tokens / per_step,
            "peak_gb": peak_rss_gb()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="embedded")
    ap.add_argument("--steps", type=int, default=4, help="optimizer steps per variant (first one is warm-up)")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--tokens", type=int, default=256, help="tokens per row")
    ap.add_argument("--rl-tokens", type=int, default=32, help="RL: tokens per sampled completion")
    ap.add_argument("--variants", default="full,lora,pm,rl")
    ap.add_argument("--variant", help=argparse.SUPPRESS)  # set in the per-variant subprocess
    args = ap.parse_args()
    if args.variant:
        print("RESULT " + json.dumps(one(args)), flush=True)
        return
    print(f"{args.model}: batch {args.batch} x {args.tokens} tokens (RL: {args.batch} completions of <= {args.rl_tokens}), "
          f"{args.steps} steps ({args.steps - 1} timed)")
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
