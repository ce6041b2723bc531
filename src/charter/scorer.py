"""A trained preference model as a scorer: conversations in, one scalar each out.

The text is built exactly as trl's RewardTrainer built it in training (the tokenizer's chat
template over the whole conversation, no generation prompt), so scores mean the same thing here,
in `charter eval --pm`, in `eval-labeler --pm` and as the RL reward.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

from charter.errors import BackendError
from charter.types import Message


class PMScorer:
    def __init__(self, path: str, batch_size: int = 8, max_length: int = 2048):
        import torch
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        self.path, self.batch_size, self.max_length = path, batch_size, max_length
        self.tok = AutoTokenizer.from_pretrained(path)
        self.tok.pad_token = self.tok.pad_token or self.tok.eos_token
        self.model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=1, dtype=torch.float32)
        self.model.config.pad_token_id = self.tok.pad_token_id
        self.model.eval()

    def score(self, conversations: Sequence[Sequence[Message]]) -> list[float]:
        """The PM's reward for each whole conversation (prompt turns + the answer being judged)."""
        import torch

        out: list[float] = []
        for b in range(0, len(conversations), self.batch_size):  # tokenised a batch at a time: memory stays flat
            chunk = [self.tok.apply_chat_template(list(c), tokenize=True, return_dict=True)["input_ids"][-self.max_length:]
                     for c in conversations[b:b + self.batch_size]]
            width = max(len(x) for x in chunk)
            pad = self.tok.pad_token_id
            input_ids = torch.tensor([x + [pad] * (width - len(x)) for x in chunk])
            mask = torch.tensor([[1] * len(x) + [0] * (width - len(x)) for x in chunk])
            with torch.inference_mode():
                logits = self.model(input_ids=input_ids, attention_mask=mask).logits
            out += logits[:, 0].float().tolist()
        return out

    def close(self) -> None:
        self.model = None


def load_pm(path: str | Path, batch_size: int = 8) -> PMScorer:
    p = Path(path)
    if not (p / "config.json").is_file():
        raise BackendError(f"{path} is not a preference model directory (no config.json); "
                           "train one with `charter train pm --data LABELS --out DIR`")
    try:
        return PMScorer(str(p), batch_size)
    except (OSError, ValueError) as exc:
        raise BackendError(f"could not load the preference model at {path}: {exc}") from exc
