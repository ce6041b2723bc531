"""In-process transformers backend: the simple, robust fallback engine.

Batched ``generate`` with left padding, seeded sampling, stop strings, and log-prob scoring by
one forward pass. It keeps no serving machinery of its own (no KV reuse across calls, no custom
attention or sampler): speed comes from vLLM (``--backend vllm``); this backend is what runs
wherever torch and transformers do, and what training and scoring share.
"""
from __future__ import annotations

from typing import Sequence

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

from charter.backends.base import HFTokenizerPrompts, TokenIds
from charter.errors import BackendError
from charter.backends.models import resolve_hf_checkpoint
from charter.types import Completion, Message, Sampling, Score

Ids = list[int]


def _pick_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def _pick_dtype(dtype: str, device: torch.device) -> torch.dtype:
    if dtype != "auto":
        return getattr(torch, dtype)
    # fp32 on CPU: bf16 matmuls are slow on most CPUs and change results.
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float32


def _load(model: str, dtype: str, device: str):
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # its "Loading weights" bar would sit inside ours
    path = resolve_hf_checkpoint(model)
    dev = _pick_device(device)
    try:
        tok = AutoTokenizer.from_pretrained(path)
        lm = AutoModelForCausalLM.from_pretrained(path, dtype=_pick_dtype(dtype, dev))
    except (OSError, ValueError) as exc:
        raise BackendError(
            f"could not load model '{model}': {exc}. It was not found locally and hub downloads "
            "need network; pass a local path or --model embedded"
        ) from exc
    except MemoryError as exc:  # ulimit -v or a small machine: not a traceback
        why = f" ({exc})" if str(exc) else ""
        raise BackendError(f"out of memory loading model '{model}'{why}: a memory limit (ulimit -v, a "
                           "container's) or too little RAM; raise the limit, free memory, or use a smaller "
                           "model") from exc
    return tok, lm.to(dev).eval()


