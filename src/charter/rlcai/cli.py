"""RL-CAI commands: `label` (AI feedback), `train pm` (preference model), `train rl` (RL against the PM),
`eval-labeler` (accuracy of a feedback model or a PM).

`train pm` and `train rl` sit under `train` (registered through charter.train.cli). Kept light:
torch / transformers / trl are imported only when a command runs.
"""
from __future__ import annotations

import argparse
import sys


def _backend_options(pairs: list[str], batch_size: int | None = None) -> dict:
    from charter.cli import parse_backend_options

    options = parse_backend_options(pairs)
    if batch_size:
        options.setdefault("batch_size", batch_size)
    return options


def _add_label(sub) -> None:
    p = sub.add_parser("label", help="AI feedback: sample answer pairs, label them with a feedback model (RL-CAI preference rows)")
    p.add_argument("--config", help="YAML file of label settings (flags override it)")
    p.add_argument("--policy", help="model that samples the answers: your SL-CAI checkpoint, a local path, or 'embedded' (default)")
    p.add_argument("--backend", help="backend for the policy (and the feedback model unless --feedback-backend): transformers (default) | llamacpp | fake ...")
    p.add_argument("--feedback-model", help="model that labels the pairs (default: the policy)")
    p.add_argument("--feedback-backend", help="backend for the feedback model (default: --backend)")
    p.add_argument("--backend-option", action="append", default=[], metavar="KEY=VALUE",
                   help="passed to the backends' constructors (repeatable; VALUE parsed as YAML)")
    p.add_argument("--prompts", help="prompts: file (.jsonl/.json/.csv/.parquet/.txt), 'default' (red-team set), advbench, harmbench, do-not-answer, hf:ORG/NAME")
    p.add_argument("--prompt-field", help="column holding the prompt (default: auto-detect)")
    p.add_argument("--principles", help="feedback principles: Charter YAML, the paper's RLMadisonInstructions.json, or 'default'")
    p.add_argument("--few-shot", help="feedback examples: Charter YAML, RLMadisonFewShotPrompts.json, RLMadisonPrecogFewShotPrompts.json, 'default' or 'none'")
    p.add_argument("--format", choices=["chat", "text"], help="how the feedback model is asked: one chat user message (default) or the paper's raw text")
    p.add_argument("--policy-format", choices=["chat", "text"], help="how the policy is sampled (default: --format)")
    p.add_argument("--samples", type=int, help="answers per prompt (default 2; every pair is compared)")
    p.add_argument("--ensemble", type=int, help="principles drawn and averaged per comparison (default 1)")
    p.add_argument("--cot", action="store_const", const=True, help="chain of thought: reason step by step, then score; probabilities clamped")
    p.add_argument("--clamp", nargs=2, type=float, metavar=("LOW", "HIGH"), help="CoT clamp band (default 0.4 0.6)")
    p.add_argument("--limit", type=int, help="use at most N prompts")
    p.add_argument("--seed", type=int)
    p.add_argument("--temperature", type=float, help="policy sampling temperature (default 1.0)")
    p.add_argument("--top-p", type=float)
    p.add_argument("--max-tokens", type=int, help="tokens per policy answer (default 256)")
    p.add_argument("--cot-max-tokens", type=int, help="tokens of CoT reasoning (default 256)")
    p.add_argument("--cot-temperature", type=float, help="CoT sampling temperature (default 0: greedy)")
    p.add_argument("--batch-size", type=int, help="prompts per batch; each batch is written when it finishes (default 8)")
    p.add_argument("--out", help="preference rows, .jsonl or .parquet (default runs/labels.jsonl); transcripts go to OUT.transcripts.jsonl")
    p.add_argument("--overwrite", action="store_true", help="start again instead of resuming an existing OUT")
    p.add_argument("--force", action="store_true", help="resume OUT even if it was made with different settings")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    p.set_defaults(func=cmd_label)


