"""What the trainers share: one config base, data files, LoRA, estimate, resume, saving, the loss log.

torch / transformers / trl / peft are imported inside functions, so `charter --help` stays fast.
"""
from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import logging
import math
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from charter.config import Config, check_keys, seed_setting, setting, strip_lines
from charter.errors import BackendError, ConfigError, RunError

log = logging.getLogger("charter.train")

CHECKPOINTS = "checkpoints"  # trainer checkpoints live here, beside the final model in `out`
ADAPTER = "adapter"
LOG, PLOT = "train_log.jsonl", "loss.png"
# Keys that Charter sets from its own top-level settings; two places for one value invite confusion.
OWN_KEYS = {"output_dir": "out", "seed": "seed", "report_to": "report_to"}
# --report-to choice: the package its transformers integration imports (checked before the model loads)
REPORT_TO = {"none": None, "tensorboard": "tensorboard", "wandb": "wandb", "trackio": "trackio", "all": None}
# The paper's recipe shape (1 epoch, constant LR, no warm-up) plus what keeps a CPU run small,
# shared by SFT and DPO; each adds its own keys and learning rates.
TRAINER_DEFAULTS: dict[str, Any] = dict(
    num_train_epochs=1, lr_scheduler_type="constant", warmup_steps=0, per_device_train_batch_size=4,
    gradient_accumulation_steps=1, max_length=512, logging_steps=1, save_strategy="steps", save_steps=50,
    save_total_limit=2, dataloader_num_workers=0,
)
# Rough SFT tokens/s of SmolLM2-135M on 2 CPU cores (bench/train.py), scaled by model size for others.
TOKENS_PER_S = {"full": 20.0, "lora": 15.0}
REF_PARAMS = 135e6


@dataclass
class TrainConfig(Config):
    """What every trainer's config has (each adds its data and own settings); `trainer:` goes to TRL."""

    model: str = setting("embedded", "'embedded' (default) or a local HF checkpoint directory")
    out: str = setting("", "output directory: checkpoint, train_log.jsonl, loss.png; re-running resumes")
    lora: bool | dict[str, Any] = setting(False, "true, or a dict passed to peft.LoraConfig", flag={
        "--lora": (True, "train a LoRA adapter, then merge it"), "--full": (False, "full fine-tuning (default)")})
    merge: bool = setting(True, "LoRA: also save merged weights, so `--model OUT` works in every backend", cli=False)
    seed: int = seed_setting("data order, sampling and initialisation")
    trainer: dict[str, Any] = setting({}, "passed through to TRL's config class (keys checked against its fields)")
    report_to: str = setting("none", "also log the training curves to: none (default), tensorboard (in "
                             "OUT/checkpoints/runs), wandb, trackio, or all (every one installed)",
                             choices=tuple(REPORT_TO), result=False)
    REQUIRED = ("data", "out")

    @property
    def mode(self) -> str:
        return "lora" if self.lora is not False else "full"


@dataclass
class HubTrainConfig(TrainConfig):
    """A trainer whose one model goes to the Hub with its card (charter.train.hub.finish after saving)."""

    push_to_hub: str | None = setting(None, "also upload the trained model and its card (README.md) to this Hub "
                                      "model repo (ORG/NAME); the token is your `hf auth login` or HF_TOKEN",
                                      result=False)
    private: bool = setting(False, "--push-to-hub: create the repo private", result=False)


def check_trainer_keys(trainer: dict[str, Any], args_cls, where: str, lines: dict[str, int] | None = None) -> None:
    """Reject keys that trl's config class does not have, naming the key's line and a did-you-mean."""
    for key, own in OWN_KEYS.items():
        if key in trainer:
            raise ConfigError(f"{_at(where, key, lines)}: set '{own}' at the top level, not 'trainer.{key}'")
    names = [f.name for f in dataclasses.fields(args_cls) if f.init]
    for key in trainer:
        if key != "__line__" and key not in names:
            hint = difflib.get_close_matches(str(key), names, n=1)
            tip = f" (did you mean '{hint[0]}'?)" if hint else ""
            raise ConfigError(f"{_at(where, key, lines)}: unknown key '{key}'{tip} under 'trainer:', which is passed "
                              f"to trl.{args_cls.__name__}")