class HFBackend(HFTokenizerPrompts):
    name = "transformers"

    def __init__(self, model: str, dtype: str = "auto", device: str = "auto", batch_size: int = 16,
                 threads: int | None = None):
        super().__init__()
        if threads:
            torch.set_num_threads(threads)
        self.model_id = model
        self.batch_size = max(1, batch_size)
        self.tokenizer, self.model = _load(model, dtype, device)
        self.pad_id = self._pad_id()
        self.eos_ids = self._eos_ids()
        self.ends = set(self.eos_ids) | {self.pad_id}  # generate pads a row after it ends
        self.max_context = int(getattr(self.model.config, "max_position_embeddings", 0) or 0) or None

    def _pad_id(self) -> int:
        tok = self.tokenizer
        pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
        return 0 if pad is None else pad

    def _eos_ids(self) -> list[int]:
        ids = {self.tokenizer.eos_token_id}
        gen_eos = self.model.generation_config.eos_token_id
        ids.update(gen_eos if isinstance(gen_eos, list) else [gen_eos])
        return sorted(i for i in ids if i is not None)

    def _padded(self, rows: list[Ids]) -> tuple[torch.Tensor, torch.Tensor]:
        """Left padding: every row ends at the last column, where generation continues."""
        width = max(len(r) for r in rows)
        ids = [[self.pad_id] * (width - len(r)) + r for r in rows]
        mask = [[0] * (width - len(r)) + [1] * len(r) for r in rows]
        dev = self.model.device
        return torch.tensor(ids, device=dev), torch.tensor(mask, device=dev)

    # ---- generation -----------------------------------------------------------------------

    def chat(self, convos: Sequence[Sequence[Message] | TokenIds], sampling: Sampling) -> list[Completion]:
        return self._generate_all([list(p.ids) for p in self.prepare(convos)], sampling)

    def complete(self, prompts: Sequence[str | TokenIds], sampling: Sampling) -> list[Completion]:
        return self._generate_all([list(p.ids) for p in self.prepare(prompts)], sampling)

    def _generate_all(self, rows: list[Ids], sampling: Sampling) -> list[Completion]:
        """Length-sorted chunks cut padding; results go back in the callers' order."""
        order = sorted(range(len(rows)), key=lambda i: len(rows[i]))
        results: list[Completion | None] = [None] * len(rows)
        for start in range(0, len(order), self.batch_size):
            idx = order[start : start + self.batch_size]
            for i, done in zip(idx, self._generate_chunk([rows[i] for i in idx], sampling)):
                results[i] = done
        return results  # type: ignore[return-value]

    def _gen_config(self, sampling: Sampling) -> GenerationConfig:
        cfg = GenerationConfig(max_new_tokens=sampling.max_tokens, do_sample=sampling.temperature > 0,
                               pad_token_id=self.pad_id, eos_token_id=self.eos_ids,
                               bos_token_id=self.tokenizer.bos_token_id)
        if sampling.temperature > 0:
            cfg.temperature, cfg.top_p, cfg.top_k = sampling.temperature, sampling.top_p, 0
        if any(sampling.stop):
            cfg.stop_strings = [s for s in sampling.stop if s]  # halts rows early; _finish cuts the text
        return cfg

    def _generate_chunk(self, rows: list[Ids], sampling: Sampling) -> list[Completion]:
        input_ids, mask = self._padded(rows)
        if sampling.seed is not None:
            torch.manual_seed(sampling.seed)
        with torch.no_grad():
            out = self.model.generate(input_ids=input_ids, attention_mask=mask, tokenizer=self.tokenizer,
                                      generation_config=self._gen_config(sampling))
        new = out[:, input_ids.shape[1] :].tolist()
        return [self._finish(r, toks, sampling) for r, toks in zip(rows, new)]

    def _finish(self, prompt: Ids, toks: Ids, sampling: Sampling) -> Completion:
        """Cut at the first end token, then at the first stop string."""
        ended = next((n for n, t in enumerate(toks) if t in self.ends), None)
        toks = toks if ended is None else toks[:ended]
        text = self.tokenizer.decode(toks, skip_special_tokens=False)
        cut = min((i for i in (text.find(s) for s in sampling.stop if s) if i >= 0), default=-1)
        if cut >= 0:
            text = text[:cut]
        stopped = ended is not None or cut >= 0 or len(toks) < sampling.max_tokens
        return Completion(text, len(prompt), len(toks), "stop" if stopped else "length")

    # ---- scoring --------------------------------------------------------------------------

    def score(self, contexts: Sequence[Sequence[Message] | str], continuations: Sequence[str]) -> list[Score]:
        if len(contexts) != len(continuations):
            raise ValueError("score() needs one continuation per context")
        pairs = [self._score_pair(c, k) for c, k in zip(contexts, continuations)]
        order = sorted(range(len(pairs)), key=lambda i: len(pairs[i][0]))
        results: list[Score | None] = [None] * len(pairs)
        for start in range(0, len(order), self.batch_size):
            idx = order[start : start + self.batch_size]
            for i, s in zip(idx, self._score_chunk([pairs[i] for i in idx])):
                results[i] = s
        return results  # type: ignore[return-value]

    def _score_chunk(self, pairs: list[tuple[Ids, int]]) -> list[Score]:
        """Left padding puts every continuation at the end, so only the last logits are needed."""
        input_ids, mask = self._padded([p[0] for p in pairs])
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        keep = max(m for _, m in pairs) + 1
        with torch.no_grad():
            logits = self.model(input_ids=input_ids, attention_mask=mask, position_ids=positions,
                                logits_to_keep=keep).logits[:, :-1].float()
        targets = input_ids[:, input_ids.shape[1] - (keep - 1) :]
        # gather - logsumexp: no second vocab-sized tensor as log_softmax would allocate.
        tok_lp = logits.gather(-1, targets.unsqueeze(-1)).squeeze(-1) - logits.logsumexp(-1)
        return [Score(float(tok_lp[i, tok_lp.shape[1] - m :].sum()) if m else 0.0, m) for i, (_, m) in enumerate(pairs)]

    def close(self) -> None:
        self.model = None  # type: ignore[assignment]