def cmd_label(a: argparse.Namespace) -> int:
    from charter.rlcai.labels import label, load_label_config

    keys = ["policy", "backend", "feedback_model", "feedback_backend", "prompts", "prompt_field", "principles",
            "few_shot", "format", "policy_format", "samples", "ensemble", "cot", "limit", "seed", "temperature",
            "top_p", "max_tokens", "cot_max_tokens", "cot_temperature", "batch_size", "out"]
    overrides = {k: getattr(a, k) for k in keys}
    if a.clamp:
        overrides["clamp_low"], overrides["clamp_high"] = a.clamp
    options = _backend_options(a.backend_option)
    if options:
        overrides["backend_options"] = options
    cfg = load_label_config(a.config, overrides)
    print(f"charter label: policy={cfg.policy} feedback={cfg.feedback_model or cfg.policy} backend={cfg.backend} "
          f"format={cfg.format} samples={cfg.samples} ensemble={cfg.ensemble} cot={cfg.cot} -> {cfg.out}", file=sys.stderr)
    summary = label(cfg, overwrite=a.overwrite, force=a.force, progress=not a.quiet)
    print(summary.line())
    return 1 if summary.failures else 0


def _add_eval_labeler(sub) -> None:
    p = sub.add_parser("eval-labeler", help="accuracy and calibration of a feedback model on {prompt, corrects, incorrects} comparisons (e.g. the 438 HHH set)")
    p.add_argument("file", help="JSONL of {prompt, corrects, incorrects} rows, e.g. 438HHHEvaluations.jsonl")
    p.add_argument("--model", default="embedded", help="feedback model (default: embedded)")
    p.add_argument("--pm", help="score a preference model (`charter train pm` directory) instead of a prompted "
                   "feedback model; FILE may also be held-out preference rows (prompt/chosen/rejected)")
    p.add_argument("--backend", default="transformers", help="transformers (default) | llamacpp | fake ...")
    p.add_argument("--backend-option", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--format", choices=["text", "chat"], default="text", help="raw text as in the file (default) or one chat user message")
    p.add_argument("--cot", action="store_true", help="chain of thought before the answer")
    p.add_argument("--few-shot", default="none", help="feedback examples to prepend: 'none' (default), 'default' or a file")
    p.add_argument("--principles", default="default", help="principles for answer-style rows (Charter YAML or RLMadisonInstructions.json)")
    p.add_argument("--principle", help="one fixed principle text for answer-style rows (default: drawn per row)")
    p.add_argument("--limit", type=int, help="first N rows only")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-tokens", type=int, default=256, help="CoT reasoning tokens (default 256)")
    p.add_argument("--temperature", type=float, default=0.0, help="CoT sampling temperature (default 0: greedy)")
    p.add_argument("--batch-size", type=int, help="backend batch size")
    p.add_argument("--bins", type=int, default=10, help="calibration bins (default 10)")
    p.add_argument("--out", default="runs/labeler.json", help="results JSON (default runs/labeler.json)")
    p.add_argument("--plot", help="reliability plot PNG (default: OUT with .png; 'none' to skip)")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_eval_labeler)


def cmd_eval_labeler(a: argparse.Namespace) -> int:
    from pathlib import Path

    from charter.backends import create_backend
    from charter.errors import ConfigError
    from charter.rlcai.labeler_eval import evaluate_labeler, write_result

    if a.limit is not None and a.limit < 1:
        raise ConfigError("--limit must be >= 1")
    plot = None if a.plot == "none" else (a.plot or str(Path(a.out).with_suffix(".png")))
    if a.pm:
        res = _eval_pm(a)
        write_result(res, a.out, plot)
        print(res.line())
        print(f"wrote {a.out}" + (f" and {res.plot}" if res.plot else ""))
        return 0
    backend = create_backend(a.backend, a.model, **_backend_options(a.backend_option, a.batch_size))
    try:
        res = evaluate_labeler(backend, a.file, fmt=a.format, cot=a.cot, limit=a.limit, few_shot=a.few_shot,
                               principles=a.principles, principle=a.principle, seed=a.seed, max_tokens=a.max_tokens,
                               temperature=a.temperature, bins=a.bins, progress=not a.quiet)
    finally:
        backend.close()
    write_result(res, a.out, plot)
    print(res.line())
    print(f"wrote {a.out}" + (f" and {res.plot}" if res.plot else ""))
    return 0


def _add_pm(tsub, common) -> None:
    p = tsub.add_parser("pm", help="preference model on soft AI labels (+ mixed-in comparisons), trl.RewardTrainer")
    common(p, "preference rows from `charter label` (prompt/chosen/rejected/score)")
    p.add_argument("--mix", action="append", metavar="FILE[:RATIO]",
                   help="add a preference file (TRL prompt/chosen/rejected or hh-rlhf chosen/rejected) as hard "
                        "labels; RATIO = its share of the training mix (default: all its rows); repeatable")
    p.add_argument("--eval-data", help="held-out preference rows (default: --eval-share of --data)")
    p.add_argument("--eval-share", type=float, help="share of --data held out for the accuracy printed at the end (default 0.1)")
    p.set_defaults(func=cmd_pm)


