"""A trained guard classifier (Constitutional Classifiers, arXiv 2501.18837): texts in, P(harmful) out.

The classifier is a sequence-classification head (2 labels: harmless, harmful) on a causal LM
backbone, saved as a plain transformers checkpoint whose config carries `charter_guard`
({"kind", "threshold", "target_fpr"}), so `transformers.pipeline("text-classification")` loads it too.

What the classifier reads is fixed here, once, for training and guarding alike:

* input:  the prompt rendered with the tokenizer's chat template and the generation prompt
          (it ends where the assistant would start);
* output: that same text followed by the answer's text, without the end-of-turn tokens, so every
          token prefix of an answer being written is a text of the same shape.

A causal backbone sees only the tokens before each position, so one forward pass over prompt +
answer gives the head's logits at every answer token: the score of every prefix, the streaming
output classifier's signal, for the cost of one pass (`stream_scores`).
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Sequence

from charter.errors import BackendError

log = logging.getLogger("charter.classifier")

GUARD_KEY = "charter_guard"  # the model config's key for kind / threshold / target_fpr
KINDS = ("input", "output")
ID2LABEL = {0: "harmless", 1: "harmful"}
Messages = Sequence[dict[str, Any]]


def render(tok, messages: Messages, answer: str | None = None) -> str:
    """The text a classifier reads: the prompt turns through the chat template with the generation
    prompt, then the answer (if any) as plain text. A conversation that ends with an assistant
    turn is read as prompt + that answer."""
    messages = list(messages)
    if answer is None and messages and messages[-1].get("role") == "assistant":
        messages, answer = messages[:-1], str(messages[-1].get("content") or "")
    prompt = tok.apply_chat_template([dict(m) for m in messages], tokenize=False, add_generation_prompt=True)
    return prompt + (answer or "")


class GuardClassifier:
    """One trained classifier (input or output); scores are P(harmful), blocked when >= threshold."""

    def __init__(self, path: str, batch_size: int = 8, max_length: int = 2048, device: str | None = None):
        import torch
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        self.path, self.batch_size, self.max_length = path, batch_size, max_length
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.tok = AutoTokenizer.from_pretrained(path)
        self.tok.pad_token = self.tok.pad_token or self.tok.eos_token
        self.model = AutoModelForSequenceClassification.from_pretrained(path, dtype=torch.float32).to(self.device)
        self.model.eval()
        meta = getattr(self.model.config, GUARD_KEY, None) or {}
        self.kind: str = meta.get("kind", "output")
        self.threshold: float = float(meta.get("threshold", 0.5))
        self.target_fpr: float | None = meta.get("target_fpr")
        self._base = getattr(self.model, self.model.base_model_prefix, None)
        self._head = getattr(self.model, "score", None)
        if self._base is None or self._head is None:
            raise BackendError(f"{path}: {type(self.model).__name__} has no per-token score head; a guard needs a "
                               "causal LM backbone (train one with `charter train classifier`)")

    def render(self, messages: Messages, answer: str | None = None) -> str:
        return render(self.tok, messages, answer)

    def _ids(self, text: str) -> list[int]:
        # rendered text already holds the template's special tokens: add none (no double BOS)
        return self.tok(text, add_special_tokens=False)["input_ids"]

    def _token_logits(self, batch: list[list[int]]):
        """Head logits at every position of right-padded rows: (rows, width, 2)."""
        import torch

        width, pad = max(len(x) for x in batch), self.tok.pad_token_id
        ids = torch.tensor([x + [pad] * (width - len(x)) for x in batch], device=self.device)
        mask = torch.tensor([[1] * len(x) + [0] * (width - len(x)) for x in batch], device=self.device)
        with torch.inference_mode():
            hidden = self._base(input_ids=ids, attention_mask=mask).last_hidden_state
            return self._head(hidden).float()

    def score(self, texts: Sequence[str]) -> list[float]:
        """P(harmful) of each text (rendered as `render` renders; the last max_length tokens are read)."""
        out: list[float] = []
        for b in range(0, len(texts), self.batch_size):  # a batch at a time: memory stays flat
            chunk = [self._ids(t)[-self.max_length:] or [self.tok.pad_token_id] for t in texts[b:b + self.batch_size]]
            logits = self._token_logits(chunk)
            last = [logits[i, len(x) - 1] for i, x in enumerate(chunk)]
            out += [float(v.softmax(-1)[1]) for v in last]
        return out

    def score_messages(self, convs: Sequence[Messages]) -> list[float]:
        """P(harmful) of each conversation: prompt turns (input), or prompt turns + a final assistant answer."""
        return self.score([self.render(c) for c in convs])

    def stream_scores(self, messages: Messages, answer: str) -> list[tuple[int, float]]:
        """(i, P(harmful) after answer tokens 0..i) for every token of `answer`, from one forward pass."""
        prompt = self.render(messages)
        enc = self.tok(prompt + answer, add_special_tokens=False, return_offsets_mapping=True)
        # an answer token is one that ends past the prompt (a token straddling the seam counts as the answer's)
        first = next((i for i, (_, end) in enumerate(enc["offset_mapping"]) if end > len(prompt)), None)
        if first is None:
            return []
        probs = self._token_logits([enc["input_ids"]])[0, first:].softmax(-1)[:, 1]
        return list(enumerate(probs.tolist()))

    def first_block(self, messages: Messages, answer: str) -> int | None:
        """Index of the first answer token whose prefix scores at or over the threshold, else None."""
        return next((i for i, p in self.stream_scores(messages, answer) if p >= self.threshold), None)

    def blocks(self, score: float) -> bool:
        return score >= self.threshold

    def info(self) -> dict[str, Any]:
        """What a run records about the classifier it used."""
        return {"path": self.path, "kind": self.kind, "threshold": self.threshold, "target_fpr": self.target_fpr}

    def close(self) -> None:
        self.model = self._base = self._head = None


def load_guard(path: str | Path, batch_size: int = 8) -> GuardClassifier:
    """A classifier written by `charter train classifier` (a directory with config.json)."""
    p = Path(path)
    if not (p / "config.json").is_file():
        raise BackendError(f"{path} is not a classifier directory (no config.json); train one with "
                           "`charter train classifier --data DIR --kind input|output --out DIR`")
    try:
        return GuardClassifier(str(p), batch_size)
    except (OSError, ValueError) as exc:
        raise BackendError(f"could not load the classifier at {path}: {exc}") from exc


def load_guards(path: str | Path) -> dict[str, GuardClassifier]:
    """{kind: classifier} from DIR/input and DIR/output (what `--kind both` writes), or DIR itself
    when it is one classifier."""
    p = Path(path)
    if (p / "config.json").is_file():
        guard = load_guard(p)
        return {guard.kind: guard}
    found = {kind: load_guard(p / kind) for kind in KINDS if (p / kind / "config.json").is_file()}
    if not found:
        raise BackendError(f"{path} holds no classifier (neither config.json nor input/ or output/); train them with "
                           "`charter train classifier --data DIR --kind both --out DIR`")
    return found
