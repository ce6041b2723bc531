"""A trained model's card (OUT/README.md) and its upload to the Hub (`--push-to-hub ORG/NAME`).

The card says what a reader needs to trust and use the model: the base model, the data, the
settings, the Charter version, and how to load it. The upload is huggingface_hub's own
(HfApi.upload_folder); its token comes from the user's login or HF_TOKEN, read by huggingface_hub,
never by Charter, and never written anywhere.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from charter.errors import RunError

log = logging.getLogger("charter.train")

CARD = "README.md"
EMBEDDED_REPO = "HuggingFaceTB/SmolLM2-135M-Instruct"  # what the embedded model is, on the Hub
DATA_KEYS = ("data", "prompts", "helpful_prompts", "pm", "mix")  # the settings that name training inputs
PIPELINE = {"pm": "text-classification", "classifier": "text-classification"}  # others: text-generation
SKIP = ("checkpoints/**", "checkpoints/*")  # pruned after a finished run; never uploaded


def base_model(model: str) -> str | None:
    """A Hub id for the card's `base_model`: the embedded model's, a repo id, or None for a local path."""
    if model == "embedded":
        return EMBEDDED_REPO
    return model if model.count("/") == 1 and not Path(model).exists() else None


def card_text(cfg: Any, command: str, repo: str | None = None) -> str:
    """The model card: YAML header (base_model, library, tags) and what, on what, how, and how to load."""
    import charter
    from charter.config import strip_lines
    from charter.redact import redact

    settings = redact(json.loads(json.dumps(strip_lines(cfg.to_dict()), default=str)))
    settings = {k: v for k, v in settings.items() if k not in ("out", "push_to_hub", "private")}
    base = base_model(cfg.model)
    header = [f"base_model: {base}"] if base else []
    header += ["library_name: transformers", f"pipeline_tag: {PIPELINE.get(command, 'text-generation')}",
               "tags:", "- charter", "- constitutional-ai", f"- {command}"]
    data = "\n".join(f"- {k}: `{settings[k]}`" for k in DATA_KEYS if settings.get(k)) or "- (see the settings)"
    loader = "AutoModelForSequenceClassification" if command in PIPELINE else "AutoModelForCausalLM"
    where = repo or "PATH/TO/THIS/FOLDER"
    return "\n".join([
        "---", *header, "---", "", f"# {repo or 'Charter model'}", "",
        f"Trained with `charter train {command}` (Charter {charter.__version__}), Constitutional AI "
        f"(Bai et al. 2022), from `{base or cfg.model}`.", "",
        "## Training data", "", data, "",
        "## Settings", "", "```json", json.dumps(settings, indent=2, sort_keys=True), "```", "",
        "## How to load", "", "```python", f"from transformers import AutoTokenizer, {loader}", "",
        f'model = {loader}.from_pretrained("{where}")', f'tokenizer = AutoTokenizer.from_pretrained("{where}")',
        "```", "", "The training log is `train_log.jsonl` in this repo.", ""])


def finish(cfg: Any, out: str | Path, command: str) -> Path:
    """Write the model card into `out`, then upload `out` if --push-to-hub was given."""
    out = Path(out)
    (out / CARD).write_text(card_text(cfg, command, cfg.push_to_hub), encoding="utf-8")
    if cfg.push_to_hub:
        push(out, cfg.push_to_hub, cfg.private, command)
    return out


def push(out: Path, repo: str, private: bool, command: str) -> None:
    """`out` (model, tokenizer, card, log) to the Hub model repo `repo`; any failure is a RunError."""
    from huggingface_hub import HfApi

    try:
        api = HfApi()
        api.create_repo(repo, repo_type="model", private=private, exist_ok=True)
        api.upload_folder(folder_path=str(out), repo_id=repo, repo_type="model", ignore_patterns=list(SKIP),
                          commit_message=f"Model from charter train {command}")
    except Exception as exc:  # network, auth, repo name: all end the same way for the user
        why = (str(exc).strip().splitlines() or [""])[0][:200]
        raise RunError(f"--push-to-hub {repo} failed ({type(exc).__name__}: {why}); the model is saved in {out}. "
                       "Log in (`hf auth login` or HF_TOKEN), check the repo name (ORG/NAME) and the network, "
                       f"then upload the folder with `hf upload {repo} {out}`") from exc
    log.info("pushed %s to https://huggingface.co/%s", out, repo)
