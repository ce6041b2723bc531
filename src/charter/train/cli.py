"""`charter train sft|dpo|pm|rl`: flags override the YAML config. Imports nothing heavy at module level.

pm and rl (RL-CAI) are defined in charter.rlcai.cli and registered here, under `train`."""
from __future__ import annotations

import argparse
import sys


def _common(p: argparse.ArgumentParser, what: str) -> None:
    p.add_argument("--data", help=f"run directory made by `charter generate`, or {what} (.jsonl/.parquet)")
    p.add_argument("--out", help="output directory: checkpoint, train_log.jsonl, loss.png; re-running resumes")
    p.add_argument("--config", help="YAML file of training settings (configs/train/*.yaml; flags override it)")
    p.add_argument("--model", help="'embedded' (default) or a local HF checkpoint directory")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--lora", dest="lora", action="store_const", const=True, help="train a LoRA adapter, then merge it")
    g.add_argument("--full", dest="lora", action="store_const", const=False, help="full fine-tuning (default)")
    p.add_argument("--max-steps", type=int, help="stop after N optimizer steps (default: one epoch)")
    p.add_argument("--seed", type=int)
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def register(sub) -> None:
    train = sub.add_parser("train", help="fine-tune: sft (SL-CAI), dpo, pm (preference model), rl (RL-CAI against a PM)")
    tsub = train.add_subparsers(dest="train_command", required=True)
    sft = tsub.add_parser("sft", help="supervised fine-tuning on revisions + helpful answers (trl.SFTTrainer)")
    _common(sft, "an exported SFT file with a 'messages' column")
    sft.add_argument("--revision", choices=["final", "all"], help="final revision, or every round's (SL-CAI-n)")
    sft.add_argument("--upto", type=int, help="use rounds 1..N only")
    sft.add_argument("--helpful-ratio", type=float, help="share of helpfulness rows in the mix (default: all)")
    sft.set_defaults(func=cmd_sft)
    dpo = tsub.add_parser("dpo", help="DPO on preference pairs (trl.DPOTrainer)")
    _common(dpo, "a preference file with prompt/chosen/rejected (optional score)")
    dpo.add_argument("--soft-labels", choices=["sample", "hard"], help="how a row's score is used (default sample)")
    dpo.set_defaults(func=cmd_dpo)
    from charter.rlcai.cli import register_train

    register_train(tsub, _common)


def overrides(a: argparse.Namespace, keys: list[str]) -> dict:
    d = {k: getattr(a, k) for k in ["data", "out", "model", "lora", "seed", *keys]}
    d["trainer"] = {"max_steps": a.max_steps}
    return d


def cmd_sft(a: argparse.Namespace) -> int:
    from charter.train.sft import load_sft_config, train_sft

    cfg = load_sft_config(a.config, **overrides(a, ["revision", "upto", "helpful_ratio"]))
    print(f"charter train sft: model={cfg.model} data={cfg.data} lora={bool(cfg.lora)} -> {cfg.out}", file=sys.stderr)
    print(f"saved {train_sft(cfg, progress=not a.quiet)}")
    return 0


def cmd_dpo(a: argparse.Namespace) -> int:
    from charter.train.dpo import load_dpo_config, train_dpo

    cfg = load_dpo_config(a.config, **overrides(a, ["soft_labels"]))
    print(f"charter train dpo: model={cfg.model} data={cfg.data} lora={bool(cfg.lora)} -> {cfg.out}", file=sys.stderr)
    print(f"saved {train_dpo(cfg, progress=not a.quiet)}")
    return 0
