"""In-process transformers backend: batched generation, automatic prefix KV caching, scoring.

CAI prompts share a long few-shot prefix, so the KV cache of the longest common token prefix of
a batch is computed once (batch 1), kept in a small LRU and expanded to the batch. Rows are laid
out as ``[prefix][pad..pad][suffix]``: generate derives position ids from the attention mask
(pads do not count) and, restarting from a non-empty cache, only runs the uncached tokens.
"""
from __future__ import annotations

import copy
from collections import OrderedDict
from typing import Sequence

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, DynamicCache, GenerationConfig
from transformers.cache_utils import DynamicLayer

from charter.errors import BackendError
from charter.models import resolve_hf_checkpoint
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
    return tok, lm.to(dev).eval()


def _common_prefix_len(a: Sequence[int], b: Sequence[int]) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


class _GrowLayer(DynamicLayer):
    """A KV layer with spare capacity: DynamicLayer torch.cat-s the whole cache every decode step,
    which on CPU costs more than the attention itself once the context is ~2k tokens."""

    reserve = 256  # spare slots allocated whenever the buffer has to grow

    def adopt(self, keys: torch.Tensor, values: torch.Tensor, batch: int) -> None:
        """Copy (broadcasting a batch-1 prefix to ``batch`` rows) into a buffer with spare room."""
        self.lazy_initialization(keys, values)
        n, cap = keys.shape[-2], keys.shape[-2] + self.reserve
        b, h = batch, keys.shape[1]
        self._k = keys.new_empty((b, h, cap, keys.shape[-1]))
        self._v = values.new_empty((b, h, cap, values.shape[-1]))
        self._k[:, :, :n], self._v[:, :, :n] = keys, values
        self.keys, self.values = self._k[:, :, :n], self._v[:, :, :n]

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        n = self.get_seq_length()
        end = n + key_states.shape[-2]
        buf = getattr(self, "_k", None)
        # Re-adopt when the buffer is full or was replaced (batch_repeat_interleave, deepcopy, crop).
        if buf is None or end > buf.shape[-2] or self.keys.data_ptr() != buf.data_ptr() or n == 0:
            if n == 0:
                self.adopt(key_states, value_states, key_states.shape[0])
                return self.keys, self.values
            self.adopt(self.keys, self.values, self.keys.shape[0])
        self._k[:, :, n:end], self._v[:, :, n:end] = key_states, value_states
        self.keys, self.values = self._k[:, :, :end], self._v[:, :, :end]
        return self.keys, self.values


def _new_cache(config, reserve: int) -> DynamicCache:
    """A DynamicCache whose full-attention layers grow in place (sliding ones are kept as is)."""
    cache = DynamicCache(config=config)
    layers = [_GrowLayer() if type(layer) is DynamicLayer else layer for layer in cache.layers]
    for layer in layers:
        layer.reserve = reserve
    cache.layers = layers
    return cache


class _PrefixCache:
    """A few batch-1 KV caches keyed by their token prefix, least recently used evicted."""

    def __init__(self, model, entries: int = 4):
        self.model, self.entries = model, entries
        self.store: OrderedDict[tuple[int, ...], DynamicCache] = OrderedDict()

    def get(self, prefix: Ids, batch: int, reserve: int) -> DynamicCache:
        """A fresh cache for ``prefix`` expanded to ``batch`` rows (generate mutates its cache)."""
        key = tuple(prefix)
        if key not in self.store:
            self.store[key] = self._compute(key)
            while len(self.store) > self.entries:
                self.store.popitem(last=False)
        self.store.move_to_end(key)
        cache = _new_cache(self.model.config, reserve)
        for mine, stored in zip(cache.layers, self.store[key].layers):
            if not isinstance(mine, _GrowLayer):
                raise NotImplementedError("prefix caching supports full-attention layers only")
            mine.adopt(stored.keys, stored.values, batch)
        return cache

    def _compute(self, key: tuple[int, ...]) -> DynamicCache:
        """Extend the longest stored prefix of ``key`` (if any) rather than start from scratch."""
        best = max((k for k in self.store if len(k) <= len(key) and key[: len(k)] == k), key=len, default=())
        cache = copy.deepcopy(self.store[best]) if best else DynamicCache(config=self.model.config)
        rest = torch.tensor([key[len(best):]], device=self.model.device)
        with torch.no_grad():
            out = self.model(input_ids=rest, cache=cache, use_cache=True)
        return out.cache


