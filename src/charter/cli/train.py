"""`charter train sft|dpo|pm|rl`: flags override the YAML config. Imports nothing heavy at module level."""
from __future__ import annotations

import argparse
import sys

from charter.classifier.train import ClassifierTrainConfig
from charter.cli.common import add_config, add_settings, given
from charter.train.dpo import DPOConfig
from charter.train.pm import PMConfig
from charter.train.rl import RLConfig
from charter.train.sft import SFTConfig

def _sft(cfg: SFTConfig, progress: bool) -> str:
    from charter.train.sft import train_sft

    return f"saved {train_sft(cfg, progress=progress)}"


def _dpo(cfg: DPOConfig, progress: bool) -> str:
    from charter.train.dpo import train_dpo

    return f"saved {train_dpo(cfg, progress=progress)}"


def _pm(cfg: PMConfig, progress: bool) -> str:
    from charter.train.pm import summary_line, train_pm

    return summary_line(train_pm(cfg, progress=progress))


def _rl(cfg: RLConfig, progress: bool) -> str:
    from charter.train.rl import summary_line, train_rl

    return summary_line(train_rl(cfg, progress=progress))


def _classifier(cfg: ClassifierTrainConfig, progress: bool) -> str:
    from charter.classifier.train import summary_line, train_classifier

    return summary_line(train_classifier(cfg, progress=progress))


COMMANDS = {  # name: (config, trainer call -> summary line, help)
    "sft": (SFTConfig, _sft, "supervised fine-tuning on revisions + helpful answers (trl.SFTTrainer)"),
    "dpo": (DPOConfig, _dpo, "DPO on preference pairs (trl.DPOTrainer)"),
    "pm": (PMConfig, _pm, "preference model on soft AI labels (+ mixed-in comparisons), trl.RewardTrainer"),
    "rl": (RLConfig, _rl, "RL-CAI: RLOO against a preference model's score (or the feedback model's, --reward "
           "feedback), KL to the starting policy (trl.RLOOTrainer)"),
    "classifier": (ClassifierTrainConfig, _classifier, "guard classifiers (input, streaming output) on `charter "
                   "classifier` rows; threshold picked for --target-fpr (transformers Trainer)"),
}


def register(sub) -> None:
    train = sub.add_parser("train", help="fine-tune: sft (SL-CAI), dpo, pm (preference model), rl (RL-CAI against a PM), "
                           "classifier (guard classifiers)")
    tsub = train.add_subparsers(dest="train_command", required=True)
    for name, (cls, run, text) in COMMANDS.items():
        p = tsub.add_parser(name, help=text)
        add_config(p, f"train {name} (configs/train/{name}.yaml)")
        add_settings(p, cls)
        p.add_argument("--max-steps", type=int, help="stop after N optimizer steps (default: one epoch)")
        p.add_argument("--quiet", action="store_true", help="no progress bar")
        p.set_defaults(func=cmd_train, config_class=cls, run=run)


def cmd_train(a: argparse.Namespace) -> int:
    """defaults < --config file < flags (--max-steps lands in `trainer:`), then train and print the summary."""
    cfg = a.config_class.load(a.config, {**given(a, a.config_class), "trainer": {"max_steps": a.max_steps}})
    print(f"charter train {a.train_command}: {start_line(cfg)}", file=sys.stderr)
    print(a.run(cfg, not a.quiet))
    return 0


def start_line(cfg) -> str:
    if isinstance(cfg, RLConfig):
        reward = f"pm={cfg.pm}" if cfg.reward == "pm" else f"reward=feedback feedback_model={cfg.feedback_model or cfg.model}"
        return (f"policy={cfg.model} {reward} samples={cfg.samples} max_tokens={cfg.max_tokens} "
                f"temperature={cfg.temperature} top_p={cfg.top_p} beta={cfg.beta} -> {cfg.out}")
    mix = f" mix={cfg.mix or 'none'}" if isinstance(cfg, PMConfig) else ""
    return f"model={cfg.model} data={cfg.data}{mix} lora={bool(cfg.lora)} -> {cfg.out}"
