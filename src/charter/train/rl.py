"""`charter train rl`: RL-CAI, the policy trained against the preference model's score (trl.RLOOTrainer).

The paper runs PPO with a KL penalty to the starting policy. RLOO is TRL's lighter equivalent that
keeps the paper's shape: the KL penalty (beta x summed log-ratio to the frozen starting policy) is
subtracted from the PM reward, and each prompt's other samples are its baseline (no value model).
The PM directory goes to TRL as the reward model, and TRL scores prompt + completion with the PM's
own chat template, as the PM was trained. Prompts come from Charter's prompt sources, red-team and
helpfulness mixed at `helpful_ratio`. Generation settings are explicit top-level keys, never
TRL's defaults. Output: a plain checkpoint (LoRA merged), train_log.jsonl (reward, kl,
completion length per step) and rl.png.

`reward: feedback` (d-RLAIF) replaces the PM with the feedback model's own answer to `label`'s
question, a plain reward function over any Charter backend (charter.rlcai.reward).
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from charter.config import FORMATS, backend_setting, max_tokens_setting, setting, temperature_setting, top_p_setting
from charter.errors import ConfigError, InputError
from charter.jsonl import write_jsonl
from charter.train import common, hub

TRAINER_DEFAULTS: dict[str, Any] = {
    "num_train_epochs": 1, "lr_scheduler_type": "constant", "warmup_steps": 0, "per_device_train_batch_size": 8,
    "gradient_accumulation_steps": 1, "logging_steps": 1, "save_strategy": "steps", "save_steps": 50,
    "save_total_limit": 2, "dataloader_num_workers": 0, "gradient_checkpointing": False,
}
LR = {"full": 1e-6, "lora": 1e-5}  # TRL's RLOO default; LoRA updates need a larger step
# Top-level settings that land in trl.RLOOConfig under TRL's names (one place for each value).
GENERATION_KEYS = {"samples": "num_generations", "max_tokens": "max_completion_length", "temperature": "temperature",
                   "top_p": "top_p", "beta": "beta"}
PLOT = "rl.png"
CURVES = (("reward", "PM reward"), ("kl", "KL to the start"), ("completions/mean_length", "completion tokens"))
REWARDS = ("pm", "feedback")
REFERENCES = "feedback_references.jsonl"  # --reward feedback: each prompt's reference answer and principle


@dataclass
class RLConfig(common.HubTrainConfig):
    """Everything that defines a `charter train rl` run (configs/train/rl.yaml); `trainer:` -> trl.RLOOConfig."""

    model: str = setting("embedded", "starting policy: the SL-CAI checkpoint, a local HF checkpoint, or 'embedded' "
                         "(default)")
    reward: str = setting("pm", "pm (default): the preference model at --pm; feedback: the feedback model's "
                          "P(completion better than the starting policy's answer) under a principle (d-RLAIF)",
                          choices=REWARDS)
    pm: str = setting("", "preference model directory from `charter train pm` (the reward)")
    feedback_model: str | None = setting(None, "--reward feedback: the model that judges (default: the starting "
                                         "policy, frozen), or BACKEND:MODEL")
    feedback_backend: str = backend_setting("of --reward feedback's model (openai for a server on other hardware)")
    feedback_options: dict[str, Any] = setting({}, "--reward feedback: passed to its backend's constructor "
                                               "(e.g. {base_url: ...})", result=False)
    principles: str = setting("default", "--reward feedback: feedback principles (as for `label`)")
    few_shot: str = setting("default", "--reward feedback: feedback examples (as for `label`), or 'none'")
    format: str = setting("chat", "--reward feedback: how the feedback model is asked (as for `label`)",
                          choices=FORMATS)
    prompts: str = setting("default", "red-team prompts: file, 'default', advbench, harmbench, do-not-answer, "
                           "hf:ORG/NAME")
    helpful_prompts: str = setting("default", "helpfulness prompts (same sources), or 'none'")
    helpful_ratio: float = setting(0.5, "share of helpfulness prompts in the mix (default 0.5)", bounds="[0, 1)")
    prompt_field: str | None = setting(None, "column holding the prompt (default: auto-detect)")
    limit: int | None = setting(None, "use at most N prompts from each set", bounds=">= 1")
    samples: int = setting(4, "completions per prompt, the leave-one-out group (default 4; each sample's baseline "
                           "is the others' mean)", bounds=">= 2")
    max_tokens: int = max_tokens_setting(64, "completion")
    temperature: float = temperature_setting(1.0)  # > 0: check()
    top_p: float = top_p_setting(1.0)
    beta: float = setting(0.05, "KL penalty to the starting policy, in the reward (default 0.05)", bounds=">= 0")
    REQUIRED = ("out",)

    def check(self, where: str) -> None:
        from charter.backends import check_backend_name

        for ours, theirs in GENERATION_KEYS.items():
            if theirs in self.trainer:
                raise ConfigError(f"{where}: set '{ours}' at the top level, not 'trainer.{theirs}'")
        if self.reward == "pm" and not self.pm:
            raise ConfigError(f"{where}: 'pm' is required (pass --pm or set it in the config file), "
                              "or use --reward feedback")
        if self.temperature == 0:
            raise ConfigError(f"{where}: temperature must be > 0 for RL: greedy samples of a prompt are identical, "
                              "so RLOO has nothing to compare; use e.g. 1.0")
        if self.reward == "feedback" and self.pm:
            raise ConfigError(f"{where}: --pm is the reward of --reward pm; drop it for --reward feedback")
        check_backend_name(self.feedback_backend)


def load_rl_config(path: str | None = None, **overrides: Any) -> RLConfig:
    return RLConfig.load(path, overrides)


def rl_prompts(cfg: RLConfig) -> list[list[dict[str, str]]]:
    """Red-team prompts plus enough helpfulness prompts for their share of the mix (seeded), shuffled."""
    from charter.inputs.prompts import load_prompts

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


def reward_function(cfg: RLConfig, prompts: list[list[dict[str, str]]], progress: bool = True):
    """What TRL calls the reward: the PM directory (TRL loads it) or the feedback reward (a callable)."""
    if cfg.reward == "feedback":
        from charter.rlcai.reward import build_feedback_reward

        return build_feedback_reward(cfg, prompts, progress)
    from charter.scorer import load_pm

    load_pm(cfg.pm).close()  # a clear error for a wrong --pm before the policy loads
    return str(Path(cfg.pm).resolve())


def build_rl_trainer(cfg: RLConfig, progress: bool = True):
    """The configured trl.RLOOTrainer (policy, frozen reference, reward), not yet trained."""
    import warnings

    import datasets

    cfg.validate()  # a config built in Python has not been checked yet

    # TRL warns about the installed vLLM version at import even when generation does not use vLLM.
    warnings.filterwarnings("ignore", message="TRL currently supports vLLM")
    from charter.backends.engine_site.sitecustomize import quiet_notices

    with quiet_notices():  # RLOO's module imports vLLM, whose import-time notices say nothing here
        from trl import RLOOConfig, RLOOTrainer

    defaults = {**TRAINER_DEFAULTS, "learning_rate": LR[cfg.mode]}
    defaults.update({theirs: getattr(cfg, ours) for ours, theirs in GENERATION_KEYS.items()})
    args = common.trainer_args(RLOOConfig, cfg, defaults, progress)
    prompts = rl_prompts(cfg)
    check_one_batch(cfg, args, len(prompts))  # before any model loads
    reward = reward_function(cfg, prompts, progress)
    try:
        return RLOOTrainer(model=common.resolve_model(cfg.model), reward_funcs=reward, args=args,
                           train_dataset=datasets.Dataset.from_list([{"prompt": p} for p in prompts]),
                           peft_config=common.lora_config(cfg.lora))
    except BaseException as exc:
        close_reward(reward)
        if isinstance(exc, OSError):
            raise common.load_error(cfg.model, exc) from exc
        raise


def check_one_batch(cfg: RLConfig, args: Any, prompts: int) -> None:
    """RLOO samples whole batches of distinct prompts: with fewer prompts than one batch, TRL runs
    0 steps (and saves the starting policy as if trained) or fails with an unrelated message."""
    per_batch = args.generation_batch_size // args.num_generations
    if prompts < per_batch:
        raise ConfigError(
            f"{cfg.where}: {prompts} prompt{'s' if prompts != 1 else ''} is fewer than one RL batch of {per_batch} "
            f"({args.generation_batch_size} completions = {per_batch} prompts x {cfg.samples} samples), so no step "
            "would run; add prompts (--prompts, --helpful-prompts, a larger --limit), or lower "
            "trainer.per_device_train_batch_size or --samples")


def close_reward(reward: Any) -> None:
    """The feedback backend is Charter's to close (TRL only calls it)."""
    if hasattr(reward, "close"):
        reward.close()