def _at(where: str, key: str, lines: dict[str, int] | None) -> str:
    """'file.yaml:LINE' of `trainer: {key: ...}` when the key came from a YAML file."""
    line = (lines or {}).get(key)
    return f"{where}:{line}" if line else where


def trainer_args(args_cls, cfg, defaults: dict[str, Any], progress: bool):
    """trl config from our defaults < the user's `trainer:` dict; bad values become ConfigErrors.
    Checkpoints in cfg.out from another run are refused here, before the model loads (check_resume)."""
    check_trainer_keys(cfg.trainer, args_cls, cfg.where, cfg.lines.get("trainer"))
    check_resume(cfg)
    import torch

    # TRL defaults to bf16, which transformers refuses on CPU unless use_cpu is set. CPU autocast to
    # bf16 only pays on CPUs with native bf16 (AVX512-BF16/AMX); on an AVX2 CPU it ran 5x slower than fp32.
    device = {} if torch.cuda.is_available() else {"use_cpu": True, "bf16": _cpu_has_bf16()}
    values = {**defaults, **device, **{k: _yaml_number(v) for k, v in strip_lines(cfg.trainer).items()}}
    values.update(output_dir=str(Path(cfg.out) / CHECKPOINTS), seed=cfg.seed, report_to=report_to(cfg.report_to))
    from charter.pipeline.jobrun import progress_enabled

    if not (progress and progress_enabled()):  # --quiet: no bars from datasets' preprocessing or the trainer
        import datasets

        datasets.disable_progress_bars()
        values.setdefault("disable_tqdm", True)
    try:
        return args_cls(**values)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{cfg.where}: trainer settings rejected by trl.{args_cls.__name__}: {exc}") from exc


def report_to(choice: str) -> str:
    """TRL's `report_to` for --report-to; an integration whose package is missing is a ConfigError
    now, not a failure after the model has loaded."""
    import importlib.util

    package = REPORT_TO.get(choice)
    if package and importlib.util.find_spec(package) is None:
        raise ConfigError(f"--report-to {choice} needs the {package} package: pip install {package} "
                          "(or use --report-to none)")
    return choice


_SCIENTIFIC = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)[eE][+-]?\d+$")


def _yaml_number(value: Any) -> Any:
    """YAML 1.1 reads `1e-5` (no dot) as a string, and trl would keep it as one: make it the float meant."""
    return float(value) if isinstance(value, str) and _SCIENTIFIC.match(value.strip()) else value


def _cpu_has_bf16() -> bool:
    import torch

    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def lora_config(lora: bool | dict[str, Any], task_type: str = "CAUSAL_LM"):
    """None for full fine-tuning; else peft.LoraConfig(our defaults < the user's dict).

    task_type SEQ_CLS (preference models) makes peft train and save the new score head too."""
    if lora is False:
        return None
    from peft import LoraConfig

    values: dict[str, Any] = dict(r=16, lora_alpha=32, lora_dropout=0.05, target_modules="all-linear", task_type=task_type)
    if isinstance(lora, dict):
        user = strip_lines(lora)
        check_keys(user, [f.name for f in dataclasses.fields(LoraConfig) if f.init], "lora (-> peft.LoraConfig)")
        values.update(user)
    try:
        return LoraConfig(**values)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"lora settings rejected by peft.LoraConfig: {exc}") from exc


def resolve_model(model: str) -> str:
    from charter.backends.models import resolve_hf_checkpoint

    return resolve_hf_checkpoint(model)


