"""`charter train rl`: RL-CAI, the policy trained against the preference model's score (trl.RLOOTrainer).

The paper runs PPO with a KL penalty to the starting policy. RLOO is TRL's lighter equivalent that
keeps the paper's shape: the KL penalty (beta x summed log-ratio to the frozen starting policy) is
subtracted from the PM reward, and each prompt's other samples are its baseline (no value model).
The PM directory goes to TRL as the reward model, and TRL scores prompt + completion with the PM's
own chat template, as the PM was trained. Prompts come from Charter's prompt sources, red-team and
helpfulness mixed at `helpful_ratio`. Generation settings are explicit top-level keys, never
TRL's defaults. Output: a plain checkpoint (LoRA merged), train_log.jsonl (reward, kl,
completion length per step) and rl.png.
"""
from __future__ import annotations

import random
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from charter.errors import ConfigError, InputError
from charter.train import common

TRAINER_DEFAULTS: dict[str, Any] = {
    "num_train_epochs": 1, "lr_scheduler_type": "constant", "warmup_steps": 0, "per_device_train_batch_size": 8,
    "gradient_accumulation_steps": 1, "logging_steps": 1, "save_strategy": "steps", "save_steps": 50,
    "save_total_limit": 2, "report_to": "none", "dataloader_num_workers": 0, "gradient_checkpointing": False,
}
LR = {"full": 1e-6, "lora": 1e-5}  # TRL's RLOO default; LoRA updates need a larger step
# Top-level settings that land in trl.RLOOConfig under TRL's names (one place for each value).
GENERATION_KEYS = {"samples": "num_generations", "max_tokens": "max_completion_length", "temperature": "temperature",
                   "top_p": "top_p", "beta": "beta"}
PLOT = "rl.png"
CURVES = (("reward", "PM reward"), ("kl", "KL to the start"), ("completions/mean_length", "completion tokens"))


@dataclass
class RLRunConfig:
    """Everything that defines a `charter train rl` run (configs/train/rl.yaml)."""

    model: str = "embedded"  # the starting policy: usually the SL-CAI checkpoint
    pm: str = ""  # the reward: a directory from `charter train pm`
    out: str = ""
    prompts: str = "default"  # red-team prompts
    helpful_prompts: str = "default"  # "none": red-team only
    helpful_ratio: float = 0.5  # share of helpfulness prompts in the mix
    prompt_field: str | None = None
    limit: int | None = None  # prompts per set
    samples: int = 4  # completions per prompt (the leave-one-out group)
    max_tokens: int = 64
    temperature: float = 1.0
    top_p: float = 1.0
    beta: float = 0.05  # KL penalty to the starting policy
    lora: bool | dict[str, Any] = False
    merge: bool = True
    seed: int = 0
    trainer: dict[str, Any] = field(default_factory=dict)  # passed through to trl.RLOOConfig
    where = "config"


def load_rl_config(path: str | None = None, **overrides: Any) -> RLRunConfig:
    from charter.config import build_config, read_config_file

    data = dict(read_config_file(path))
    where = path or "command line"
    trainer = {**(data.get("trainer") or {}), **{k: v for k, v in (overrides.pop("trainer", None) or {}).items() if v is not None}}
    data.update({k: v for k, v in overrides.items() if v is not None})
    if trainer:
        data["trainer"] = trainer
    cfg = build_config(RLRunConfig, data, where)
    cfg.where = where
    for name in ("pm", "out"):
        if not getattr(cfg, name):
            raise ConfigError(f"{where}: '{name}' is required (pass --{name} or set it in the config file)")
    return _check(cfg)


def _check(cfg: RLRunConfig) -> RLRunConfig:
    for ours, theirs in GENERATION_KEYS.items():
        if theirs in cfg.trainer:
            raise ConfigError(f"{cfg.where}: set '{ours}' at the top level, not 'trainer.{theirs}'")
    if not 0 <= cfg.helpful_ratio < 1:
        raise ConfigError(f"{cfg.where}: helpful_ratio must be in [0, 1), got {cfg.helpful_ratio}")
    if cfg.samples < 2:
        raise ConfigError(f"{cfg.where}: samples must be >= 2 (each sample's baseline is the others' mean)")
    if cfg.max_tokens < 1 or not 0 < cfg.top_p <= 1 or cfg.temperature <= 0 or cfg.beta < 0:
        raise ConfigError(f"{cfg.where}: need max_tokens >= 1, 0 < top_p <= 1, temperature > 0 and beta >= 0")
    return cfg


