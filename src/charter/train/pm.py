"""`charter train pm`: the RL-CAI preference model, a thin wrapper over trl.RewardTrainer.

A sequence-classification head on the base model scores a whole conversation. The paper trains it
on the AI labels kept *soft*: a row's `score` s = P(chosen better) is the target of
sigmoid(r_chosen - r_rejected), so the loss is the cross-entropy

    -(s * log σ(d) + (1 - s) * log σ(-d)),   d = r_chosen - r_rejected

which is TRL's own loss (-log σ(d)) when s = 1. The only override is that line in compute_loss, plus
a collator that carries `score` into the batch. `--mix FILE[:RATIO]` adds other preference files
(TRL prompt/chosen/rejected rows, hh-rlhf chosen/rejected transcripts) as hard labels (s = 1), e.g.
human helpfulness comparisons, as the paper mixes them. Rows are normalised to conversational
prompt/chosen/rejected, so every source gets the same chat template.
"""
from __future__ import annotations

import math
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from charter.config import setting
from charter.errors import ConfigError, InputError
from charter.jsonl import write_json
from charter.train import common, hub
from charter.inputs.rows import read_pairs

TRAINER_DEFAULTS: dict[str, Any] = {**common.TRAINER_DEFAULTS, "per_device_train_batch_size": 8,
                                    "gradient_checkpointing": False, "disable_dropout": True}
LR = {"full": 1e-5, "lora": 1e-4}  # unless trainer.learning_rate is set
EVAL_FILE = "pm_eval.json"


@dataclass
class PMConfig(common.HubTrainConfig):
    """Everything that defines a `charter train pm` run (configs/train/pm.yaml); `trainer:` -> trl.RewardConfig.

    `model` is the base of the PM, usually the SL-CAI checkpoint."""

    data: str = setting("", "preference rows from `charter label` (prompt/chosen/rejected/score; .jsonl/.parquet)")
    mix: list[str] = setting([], "add a preference file (TRL prompt/chosen/rejected or hh-rlhf chosen/rejected) as "
                             "hard labels; RATIO = its share of the training mix (default: all its rows); repeatable",
                             cli={"action": "append", "metavar": "FILE[:RATIO]"})
    eval_data: str | None = setting(None, "held-out preference rows (default: --eval-share of --data)")
    eval_share: float = setting(0.1, "share of --data held out for the accuracy printed at the end (default 0.1)",
                                bounds="[0, 1)")

    def check(self, where: str) -> None:
        for spec in self.mix:
            parse_mix(spec, where)


def load_pm_config(path: str | None = None, **overrides: Any) -> PMConfig:
    return PMConfig.load(path, overrides)


def parse_mix(spec: str, where: str = "--mix") -> tuple[str, float | None]:
    """'FILE' or 'FILE:RATIO' (RATIO: the file's share of the training mix, in (0, 1))."""
    path, sep, ratio = spec.rpartition(":")
    if not sep or not path or Path(spec).exists():
        return spec, None
    try:
        r = float(ratio)
    except ValueError:
        return spec, None  # a path with a colon in it
    if not 0 < r < 1:
        raise ConfigError(f"{where}: mix ratio must be in (0, 1), got {ratio} in '{spec}'")
    return path, r


def split_rows(rows: list[dict], share: float, seed: int) -> tuple[list[dict], list[dict]]:
    """(train, held out): a seeded `share` of the rows, at least one when there are two or more."""
    order = list(range(len(rows)))
    random.Random(seed).shuffle(order)
    n = 0 if share == 0 or len(rows) < 2 else max(1, round(share * len(rows)))
    held = set(order[:n])
    return [r for i, r in enumerate(rows) if i not in held], [rows[i] for i in sorted(held)]


def mix_rows(base: list[dict], specs: list[str], seed: int) -> list[dict]:
    """The label rows plus each mix file (all its rows, or enough for its share of the result)."""
    rng = random.Random(seed)
    parsed = [parse_mix(s) for s in specs]
    shares = sum(r for _, r in parsed if r)
    if shares >= 1:
        raise ConfigError(f"mix ratios add up to {shares:g}; they are shares of the mix and must sum below 1")
    out = list(base)
    for path, ratio in parsed:
        rows = read_pairs(path, hard=True)
        if ratio:
            want = round(ratio / (1 - shares) * len(base))
            rows = rng.sample(rows, min(want, len(rows)))
        out += rows
    rng.shuffle(out)
    return out


def pm_datasets(cfg: PMConfig):
    """(train, held-out) datasets.Dataset of conversational prompt/chosen/rejected/score rows."""
    import datasets

    rows = read_pairs(cfg.data)
    if not rows:
        raise InputError("no preference rows; run `charter label` first", cfg.data)
    train, held = (rows, read_pairs(cfg.eval_data)) if cfg.eval_data else split_rows(rows, cfg.eval_share, cfg.seed)
    train = mix_rows(train, cfg.mix, cfg.seed)
    return datasets.Dataset.from_list(train), held


# ---- the trainer --------------------------------------------------------------------------------


def soft_loss(chosen, rejected, score):
    """Cross-entropy of sigmoid(r_chosen - r_rejected) against the soft label `score` (mean over rows)."""
    import torch.nn.functional as F

    d = chosen - rejected
    return -(score * F.logsigmoid(d) + (1 - score) * F.logsigmoid(-d)).mean()