def last_checkpoint(out: str | Path) -> str | None:
    """The newest complete checkpoint in out/checkpoints. The trainer writes trainer_state.json
    last, so a checkpoint without a readable one is a save that was killed: it is removed (every
    resume from it would fail) and the one before it is used."""
    folder = Path(out) / CHECKPOINTS
    found = sorted((int(m.group(1)), p) for p in (folder.iterdir() if folder.is_dir() else ())
                   if (m := re.fullmatch(r"checkpoint-(\d+)", p.name)) and p.is_dir())
    for _, path in reversed(found):
        if _complete(path):
            return str(path)
        log.warning("warning: %s is incomplete (its save was interrupted); removed, training resumes from the "
                    "checkpoint before it", path)
        shutil.rmtree(path, ignore_errors=True)
    return None


def _complete(checkpoint: Path) -> bool:
    try:
        return isinstance(json.loads((checkpoint / "trainer_state.json").read_text(encoding="utf-8")), dict)
    except (OSError, ValueError):
        return False


RUN = "charter-run.json"  # in out/checkpoints: the settings and inputs its checkpoints were made from
# trainer keys a resume may change: how long to go on, how often to save and log, not what is learnt
CONTINUE_KEYS = ("max_steps", "num_train_epochs", "save_steps", "save_total_limit", "logging_steps",
                 "disable_tqdm", "report_to", "dataloader_num_workers")


def run_stamp(cfg: TrainConfig) -> dict[str, Any]:
    """What a resume must not change: the result settings (credentials masked: this is written
    to disk) and the content of the input files."""
    from charter.redact import redact

    settings = {k: v for k, v in strip_lines(cfg.to_dict()).items() if k not in cfg.NON_RESULT_KEYS and k != "out"}
    settings["trainer"] = {k: v for k, v in settings.get("trainer", {}).items() if k not in CONTINUE_KEYS}
    inputs = {}
    for name, value in settings.items():
        for v in value if isinstance(value, list) else [value]:
            path = Path(v) if isinstance(v, str) and v and name != "model" else None
            path = path / "records.jsonl" if path and (path / "records.jsonl").is_file() else path  # a run
            if path and path.is_file():
                inputs[f"{name}: {v}"] = _digest(path)
    return {"settings": redact(json.loads(json.dumps(settings, default=str))), "inputs": inputs}


