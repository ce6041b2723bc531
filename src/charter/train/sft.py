"""`charter train sft`: SL-CAI supervised fine-tuning, a thin wrapper over trl.SFTTrainer.

Loss on the final assistant answer only: SmolLM2's chat template (like most) has no
`{% generation %}` markers, so `assistant_only_loss` cannot work; instead each `messages` row
becomes a conversational prompt/completion pair (prompt = every message but the last, completion =
the last assistant message) and TRL's `completion_only_loss` masks the prompt's labels with -100.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from charter.config import setting
from charter.errors import ConfigError
from charter.train import common, hub
from charter.inputs.rows import read_rows, sft_row, to_dataset, to_prompt_completion

# The paper's recipe (§3.1): one epoch at a constant learning rate. Sizes keep a small run to minutes on 2 cores.
TRAINER_DEFAULTS = common.TRAINER_DEFAULTS  # SFT adds nothing to the shared shape
LR = {"full": 2e-5, "lora": 1e-4}  # unless trainer.learning_rate is set


@dataclass
class SFTConfig(common.HubTrainConfig):
    """Everything that defines a `charter train sft` run (configs/train/sft.yaml); `trainer:` -> trl.SFTConfig."""

    data: str = setting("", "run directory made by `charter generate`, or an exported SFT file with a 'messages' "
                        "column (.jsonl/.parquet)")
    revision: str = setting("final", "final revision, or every round's (SL-CAI-n)", choices=("final", "all"))
    upto: int | None = setting(None, "use rounds 1..N only", bounds=">= 1")
    helpful_ratio: float | None = setting(None, "share of helpfulness rows in the mix (default: all)", bounds="[0, 1)")
    # A run is read as `charter export --format sft` reads it (same cleaning, filters, guard drop).
    clean_patterns: str = setting("default", "run --data: boilerplate removed from answers and revisions, as "
                                  "`charter export` does: 'default', 'none', or a YAML file listing regexes")
    filter: list[str] = setting([], "run --data: drop rounds, as `charter export --filter`: empty, unchanged, "
                                "request-copy, or all", cli={"nargs": "+", "metavar": "FILTER"})

    def export_config(self):
        """The `charter export --format sft` settings whose rows this run trains on."""
        from charter.export import ExportConfig

        return ExportConfig(run=self.data, format="sft", out="sft.jsonl", revision=self.revision, upto=self.upto,
                            helpful_ratio=self.helpful_ratio, seed=self.seed, clean_patterns=self.clean_patterns,
                            filter=list(self.filter))


def load_sft_config(path: str | None = None, **overrides: Any) -> SFTConfig:
    return SFTConfig.load(path, overrides)


def sft_dataset(cfg: SFTConfig):
    """prompt/completion conversational rows from a run directory or a file with `messages`."""
    import datasets

    path = Path(cfg.data)
    if path.is_dir() or path.name == "records.jsonl":
        return datasets.Dataset.from_list([to_prompt_completion(r["messages"]) for r in run_rows(cfg)])
    if cfg.revision != "final" or cfg.upto or cfg.helpful_ratio is not None or cfg.filter \
            or cfg.clean_patterns != "default":
        raise ConfigError("revision / upto / helpful_ratio / filter / clean_patterns select rows from a run "
                          "directory; pass the run directory as --data, or export the mix you want with "
                          "`charter export`")
    rows = read_rows(cfg.data, ("messages",), (("prompt", "completion"),))
    return to_dataset([sft_row(row, where) for where, row in rows], cfg.data)


def run_rows(cfg: SFTConfig) -> list[dict[str, Any]]:
    """A run's SFT rows: exactly the rows `charter export --format sft` writes with the same settings."""
    from charter.export import export_rows

    return export_rows(cfg.export_config())


def build_sft_trainer(cfg: SFTConfig, progress: bool = True):
    """The configured trl.SFTTrainer (dataset tokenized, labels masked), not yet trained."""
    cfg.validate()  # a config built in Python has not been checked yet
    dataset = sft_dataset(cfg)  # bad rows are reported before the heavy imports
    from trl import SFTConfig as TRLSFTConfig, SFTTrainer

    defaults = {**TRAINER_DEFAULTS, "learning_rate": LR[cfg.mode]}
    args = common.trainer_args(TRLSFTConfig, cfg, defaults, progress)
    model = common.resolve_model(cfg.model)
    try:
        return SFTTrainer(model=model, args=args, train_dataset=dataset, peft_config=common.lora_config(cfg.lora))
    except OSError as exc:
        raise common.load_error(cfg.model, exc) from exc


def train_sft(cfg: SFTConfig, progress: bool = True) -> Path:
    """Train, then save a loadable checkpoint (merged if LoRA) and the loss log into cfg.out."""
    trainer = build_sft_trainer(cfg, progress)
    tokens = [len(x) for x in trainer.train_dataset["input_ids"]]
    common.log.info("charter train sft: %s", common.estimate(trainer, tokens, cfg.mode))
    common.run_trainer(trainer, cfg.out)
    out = common.save(trainer, cfg.out, cfg.merge)
    common.prune_checkpoints(out)
    hub.finish(cfg, out, "sft")  # the model card, and the upload if --push-to-hub
    return out