_CLASSES: dict[str, type] = {}


def trainer_classes() -> tuple[type, type]:
    """(SoftRewardTrainer, collator): trl's, with `score` carried through the batch into the loss."""
    if _CLASSES:
        return _CLASSES["trainer"], _CLASSES["collator"]
    import torch
    from trl import RewardTrainer
    from trl.trainer.reward_trainer import DataCollatorForPreference

    class ScoreCollator(DataCollatorForPreference):
        def torch_call(self, examples):
            batch = super().torch_call(examples)
            if "score" in examples[0]:
                batch["score"] = torch.tensor([e["score"] for e in examples], dtype=torch.float)
            return batch

    class SoftRewardTrainer(RewardTrainer):
        def _set_signature_columns_if_needed(self):
            super()._set_signature_columns_if_needed()
            self._signature_columns = list(dict.fromkeys([*self._signature_columns, "score"]))

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            score = inputs.pop("score", None)
            loss, outputs = super().compute_loss(model, inputs, True, num_items_in_batch)  # TRL's metrics
            if score is not None:
                chosen, rejected = torch.chunk(outputs.logits.squeeze(-1), chunks=2)
                loss = soft_loss(chosen, rejected, score.to(chosen.dtype))
                if self.args.center_rewards_coefficient is not None:
                    loss = loss + self.args.center_rewards_coefficient * torch.mean((chosen + rejected) ** 2)
            return (loss, outputs) if return_outputs else loss

    _CLASSES.update(trainer=SoftRewardTrainer, collator=ScoreCollator)
    return SoftRewardTrainer, ScoreCollator


def build_pm_trainer(cfg: PMConfig, progress: bool = True):
    """The configured trainer (dataset tokenized) and the held-out rows, not yet trained."""
    cfg.validate()  # a config built in Python has not been checked yet
    train, held = pm_datasets(cfg)  # bad rows are reported before the heavy imports
    from transformers import AutoTokenizer
    from trl import RewardConfig

    args = common.trainer_args(RewardConfig, cfg, {**TRAINER_DEFAULTS, "learning_rate": LR[cfg.mode]}, progress)
    trainer_cls, collator_cls = trainer_classes()
    path = common.resolve_model(cfg.model)
    try:
        tok = AutoTokenizer.from_pretrained(path)
        tok.pad_token = args.pad_token or tok.pad_token or tok.eos_token
        trainer = trainer_cls(model=path, args=args, train_dataset=train, processing_class=tok,
                              data_collator=collator_cls(pad_token_id=tok.pad_token_id),
                              peft_config=common.lora_config(cfg.lora, task_type="SEQ_CLS"))
    except OSError as exc:
        raise common.load_error(cfg.model, exc) from exc
    return trainer, held


def train_pm(cfg: PMConfig, progress: bool = True) -> dict[str, Any]:
    """Train, save a loadable PM in cfg.out, and score the held-out rows with it."""
    trainer, held = build_pm_trainer(cfg, progress)
    ds = trainer.train_dataset
    tokens = [len(c) + len(r) for c, r in zip(ds["chosen_ids"], ds["rejected_ids"])]
    common.log.info("charter train pm: %s", common.estimate(trainer, tokens, cfg.mode))
    common.run_trainer(trainer, cfg.out)
    out = common.save(trainer, cfg.out, cfg.merge)
    result = {"out": str(out), "train_rows": len(ds), "held_out": held_out_metrics(str(out), held)}
    write_json(out / EVAL_FILE, result)
    common.prune_checkpoints(out)
    hub.finish(cfg, out, "pm")  # the model card, and the upload if --push-to-hub
    return result


def held_out_metrics(pm_dir: str, rows: list[dict]) -> dict[str, Any]:
    """Accuracy (r_chosen > r_rejected), mean P(chosen) and soft cross-entropy against the scores."""
    if not rows:
        return {"n": 0}
    from charter.scorer import load_pm

    pm = load_pm(pm_dir)
    try:
        chosen = pm.score([r["prompt"] + r["chosen"] for r in rows])
        rejected = pm.score([r["prompt"] + r["rejected"] for r in rows])
    finally:
        pm.close()
    ps = [1 / (1 + math.exp(r - c)) for c, r in zip(chosen, rejected)]
    eps = 1e-12
    xent = [-(r["score"] * math.log(p + eps) + (1 - r["score"]) * math.log(1 - p + eps)) for r, p in zip(rows, ps)]
    return {"n": len(rows), "accuracy": sum(c > r for c, r in zip(chosen, rejected)) / len(rows),
            "mean_p_chosen": sum(ps) / len(ps), "soft_loss": sum(xent) / len(xent)}


def summary_line(result: dict[str, Any]) -> str:
    h = result["held_out"]
    if not h.get("n"):
        return f"saved {result['out']} ({result['train_rows']} training rows; no held-out rows)"
    return (f"saved {result['out']} ({result['train_rows']} training rows); held-out: accuracy {h['accuracy']:.3f} "
            f"on {h['n']} pairs, mean P(chosen) {h['mean_p_chosen']:.3f}, soft loss {h['soft_loss']:.3f} "
            f"(chance {math.log(2):.3f})")