def rl_prompts(cfg: RLRunConfig) -> list[list[dict[str, str]]]:
    """Red-team prompts plus enough helpfulness prompts for their share of the mix (seeded), shuffled."""
    from charter.prompts import load_prompts

    red = [list(p.messages) for p in load_prompts(cfg.prompts, "red_team", cfg.prompt_field, cfg.limit)]
    rng = random.Random(cfg.seed)
    helpful: list[list[dict[str, str]]] = []
    if cfg.helpful_prompts != "none" and cfg.helpful_ratio > 0:
        pool = [list(p.messages) for p in load_prompts(cfg.helpful_prompts, "helpful", cfg.prompt_field, cfg.limit)]
        want = round(cfg.helpful_ratio / (1 - cfg.helpful_ratio) * len(red))
        helpful = rng.sample(pool, min(want, len(pool)))
    rows = red + helpful
    if not rows:
        raise InputError("no prompts; check --prompts / --helpful-prompts", cfg.prompts)
    rng.shuffle(rows)
    return rows


def build_rl_trainer(cfg: RLRunConfig, progress: bool = True):
    """The configured trl.RLOOTrainer (policy, frozen reference, PM reward), not yet trained."""
    import warnings

    import datasets

    # TRL warns about the installed vLLM version at import even when generation does not use vLLM.
    warnings.filterwarnings("ignore", message="TRL currently supports vLLM")
    from trl import RLOOConfig, RLOOTrainer

    from charter.scorer import load_pm

    load_pm(cfg.pm).close()  # a clear error for a wrong --pm before the policy loads
    mode = "lora" if cfg.lora is not False else "full"
    defaults = {**TRAINER_DEFAULTS, "learning_rate": LR[mode]}
    defaults.update({theirs: getattr(cfg, ours) for ours, theirs in GENERATION_KEYS.items()})
    args = common.trainer_args(RLOOConfig, cfg, defaults, progress)
    dataset = datasets.Dataset.from_list([{"prompt": p} for p in rl_prompts(cfg)])
    try:
        return RLOOTrainer(model=common.resolve_model(cfg.model), reward_funcs=str(Path(cfg.pm).resolve()), args=args,
                           train_dataset=dataset, peft_config=common.lora_config(cfg.lora))
    except OSError as exc:
        raise common.load_error(cfg.model, exc) from exc


def train_rl(cfg: RLRunConfig, progress: bool = True) -> dict[str, Any]:
    trainer = build_rl_trainer(cfg, progress)
    args = trainer.args
    steps = args.max_steps if args.max_steps > 0 else len(trainer.train_dataset) * cfg.samples // args.per_device_train_batch_size
    print(f"charter train rl: {len(trainer.train_dataset)} prompts, {steps} steps of {args.per_device_train_batch_size} "
          f"completions ({args.per_device_train_batch_size // cfg.samples} prompts x {cfg.samples} samples), "
          f"lr {args.learning_rate:g}", file=sys.stderr)
    common.run_trainer(trainer, cfg.out)
    out = common.save(trainer, cfg.out, cfg.merge)
    steps_log = step_log(trainer.state.log_history)
    plot_rl(steps_log, out / PLOT)
    return {"out": str(out), "steps": steps_log}


def step_log(history: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The per-step rows of the trainer's log that carry the reward."""
    keys = ["step", "loss"] + [k for k, _ in CURVES]
    return [{k: r[k] for k in keys if k in r} for r in history if "reward" in r]


def plot_rl(rows: list[dict[str, Any]], path: Path) -> Path | None:
    """Reward, KL and completion length against the step, side by side."""
    if not rows:
        return None
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:  # train_log.jsonl is the record; the plot is a convenience
        return None
    fig, axes = plt.subplots(1, len(CURVES), figsize=(4 * len(CURVES), 3))
    for ax, (key, title) in zip(axes, CURVES):
        pts = [(r["step"], r[key]) for r in rows if key in r]
        if pts:
            ax.plot(*zip(*pts), marker="." if len(pts) < 50 else None)
        ax.set(xlabel="step", title=title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def summary_line(result: dict[str, Any]) -> str:
    rows = result["steps"]
    if not rows:
        return f"saved {result['out']}"
    first, last = rows[0], rows[-1]
    kl = f", KL {last['kl']:.4f}" if "kl" in last else ""
    length = last.get("completions/mean_length")
    return (f"saved {result['out']}: {len(rows)} steps, PM reward {first['reward']:+.3f} (step 1) -> "
            f"{last['reward']:+.3f} (step {last['step']}){kl}"
            + (f", mean completion {length:.0f} tokens" if length is not None else ""))
