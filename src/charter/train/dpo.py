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
from charter.train import common, hub
from charter.inputs.rows import check_preference, check_score, read_rows, to_dataset

TRAINER_DEFAULTS: dict[str, Any] = {**common.TRAINER_DEFAULTS, "beta": 0.1}
LR = {"full": 1e-6, "lora": 1e-5}  # TRL's DPO default; LoRA updates need a larger step
SOFT_LABELS = ("sample", "hard")
COLUMNS = ("prompt", "chosen", "rejected")


@dataclass
class DPOConfig(common.HubTrainConfig):
    """Everything that defines a `charter train dpo` run (configs/train/dpo.yaml); `trainer:` -> trl.DPOConfig."""

    data: str = setting("", "run directory made by `charter generate`, or a preference file with "
                        "prompt/chosen/rejected (optional score) (.jsonl/.parquet)")
    soft_labels: str = setting("sample", "how a row's score is used (default sample; see the module docstring)",
                               choices=SOFT_LABELS)


def load_dpo_config(path: str | None = None, **overrides: Any) -> DPOConfig:
    return DPOConfig.load(path, overrides)


def apply_scores(rows: list[dict[str, Any]], mode: str, seed: int, where: list[str] | None = None) -> list[dict[str, Any]]:
    """Hard (prompt, chosen, rejected) rows: each scored row keeps its order with probability p ('sample').
    `where` names each row for messages ('file:LINE')."""
    rng = random.Random(seed)
    out = []
    for i, row in enumerate(rows):
        p = check_score(row.get("score"), where[i] if where else f"row {i + 1}")
        keep = True if p is None else (rng.random() < p if mode == "sample" else p >= 0.5)
        chosen, rejected = (row["chosen"], row["rejected"]) if keep else (row["rejected"], row["chosen"])
        out.append({"prompt": row["prompt"], "chosen": chosen, "rejected": rejected})
    return out


def dpo_dataset(cfg: DPOConfig):
    path = Path(cfg.data)
    where = None
    if path.is_dir() or path.name == "records.jsonl":
        from charter.export import dpo_rows
        from charter.runs.runread import load_run

        rows = dpo_rows(load_run(path))
    else:
        where, rows = map(list, zip(*read_rows(cfg.data, COLUMNS)))
        for w, row in zip(where, rows):
            check_preference(row, w)
    if not rows:
        raise InputError("no preference rows (a run needs red-team records whose revision differs from the answer)",
                         str(path))
    return to_dataset(apply_scores(rows, cfg.soft_labels, cfg.seed, where), cfg.data)


def build_dpo_trainer(cfg: DPOConfig, progress: bool = True):
    cfg.validate()  # a config built in Python has not been checked yet
    dataset = dpo_dataset(cfg)  # bad rows are reported before the heavy imports
    from trl import DPOConfig as TRLDPOConfig, DPOTrainer

    args = common.trainer_args(TRLDPOConfig, cfg, {**TRAINER_DEFAULTS, "learning_rate": LR[cfg.mode]}, progress)
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
    out = common.save(trainer, cfg.out, cfg.merge)
    common.prune_checkpoints(out)
    hub.finish(cfg, out, "dpo")  # the model card, and the upload if --push-to-hub
    return out
