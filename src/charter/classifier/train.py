"""`charter train classifier`: guard classifiers on labelled rows, a thin wrapper over transformers' Trainer.

A two-label sequence-classification head (harmless, harmful) on a causal LM backbone, trained on
`charter classifier` rows (`messages`, `kind`, `label`), read as `charter.guard.model.render`
reads them at guard time.

Streaming (the output classifier): the guard reads the head at every answer token and blocks at
the first prefix that scores over the threshold, so a prefix's score must predict the *whole*
answer's label. Besides each whole output example, training gets `prefixes` truncated copies
of it: the token sequence cut after k answer tokens, k drawn uniformly (seeded, distinct) from
1..n-1 for an answer of n tokens, each labelled with the whole answer's label. Every copy is a
token prefix of the same rendering the guard streams over, so training and guarding read the
same texts.

The threshold is picked on a held-out slice of the rows (`val_share`, stratified by label), as
the lowest score at which at most `target_fpr` of the harmless examples would be blocked; for
the output classifier an example counts as blocked when any prefix reaches it (the maximum of its
streamed scores), as it would be when guarding. It is saved in the model config (`charter_guard`).
"""
from __future__ import annotations

import dataclasses
import math
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from charter.guard.model import GUARD_KEY, ID2LABEL, KINDS, render
from charter.config import setting
from charter.errors import ConfigError, InputError
from charter.inputs.rows import check_turns, clean_messages, read_rows
from charter.jsonl import write_json
from charter.train import common

TRAINER_DEFAULTS: dict[str, Any] = {k: v for k, v in common.TRAINER_DEFAULTS.items() if k != "max_length"}
TRAINER_DEFAULTS.update(per_device_train_batch_size=8)
LR = {"full": 5e-5, "lora": 2e-4}  # unless trainer.learning_rate is set
VAL_FILE = "guard_val.json"


@dataclass
class ClassifierTrainConfig(common.TrainConfig):
    """Everything that defines a `charter train classifier` run; `trainer:` -> transformers.TrainingArguments.

    `lora` (default off: full fine-tuning suits the 135M embedded model) trains a LoRA adapter and
    saves merged weights, so the output is always a plain checkpoint."""

    data: str = setting("", "labelled rows from `charter classifier`: its directory (train.jsonl) or a .jsonl/.parquet file")
    kind: str = setting("both", "which classifier: input (prompts), output (streaming, prompt + answer) or both "
                        "(into OUT/input and OUT/output)", choices=("input", "output", "both"))
    target_fpr: float = setting(0.05, "the threshold blocks at most this share of held-out harmless examples",
                                bounds="(0, 1)")
    val_share: float = setting(0.2, "share of the rows held out to pick the threshold", bounds="(0, 1)")
    prefixes: int = setting(3, "output classifier: truncated copies of each answer, labelled with the whole "
                            "answer's label", bounds=">= 0")
    max_length: int = setting(512, "tokens read per example (longer ones keep their end)", bounds=">= 16")


def load_classifier_train_config(path: str | None = None, **overrides: Any) -> ClassifierTrainConfig:
    return ClassifierTrainConfig.load(path, overrides)


def read_examples(data: str, kind: str) -> list[dict[str, Any]]:
    """Checked rows of one kind: {messages, label, category}."""
    path = Path(data) / "train.jsonl" if Path(data).is_dir() else Path(data)
    out = []
    for where, row in read_rows(str(path), ("messages", "label")):
        check_turns(row["messages"], "messages", where)
        msgs = row["messages"]
        if isinstance(msgs, str):
            raise InputError("'messages' must be a list of {role, content} messages", where)
        if row.get("label") not in (0, 1) or isinstance(row["label"], float):
            raise InputError(f"'label' must be 0 (harmless) or 1 (harmful), got {row.get('label')!r}", where)
        row_kind = row.get("kind") or ("output" if msgs[-1]["role"] == "assistant" else "input")
        if row_kind not in KINDS:
            raise InputError(f"'kind' must be input or output, got {row_kind!r}", where)
        if row_kind == "output" and msgs[-1]["role"] != "assistant":
            raise InputError("an output row's 'messages' must end with the assistant's answer", where)
        if row_kind == kind:
            out.append({"messages": clean_messages(msgs), "label": int(row["label"]), "group": row.get("group")})
    if not out:
        raise InputError(f"no {kind} rows; write them with `charter classifier` (or train --kind "
                         f"{'output' if kind == 'input' else 'input'})", str(path))
    return out


