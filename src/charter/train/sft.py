"""`charter train sft`: SL-CAI supervised fine-tuning, a thin wrapper over trl.SFTTrainer.

Loss on the final assistant answer only: SmolLM2's chat template (like most) has no
`{% generation %}` markers, so `assistant_only_loss` cannot work; instead each `messages` row
becomes a conversational prompt/completion pair (prompt = every message but the last, completion =
the last assistant message) and TRL's `completion_only_loss` masks the prompt's labels with -100.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from charter.errors import ConfigError, InputError
from charter.train import common

# The paper's recipe (§3.1): one epoch at a constant learning rate. Sizes keep a small run to minutes on 2 cores.
TRAINER_DEFAULTS = common.TRAINER_DEFAULTS  # SFT adds nothing to the shared shape
LR = {"full": 2e-5, "lora": 1e-4}  # unless trainer.learning_rate is set


@dataclass
class SFTRunConfig:
    """Everything that defines a `charter train sft` run (configs/train/sft.yaml)."""

    model: str = "embedded"
    data: str = ""
    out: str = ""
    lora: bool | dict[str, Any] = False
    merge: bool = True  # LoRA: also save merged weights, so `--model OUT` works in every backend
    revision: str = "final"  # run directories: the final revision, or every round's ("all": SL-CAI-n)
    upto: int | None = None  # use rounds 1..upto only
    helpful_ratio: float | None = None  # share of helpfulness rows in the mix (default: all of them)
    seed: int = 0
    trainer: dict[str, Any] = field(default_factory=dict)  # passed through to trl.SFTConfig
    where = "config"  # not a field (no YAML key): where the settings came from, for messages


def load_sft_config(path: str | None = None, **overrides: Any) -> SFTRunConfig:
    cfg = common.load_train_config(SFTRunConfig, path, overrides)
    if cfg.revision not in ("final", "all"):
        raise ConfigError(f"{cfg.where}: revision must be 'final' or 'all', not '{cfg.revision}'")
    return cfg


def to_prompt_completion(messages: list[dict[str, str]]) -> dict[str, list]:
    return {"prompt": messages[:-1], "completion": messages[-1:]}


def sft_dataset(cfg: SFTRunConfig):
    """prompt/completion conversational rows from a run directory or a file with `messages`."""
    import datasets

    path = Path(cfg.data)
    if path.is_dir() or path.name == "records.jsonl":
        from charter.export import sft_rows
        from charter.store import load_run

        rows = sft_rows(load_run(path), cfg.revision, cfg.upto, cfg.helpful_ratio, cfg.seed)
        if not rows:
            raise InputError("no SFT rows: the run has no finished red-team revisions or helpful answers", str(path))
        return datasets.Dataset.from_list([to_prompt_completion(r["messages"]) for r in rows])
    if cfg.revision != "final" or cfg.upto or cfg.helpful_ratio is not None:
        raise ConfigError("revision / upto / helpful_ratio select rows from a run directory; pass the run "
                          "directory as --data, or export the mix you want with `charter export`")
    ds = common.read_rows(cfg.data, ("messages",), (("prompt", "completion"),))
    if "messages" not in ds.column_names:
        return ds.select_columns(["prompt", "completion"])
    _check_last_assistant(ds, cfg.data)
    return ds.map(lambda r: to_prompt_completion(r["messages"]), remove_columns=ds.column_names)


def _check_last_assistant(ds, path: str) -> None:
    for i, msgs in enumerate(ds["messages"]):
        if not msgs or msgs[-1].get("role") != "assistant" or len(msgs) < 2:
            raise InputError(f"row {i + 1}: 'messages' must hold a prompt and end with an assistant turn", path)


def build_sft_trainer(cfg: SFTRunConfig, progress: bool = True):
    """The configured trl.SFTTrainer (dataset tokenized, labels masked), not yet trained."""
    from trl import SFTConfig, SFTTrainer

    mode = "lora" if cfg.lora is not False else "full"
    defaults = {**TRAINER_DEFAULTS, "learning_rate": LR[mode]}
    args = common.trainer_args(SFTConfig, cfg, defaults, progress)
    dataset = sft_dataset(cfg)
    model = common.resolve_model(cfg.model)
    try:
        return SFTTrainer(model=model, args=args, train_dataset=dataset, peft_config=common.lora_config(cfg.lora))
    except OSError as exc:
        raise common.load_error(cfg.model, exc) from exc


def train_sft(cfg: SFTRunConfig, progress: bool = True) -> Path:
    """Train, then save a loadable checkpoint (merged if LoRA) and the loss log into cfg.out."""
    trainer = build_sft_trainer(cfg, progress)
    mode = "lora" if cfg.lora is not False else "full"
    print(f"charter train sft: {common.estimate(trainer, [len(x) for x in trainer.train_dataset['input_ids']], mode)}",
          file=sys.stderr)
    common.run_trainer(trainer, cfg.out)
    return common.save(trainer, cfg.out, cfg.merge)