class HFBackend:
    name = "transformers"

    def __init__(
        self,
        model: str,
        dtype: str = "auto",
        device: str = "auto",
        batch_size: int = 16,
        prefix_cache: bool = True,
        threads: int | None = None,
        min_prefix: int = 256,
    ):
        if threads:
            torch.set_num_threads(threads)
        self.model_id = model
        self.batch_size = max(1, batch_size)
        self.prefix_cache, self.min_prefix = prefix_cache, min_prefix
        self.tokenizer, self.model = _load(model, dtype, device)
        self.pad_id = self._pad_id()
        self.eos_ids = self._eos_ids()
        self._prefixes = _PrefixCache(self.model)

    def _pad_id(self) -> int:
        tok = self.tokenizer
        pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
        return 0 if pad is None else pad

    def _eos_ids(self) -> list[int]:
        ids = {self.tokenizer.eos_token_id}
        gen_eos = self.model.generation_config.eos_token_id
        ids.update(gen_eos if isinstance(gen_eos, list) else [gen_eos])
        return sorted(i for i in ids if i is not None)

    # ---- encoding -------------------------------------------------------------------------

    def _render(self, convo: Sequence[Message]) -> str:
        if not self.tokenizer.chat_template:
            raise BackendError(f"model '{self.model_id}' has no chat template; use a chat model or the completion format")
        return self.tokenizer.apply_chat_template(list(convo), add_generation_prompt=True, tokenize=False)

    def _encode(self, text: str, templated: bool) -> Ids:
        # A rendered template already holds its special tokens: adding them again doubles BOS.
        return self.tokenizer(text, add_special_tokens=not templated)["input_ids"]

    # ---- generation -----------------------------------------------------------------------

    def chat(self, convos: Sequence[Sequence[Message]], sampling: Sampling) -> list[Completion]:
        return self._generate_all([self._encode(self._render(c), True) for c in convos], sampling)

    def complete(self, prompts: Sequence[str], sampling: Sampling) -> list[Completion]:
        return self._generate_all([self._encode(p, False) for p in prompts], sampling)

    def _generate_all(self, rows: list[Ids], sampling: Sampling) -> list[Completion]:
        """Length-sorted chunks cut padding; results go back in the callers' order."""
        order = sorted(range(len(rows)), key=lambda i: len(rows[i]))
        results: list[Completion | None] = [None] * len(rows)
        for start in range(0, len(order), self.batch_size):
            idx = order[start : start + self.batch_size]
            for i, done in zip(idx, self._generate_chunk([rows[i] for i in idx], sampling)):
                results[i] = done
        return results  # type: ignore[return-value]

    def _shared_prefix(self, rows: list[Ids]) -> int:
        """Tokens of the chunk's common prefix worth caching (0: none); each row keeps >= 1 token."""
        if not self.prefix_cache:
            return 0
        n = min(len(r) for r in rows) - 1
        for r in rows[1:]:
            n = min(n, _common_prefix_len(rows[0], r))
        return n if n >= self.min_prefix else 0

    def _layout(self, rows: list[Ids], plen: int) -> tuple[torch.Tensor, torch.Tensor]:
        """[prefix][pads][suffix] per row; with plen=0 it is plain left padding."""
        width = max(len(r) for r in rows) - plen
        ids, mask = [], []
        for r in rows:
            pads = width - (len(r) - plen)
            ids.append(r[:plen] + [self.pad_id] * pads + r[plen:])
            mask.append([1] * plen + [0] * pads + [1] * (len(r) - plen))
        dev = self.model.device
        return torch.tensor(ids, device=dev), torch.tensor(mask, device=dev)

    def _gen_config(self, sampling: Sampling) -> GenerationConfig:
        greedy = sampling.temperature <= 0
        cfg = GenerationConfig(
            max_new_tokens=sampling.max_tokens,
            do_sample=not greedy,
            pad_token_id=self.pad_id,
            eos_token_id=self.eos_ids,
            bos_token_id=self.tokenizer.bos_token_id,
        )
        if not greedy:
            cfg.temperature, cfg.top_p, cfg.top_k = sampling.temperature, sampling.top_p, None
        if any(sampling.stop):
            cfg.stop_strings = [s for s in sampling.stop if s]  # halts rows early; _finish cuts the text
        return cfg

    def _generate_chunk(self, rows: list[Ids], sampling: Sampling) -> list[Completion]:
        plen = self._shared_prefix(rows)
        input_ids, mask = self._layout(rows, plen)
        # Room for the uncached prompt tokens and every new token: the buffer never regrows.
        reserve = input_ids.shape[1] - plen + sampling.max_tokens + 1
        if plen:
            cache = self._prefixes.get(rows[0][:plen], len(rows), reserve)
        else:
            cache = _new_cache(self.model.config, sampling.max_tokens + 1)
        if sampling.seed is not None:
            torch.manual_seed(sampling.seed)
        with torch.no_grad():
            out = self.model.generate(
                input_ids=input_ids,
                attention_mask=mask,
                generation_config=self._gen_config(sampling),
                tokenizer=self.tokenizer,
                cache=cache,
            )
        new = out[:, input_ids.shape[1] :].tolist()
        return [self._finish(r, toks, sampling) for r, toks in zip(rows, new)]

    def _finish(self, prompt: Ids, toks: Ids, sampling: Sampling) -> Completion:
        """Cut at EOS (finished rows are padded with it) and at the first stop string."""
        hit_eos = False
        for n, t in enumerate(toks):
            if t in self.eos_ids or t == self.pad_id:
                toks, hit_eos = toks[:n], True
                break
        text = self.tokenizer.decode(toks, skip_special_tokens=False)
        cut = min((i for i in (text.find(s) for s in sampling.stop if s) if i >= 0), default=-1)
        if cut >= 0:
            text = text[:cut]
        reason = "stop" if hit_eos or cut >= 0 or len(toks) < sampling.max_tokens else "length"
        return Completion(text, len(prompt), len(toks), reason)

    # ---- scoring --------------------------------------------------------------------------

    def score(
        self, contexts: Sequence[Sequence[Message] | str], continuations: Sequence[str]
    ) -> list[Score]:
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

    def _score_pair(self, context: Sequence[Message] | str, continuation: str) -> tuple[Ids, int]:
        """Full token ids and how many trailing tokens belong to the continuation."""
        templated = not isinstance(context, str)
        text = self._render(context) if templated else context
        ctx = self._encode(text, templated)
        full = self._encode(text + continuation, templated)
        # Tokens can merge across the boundary: score from where the two encodings diverge.
        keep = _common_prefix_len(ctx, full)
        if keep == 0:  # nothing conditions the first token: prepend BOS (or pad)
            bos = self.tokenizer.bos_token_id
            full, keep = [self.pad_id if bos is None else bos] + full, 1
        return full, len(full) - keep

    def _score_chunk(self, pairs: list[tuple[Ids, int]]) -> list[Score]:
        """Left padding puts every continuation at the end, so only the last logits are needed."""
        rows = [p[0] for p in pairs]
        input_ids, mask = self._layout(rows, 0)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        keep = max(m for _, m in pairs) + 1
        with torch.no_grad():
            logits = self.model(
                input_ids=input_ids, attention_mask=mask, position_ids=positions, logits_to_keep=keep
            ).logits[:, :-1].float()
        targets = input_ids[:, input_ids.shape[1] - (keep - 1) :]
        # gather - logsumexp: no second vocab-sized tensor as log_softmax would allocate.
        tok_lp = logits.gather(-1, targets.unsqueeze(-1)).squeeze(-1) - logits.logsumexp(-1)
        return [Score(float(tok_lp[i, tok_lp.shape[1] - m :].sum()) if m else 0.0, m) for i, (_, m) in enumerate(pairs)]

    def close(self) -> None:
        self._prefixes.store.clear()
        self.model = None  # type: ignore[assignment]