def _digest(path: Path) -> str:
    h = hashlib.blake2b(digest_size=16)
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def check_resume(cfg: TrainConfig) -> None:
    """Before any model loads: refuse checkpoints in cfg.out made with other settings or data (as
    `generate` refuses a changed run), else record this run's stamp beside them."""
    from charter.jsonl import write_json

    if Path(cfg.out).exists() and not Path(cfg.out).is_dir():
        raise ConfigError(f"--out {cfg.out} is a file; training writes a directory (model, checkpoints, log): "
                          "choose a new directory name")
    folder, stamp = Path(cfg.out) / CHECKPOINTS, run_stamp(cfg)
    try:
        old = json.loads((folder / RUN).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        old = None
    if last_checkpoint(cfg.out) is None:
        pass  # a fresh start: this run's stamp replaces any other
    elif not isinstance(old, dict):
        log.warning("warning: the checkpoints in %s do not record what they were made from; resuming unchecked", folder)
        return
    elif changes := _changes(old, stamp):
        raise RunError(f"{cfg.out} holds checkpoints of a training run made with other settings or data "
                       f"({'; '.join(changes)}); use a new --out, restore them, or remove {folder} to start over")
    write_json(folder / RUN, stamp)


def _changes(old: dict, new: dict) -> list[str]:
    was, now = old.get("settings") or {}, new["settings"]
    keys = sorted((set(was) | set(now)) - {"trainer"})
    changes = [f"{k}: {json.dumps(was.get(k))} -> {json.dumps(now.get(k))}" for k in keys if was.get(k) != now.get(k)]
    trainer_was, trainer_now = was.get("trainer") or {}, now["trainer"]
    changes += [f"trainer.{k}: {json.dumps(trainer_was.get(k))} -> {json.dumps(trainer_now.get(k))}"
                for k in sorted(set(trainer_was) | set(trainer_now)) if trainer_was.get(k) != trainer_now.get(k)]
    inputs_was = old.get("inputs") or {}
    changes += [f"{name.split(':')[0]} content changed" for name, d in new["inputs"].items()
                if name in inputs_was and inputs_was[name] != d]
    return changes


def estimate(trainer, row_tokens: list[int], mode: str) -> str:
    """Steps and rough time from the tokenized rows and a calibrated rate (see TOKENS_PER_S)."""
    args, n_rows = trainer.args, len(row_tokens)
    per_step = args.per_device_train_batch_size * args.gradient_accumulation_steps
    steps = args.max_steps if args.max_steps > 0 else math.ceil(n_rows / per_step) * math.ceil(args.num_train_epochs)
    tokens = sum(row_tokens) / max(n_rows, 1) * min(per_step, n_rows) * steps
    params = sum(p.numel() for p in trainer.model.parameters())
    secs = tokens / (TOKENS_PER_S[mode] * REF_PARAMS / max(params, 1))
    return (f"{n_rows} rows, {steps} steps of {per_step} rows, ~{int(tokens)} tokens; rough time on 2 CPU cores: "
            f"{_human(secs)} ({mode}, calibrated on SmolLM2-135M on a busy box)")


def _human(secs: float) -> str:
    return f"{secs / 3600:.1f} h" if secs > 5400 else f"{secs / 60:.0f} min" if secs > 90 else f"{secs:.0f} s"


def run_trainer(trainer, out: str | Path) -> None:
    """Train, resuming from the newest checkpoint in `out` if there is one."""
    if trainer.args.disable_tqdm:  # --quiet: transformers then prints each log dict instead of a bar
        from transformers.trainer_callback import PrinterCallback

        trainer.remove_callback(PrinterCallback)
    resume = last_checkpoint(out)
    if resume:
        log.info("resuming from %s", resume)
    trainer.train(resume_from_checkpoint=resume)


def prune_checkpoints(out: str | Path) -> None:
    """Once a run has finished and saved, drop out/checkpoints: only a resume needs them, and the
    optimizer state makes them ~3x the model (1.6 GB beside SmolLM2-135M's 0.5 GB)."""
    folder = Path(out) / CHECKPOINTS
    if folder.is_dir():
        size = sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())
        shutil.rmtree(folder, ignore_errors=True)
        log.info("removed the resume checkpoints in %s (%.1f GB); the model is saved in %s", folder, size / 1e9, out)


def save(trainer, out: str | Path, merge: bool = True) -> Path:
    """A plain HF checkpoint in `out` (LoRA: adapter in out/adapter, merged weights in out), plus the log."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    model = trainer.model
    if hasattr(model, "peft_config"):
        model.save_pretrained(out / ADAPTER)
        trainer.processing_class.save_pretrained(out / ADAPTER)
        model = model.merge_and_unload() if merge else None
    if model is not None:
        model.config.use_cache = True  # training turns the KV cache off; generation wants it on
        model.save_pretrained(out)
        trainer.processing_class.save_pretrained(out)
    write_log(trainer.state.log_history, out)
    return out


def write_log(history: list[dict[str, Any]], out: Path) -> None:
    from charter import plotting
    from charter.jsonl import write_jsonl

    write_jsonl(out / LOG, history)
    points = [(r["step"], r["loss"]) for r in history if "loss" in r and "step" in r]
    made = plotting.subplots(figsize=(6, 3.5)) if points else None
    if made is None:  # the JSONL log is the record; the plot is a convenience
        return
    fig, ax = made
    ax.plot(*zip(*points), marker="." if len(points) < 50 else None)
    ax.set(xlabel="step", ylabel="training loss", title=out.name)
    fig.tight_layout()
    plotting.save(fig, out / PLOT, dpi=100)


def load_error(model: str, exc: Exception) -> BackendError:
    return BackendError(f"could not load model '{model}' for training: {exc}. Pass a local checkpoint directory "
                        "or --model embedded (hub downloads need network)")