def cmd_pm(a: argparse.Namespace) -> int:
    from charter.train.pm import load_pm_config, summary_line, train_pm
    from charter.train.cli import overrides

    cfg = load_pm_config(a.config, **overrides(a, ["mix", "eval_data", "eval_share"]))
    print(f"charter train pm: model={cfg.model} data={cfg.data} mix={cfg.mix or 'none'} lora={bool(cfg.lora)} "
          f"-> {cfg.out}", file=sys.stderr)
    print(summary_line(train_pm(cfg, progress=not a.quiet)))
    return 0


def _add_rl(tsub) -> None:
    p = tsub.add_parser("rl", help="RL-CAI: RLOO against a preference model's score, KL to the starting policy (trl.RLOOTrainer)")
    p.add_argument("--model", help="starting policy: the SL-CAI checkpoint, a local HF checkpoint, or 'embedded' (default)")
    p.add_argument("--pm", help="preference model directory from `charter train pm` (the reward)")
    p.add_argument("--out", help="output directory: checkpoint, train_log.jsonl, rl.png; re-running resumes")
    p.add_argument("--config", help="YAML file of RL settings (configs/train/rl.yaml; flags override it)")
    p.add_argument("--prompts", help="red-team prompts: file, 'default', advbench, harmbench, do-not-answer, hf:ORG/NAME")
    p.add_argument("--helpful-prompts", help="helpfulness prompts (same sources), or 'none'")
    p.add_argument("--helpful-ratio", type=float, help="share of helpfulness prompts in the mix (default 0.5)")
    p.add_argument("--prompt-field", help="column holding the prompt (default: auto-detect)")
    p.add_argument("--limit", type=int, help="use at most N prompts from each set")
    p.add_argument("--samples", type=int, help="completions per prompt, the leave-one-out group (default 4)")
    p.add_argument("--max-tokens", type=int, help="tokens per completion (default 64)")
    p.add_argument("--temperature", type=float, help="sampling temperature (default 1.0)")
    p.add_argument("--top-p", type=float, help="nucleus sampling (default 1.0)")
    p.add_argument("--beta", type=float, help="KL penalty to the starting policy, in the reward (default 0.05)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--lora", dest="lora", action="store_const", const=True, help="train a LoRA adapter, then merge it")
    g.add_argument("--full", dest="lora", action="store_const", const=False, help="full fine-tuning (default)")
    p.add_argument("--max-steps", type=int, help="stop after N optimizer steps (default: one pass over the prompts)")
    p.add_argument("--seed", type=int)
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_rl)


def cmd_rl(a: argparse.Namespace) -> int:
    from charter.train.rl import load_rl_config, summary_line, train_rl

    keys = ["model", "pm", "out", "prompts", "helpful_prompts", "helpful_ratio", "prompt_field", "limit", "samples",
            "max_tokens", "temperature", "top_p", "beta", "lora", "seed"]
    cfg = load_rl_config(a.config, **{k: getattr(a, k) for k in keys}, trainer={"max_steps": a.max_steps})
    print(f"charter train rl: policy={cfg.model} pm={cfg.pm} samples={cfg.samples} max_tokens={cfg.max_tokens} "
          f"temperature={cfg.temperature} top_p={cfg.top_p} beta={cfg.beta} -> {cfg.out}", file=sys.stderr)
    print(summary_line(train_rl(cfg, progress=not a.quiet)))
    return 0


def _eval_pm(a: argparse.Namespace):
    from charter.rlcai.labeler_eval import evaluate_pm
    from charter.scorer import load_pm

    pm = load_pm(a.pm)
    try:
        return evaluate_pm(pm, a.file, limit=a.limit, bins=a.bins)
    finally:
        pm.close()


def register_train(tsub, common) -> None:
    """`train pm` and `train rl`, added to the `train` subcommands by charter.train.cli."""
    _add_pm(tsub, common)
    _add_rl(tsub)


def register(sub) -> None:
    _add_label(sub)
    _add_eval_labeler(sub)
