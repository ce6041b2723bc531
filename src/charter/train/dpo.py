"""`charter train dpo`: preference tuning on (revised, initial) or AI-feedback pairs, over trl.DPOTrainer.

Soft labels. A row may carry `score` = p, the feedback model's probability that `chosen` is better
(RL-CAI's soft labels). The right per-row objective is the soft-target DPO loss
    -p * log σ(β·Δ) - (1 - p) * log σ(-β·Δ)        (Δ = chosen minus rejected implicit reward)
i.e. conservative DPO with a per-row ε = 1 - p. TRL takes one global label_smoothing, and (in 1.16)
only for the robust/EXO/AOT losses, so instead `soft_labels: sample` (the default) draws each row's
hard label from p, seeded: the pair is kept with probability p and swapped otherwise. The stock
sigmoid loss on those labels equals the soft-target loss in expectation (one epoch sees each row
once, as SGD would sample it). `soft_labels: hard` keeps the more probable order (p >= 0.5) and
ignores the strength. Rows without a score are hard labels as given. A global alternative stays one
setting away: `trainer: {loss_type: [robust], label_smoothing: 0.1}` is passed through.
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from charter.config import setting
from charter.errors import InputError
from charter.train import common

TRAINER_DEFAULTS: dict[str, Any] = {**common.TRAINER_DEFAULTS, "beta": 0.1}
LR = {"full": 1e-6, "lora": 1e-5}  # TRL's DPO default; LoRA updates need a larger step
SOFT_LABELS = ("sample", "hard")
COLUMNS = ("prompt", "chosen", "rejected")


@dataclass
class DPOConfig(common.TrainConfig):
    """Everything that defines a `charter train dpo` run (configs/train/dpo.yaml); `trainer:` -> trl.DPOConfig."""

    data: str = setting("", "run directory made by `charter generate`, or a preference file with "
                        "prompt/chosen/rejected (optional score) (.jsonl/.parquet)")
    soft_labels: str = setting("sample", "how a row's score is used (default sample; see the module docstring)",
                               choices=SOFT_LABELS)


def load_dpo_config(path: str | None = None, **overrides: Any) -> DPOConfig:
    return DPOConfig.load(path, overrides)


def apply_scores(rows: list[dict[str, Any]], mode: str, seed: int) -> list[dict[str, Any]]:
    """Hard (prompt, chosen, rejected) rows: each scored row keeps its order with probability p ('sample')."""
    rng = random.Random(seed)
    out = []
    for i, row in enumerate(rows):
        p = row.get("score")
        if p is not None and not 0 <= p <= 1:
            raise InputError(f"row {i + 1}: score must be a probability in [0, 1], got {p}")
        keep = True if p is None else (rng.random() < p if mode == "sample" else p >= 0.5)
        chosen, rejected = (row["chosen"], row["rejected"]) if keep else (row["rejected"], row["chosen"])
        out.append({"prompt": row["prompt"], "chosen": chosen, "rejected": rejected})
    return out


def dpo_dataset(cfg: DPOConfig):
    import datasets

    path = Path(cfg.data)
    if path.is_dir() or path.name == "records.jsonl":
        from charter.export import dpo_rows
        from charter.store import load_run

        rows = dpo_rows(load_run(path))
    else:
        rows = common.read_rows(cfg.data, COLUMNS).to_list()
    if not rows:
        raise InputError("no preference rows (a run needs red-team records whose revision differs from the answer)",
                         str(path))
    return datasets.Dataset.from_list(apply_scores(rows, cfg.soft_labels, cfg.seed))


def build_dpo_trainer(cfg: DPOConfig, progress: bool = True):
    from trl import DPOConfig as TRLDPOConfig, DPOTrainer

    args = common.trainer_args(TRLDPOConfig, cfg, {**TRAINER_DEFAULTS, "learning_rate": LR[cfg.mode]}, progress)
    dataset = dpo_dataset(cfg)
    try:
        return DPOTrainer(model=common.resolve_model(cfg.model), args=args, train_dataset=dataset,
                          peft_config=common.lora_config(cfg.lora))
    except OSError as exc:
        raise common.load_error(cfg.model, exc) from exc


def train_dpo(cfg: DPOConfig, progress: bool = True) -> Path:
    trainer = build_dpo_trainer(cfg, progress)
    ds = trainer.train_dataset
    # Each row is two forward/backward sequences, both with the prompt.
    tokens = [2 * len(p) + len(c) + len(r) for p, c, r in zip(ds["prompt_ids"], ds["chosen_ids"], ds["rejected_ids"])]
    common.log.info("charter train dpo: %s", common.estimate(trainer, tokens, cfg.mode))
    common.run_trainer(trainer, cfg.out)
    return common.save(trainer, cfg.out, cfg.merge)