def split(rows: list[dict], share: float, seed: int) -> tuple[list[dict], list[dict]]:
    """(train, held out), stratified by label; rows of one `group` (a query and its augmentations)
    stay on one side, so no paraphrase of a held-out example is trained on. Each label keeps at
    least one training group."""
    groups: dict = {}
    for i, r in enumerate(rows):
        groups.setdefault(r.get("group") or f"row {i}", []).append(r)
    rng, train, held = random.Random(seed), [], []
    for label in (0, 1):
        keys = [k for k, g in groups.items() if g[0]["label"] == label]
        rng.shuffle(keys)
        n = min(round(share * len(keys)), len(keys) - 1) if len(keys) > 1 else 0
        for j, key in enumerate(keys):
            (held if j < n else train).extend(groups[key])
    rng.shuffle(train)
    return train, held


def encode(tok, example: dict, kind: str) -> tuple[list[int], int]:
    """(token ids of the rendered example, index of its first answer token; len(ids) for input)."""
    text = render(tok, example["messages"])
    if kind == "input":
        ids = tok(text, add_special_tokens=False)["input_ids"]
        return ids, len(ids)
    prompt = render(tok, example["messages"][:-1])
    enc = tok(text, add_special_tokens=False, return_offsets_mapping=True)
    first = next((i for i, (_, end) in enumerate(enc["offset_mapping"]) if end > len(prompt)), len(enc["input_ids"]))
    return enc["input_ids"], first


def training_rows(tok, rows: list[dict], cfg: ClassifierTrainConfig, kind: str) -> list[dict]:
    """input_ids/labels rows: each example whole, plus (output) its truncated-prefix copies."""
    rng, out = random.Random(cfg.seed), []
    for ex in rows:
        ids, first = encode(tok, ex, kind)
        cuts = range(first + 1, len(ids)) if kind == "output" else range(0)
        for k in [len(ids), *sorted(rng.sample(cuts, min(cfg.prefixes, len(cuts))))]:
            out.append({"input_ids": ids[:k][-cfg.max_length:], "labels": ex["label"]})
    return out


def build_classifier_trainer(cfg: ClassifierTrainConfig, kind: str, progress: bool = True):
    """The configured transformers Trainer (rows tokenized) and the held-out examples, not yet trained."""
    examples = read_examples(cfg.data, kind)  # bad rows are reported before the heavy imports
    train, held = split(examples, cfg.val_share, cfg.seed)
    import datasets
    import torch
    from transformers import (AutoModelForSequenceClassification, AutoTokenizer, DataCollatorWithPadding, Trainer,
                              TrainingArguments)

    args = common.trainer_args(TrainingArguments, cfg, {**TRAINER_DEFAULTS, "learning_rate": LR[cfg.mode]}, progress)
    path = common.resolve_model(cfg.model)
    try:
        tok = AutoTokenizer.from_pretrained(path)
        tok.pad_token = tok.pad_token or tok.eos_token
        model = AutoModelForSequenceClassification.from_pretrained(
            path, num_labels=2, id2label=ID2LABEL, label2id={v: k for k, v in ID2LABEL.items()}, dtype=torch.float32)
    except OSError as exc:
        raise common.load_error(cfg.model, exc) from exc
    model.config.pad_token_id = tok.pad_token_id
    if (lora := common.lora_config(cfg.lora, task_type="SEQ_CLS")) is not None:
        from peft import get_peft_model

        model = get_peft_model(model, lora)
    dataset = datasets.Dataset.from_list(training_rows(tok, train, cfg, kind))
    trainer = Trainer(model=model, args=args, train_dataset=dataset, processing_class=tok,
                      data_collator=DataCollatorWithPadding(tok))
    return trainer, held


def train_classifier(cfg: ClassifierTrainConfig, progress: bool = True) -> dict[str, Any]:
    """Train the configured classifier(s), save each as a plain checkpoint with its threshold; {kind: result}."""
    cfg.validate()  # a config built in Python has not been checked yet
    if Path(cfg.out).exists() and not Path(cfg.out).is_dir():
        raise ConfigError(f"--out {cfg.out} is a file; training writes a directory (OUT/input, OUT/output): "
                          "choose a new directory name")
    if Path(cfg.data).is_dir():  # the file itself, so a resume checks its content
        cfg = _with(cfg, data=str(Path(cfg.data) / "train.jsonl"))
    if cfg.kind != "both":
        return {cfg.kind: _train_one(cfg, cfg.kind, progress)}
    results = {}
    for kind in KINDS:
        results[kind] = _train_one(_with(cfg, kind=kind, out=str(Path(cfg.out) / kind)), kind, progress)
    return results