def train_rl(cfg: RLConfig, progress: bool = True) -> dict[str, Any]:
    trainer = build_rl_trainer(cfg, progress)
    args = trainer.args
    steps = args.max_steps if args.max_steps > 0 else len(trainer.train_dataset) * cfg.samples // args.per_device_train_batch_size
    common.log.info("charter train rl: %d prompts, %d steps of %d completions (%d prompts x %d samples), lr %g",
                    len(trainer.train_dataset), steps, args.per_device_train_batch_size,
                    args.per_device_train_batch_size // cfg.samples, cfg.samples, args.learning_rate)
    reward = trainer.reward_funcs[0]
    try:
        if hasattr(reward, "reference_rows"):
            write_jsonl(Path(cfg.out) / REFERENCES, reward.reference_rows(trainer.train_dataset["prompt"]))
        common.run_trainer(trainer, cfg.out)
    finally:
        close_reward(reward)
    out = common.save(trainer, cfg.out, cfg.merge)
    steps_log = step_log(trainer.state.log_history)
    plot_rl(steps_log, out / PLOT, reward_title(cfg.reward))
    common.prune_checkpoints(out)
    hub.finish(cfg, out, "rl")  # the model card, and the upload if --push-to-hub
    return {"out": str(out), "steps": steps_log, "reward": cfg.reward}


def reward_title(reward: str) -> str:
    return "feedback reward" if reward == "feedback" else "PM reward"


def step_log(history: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The per-step rows of the trainer's log that carry the reward."""
    keys = ["step", "loss"] + [k for k, _ in CURVES]
    return [{k: r[k] for k in keys if k in r} for r in history if "reward" in r]


def plot_rl(rows: list[dict[str, Any]], path: Path, reward: str = "PM reward") -> Path | None:
    """Reward, KL and completion length against the step, side by side."""
    from charter import plotting

    made = plotting.subplots(1, len(CURVES), figsize=(4 * len(CURVES), 3)) if rows else None
    if made is None:  # train_log.jsonl is the record; the plot is a convenience
        return None
    fig, axes = made
    for ax, (key, title) in zip(axes, CURVES):
        pts = [(r["step"], r[key]) for r in rows if key in r]
        if pts:
            ax.plot(*zip(*pts), marker="." if len(pts) < 50 else None)
        ax.set(xlabel="step", title=reward if key == "reward" else title)
    fig.tight_layout()
    return plotting.save(fig, path, dpi=100)


def summary_line(result: dict[str, Any]) -> str:
    rows = result["steps"]
    if not rows:
        return f"saved {result['out']}"
    first, last = rows[0], rows[-1]
    kl = f", KL {last['kl']:.4f}" if "kl" in last else ""
    length = last.get("completions/mean_length")
    return (f"saved {result['out']}: {len(rows)} steps, {reward_title(result.get('reward', 'pm'))} "
            f"{first['reward']:+.3f} (step 1) -> "
            f"{last['reward']:+.3f} (step {last['step']}){kl}"
            + (f", mean completion {length:.0f} tokens" if length is not None else ""))