def _with(cfg: ClassifierTrainConfig, **changes: Any) -> ClassifierTrainConfig:
    new = dataclasses.replace(cfg, **changes)
    new.where, new.lines = cfg.where, cfg.lines
    return new


def _train_one(cfg: ClassifierTrainConfig, kind: str, progress: bool) -> dict[str, Any]:
    trainer, held = build_classifier_trainer(cfg, kind, progress)
    tokens = [len(x) for x in trainer.train_dataset["input_ids"]]
    common.log.info("charter train classifier (%s): %s", kind, common.estimate(trainer, tokens, cfg.mode))
    common.run_trainer(trainer, cfg.out)
    out = common.save(trainer, cfg.out, cfg.merge)
    val = calibrate(str(out), held, kind, cfg.target_fpr)
    result = {"out": str(out), "kind": kind, "train_rows": len(tokens), "val": val}
    write_json(out / VAL_FILE, result)
    common.prune_checkpoints(out)
    return result


def calibrate(out: str, held: list[dict], kind: str, target_fpr: float) -> dict[str, Any]:
    """Score the held-out examples as the guard would, pick the threshold, write it into config.json."""
    from transformers import AutoConfig

    from charter.guard.model import load_guard

    guard = load_guard(out)
    try:
        if kind == "input":
            scores = guard.score_messages([ex["messages"] for ex in held])
        else:
            scores = [max((p for _, p in guard.stream_scores(ex["messages"][:-1], ex["messages"][-1]["content"])),
                          default=0.0) for ex in held]
    finally:
        guard.close()
    labels = [ex["label"] for ex in held]
    threshold = pick_threshold([s for s, y in zip(scores, labels) if y == 0], target_fpr)
    config = AutoConfig.from_pretrained(out)
    setattr(config, GUARD_KEY, {"kind": kind, "threshold": threshold, "target_fpr": target_fpr})
    config.save_pretrained(out)
    return {"threshold": threshold, "target_fpr": target_fpr, **metrics(scores, labels, threshold)}


def pick_threshold(harmless: list[float], target_fpr: float) -> float:
    """The midpoint above the highest harmless score that must not be blocked, so at most
    floor(target_fpr * n) harmless scores reach it; 0.5 with no harmless examples to go by."""
    if not harmless:
        common.log.warning("warning: no held-out harmless examples; the threshold is 0.5 (set --val-share or add rows)")
        return 0.5
    ranked = sorted(harmless, reverse=True)
    allowed = int(target_fpr * len(ranked))
    if allowed >= len(ranked):
        return 0.0
    above = ranked[allowed - 1] if allowed > 0 else 1.0
    return max((ranked[allowed] + above) / 2, math.nextafter(ranked[allowed], math.inf))  # ties stay unblocked


def metrics(scores: list[float], labels: list[int], threshold: float) -> dict[str, Any]:
    """Held-out counts, false/true positive rates at the threshold and ROC AUC (None with one label)."""
    pos = [s for s, y in zip(scores, labels) if y == 1]
    neg = [s for s, y in zip(scores, labels) if y == 0]
    def rate(xs: list[float]) -> float | None:
        return sum(s >= threshold for s in xs) / len(xs) if xs else None

    auc = (sum((p > n) + 0.5 * (p == n) for p in pos for n in neg) / (len(pos) * len(neg))) if pos and neg else None
    return {"n": len(scores), "harmful": len(pos), "harmless": len(neg), "fpr": rate(neg), "tpr": rate(pos), "auc": auc}


def summary_line(results: dict[str, Any]) -> str:
    parts = []
    for kind, r in results.items():
        v = r["val"]
        parts.append(f"{kind}: saved {r['out']} ({r['train_rows']} training rows); threshold {v['threshold']:.3f} "
                     f"for FPR <= {v['target_fpr']:g}; held-out ({v['harmful']} harmful, {v['harmless']} harmless): "
                     f"TPR {fmt(v['tpr'])}, FPR {fmt(v['fpr'])}, AUC {fmt(v['auc'])}")
    return "\n".join(parts)


def fmt(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.3f}"
