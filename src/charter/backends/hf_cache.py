"""KV caches for the transformers backend: a shared prefix stored once, and each conversation's own KV.

Two kinds of reuse, both invisible to callers:

* Shared prefix. Every critique/revision call of a batch starts with the same ~1k-token few-shot
  block. Copying its KV to every row and attending to each copy makes decode memory-bound on CPU
  (at batch 8 the rows re-read the same prefix eight times per token). The prefix stays at batch
  1 (``CascadeLayer.prefix``) and ``cascade_attention`` attends to it with one GEMM for all rows
  (GQA groups folded into the query dimension, no ``repeat_kv``), then to each row's own tokens,
  under one softmax: the "cascade" attention of vLLM and FlashInfer.
* Conversations. A CAI conversation grows by one request per step, so its next call repeats the
  previous call's prompt and completion. ``RowCache`` keeps each row's own KV (after the shared
  prefix) and the next call only runs the new tokens, like llama.cpp's slots do.

A batch is laid out ``[prefix][pads][cached own tokens][pads][new tokens]``; pads are masked and
position ids come from the mask, so every row's positions stay those it was computed with.
"""
from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Sequence

import torch
from transformers import AttentionInterface, DynamicCache
from transformers.cache_utils import DynamicLayer
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

ATTENTION = "charter_cascade"
_active = threading.local()  # the cache of the generate() call running on this thread
KV = list[tuple[torch.Tensor, torch.Tensor]]  # per layer (keys, values), [batch, heads, tokens, dim]


class CascadeLayer(DynamicLayer):
    """Rows' own tokens in a buffer with spare room (DynamicLayer torch.cat-s the whole cache every
    decode step, which on CPU costs more than the attention itself at ~2k tokens); the shared
    prefix, if any, kept once at batch 1."""

    def __init__(self, prefix: tuple[torch.Tensor, torch.Tensor] | None, own: tuple[torch.Tensor, torch.Tensor] | None,
                 reserve: int):
        super().__init__()
        self.prefix = prefix if prefix is not None and prefix[0].shape[-2] else None
        self.reserve, self._k = reserve, None
        if own is not None and own[0].shape[-2]:
            self.update(*own)

    def _room(self, keys: torch.Tensor, values: torch.Tensor, size: int) -> None:
        b, h, d = keys.shape[0], keys.shape[1], keys.shape[-1]
        k, v = keys.new_empty((b, h, size + self.reserve, d)), values.new_empty((b, h, size + self.reserve, d))
        n = self._own()
        if n:
            k[:, :, :n], v[:, :, :n] = self.keys, self.values
        self._k, self._v = k, v

    def _own(self) -> int:
        return self.keys.shape[-2] if self.is_initialized and self.keys.dim() == 4 else 0

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        n = self._own()
        end = n + key_states.shape[-2]
        # Grow when full, or when the buffer was replaced (batch_repeat_interleave, deepcopy, crop).
        if self._k is None or end > self._k.shape[-2] or (n and self.keys.data_ptr() != self._k.data_ptr()):
            self._room(key_states, value_states, end)
        self._k[:, :, n:end], self._v[:, :, n:end] = key_states, value_states
        self.keys, self.values = self._k[:, :, :end], self._v[:, :, :end]
        return self.keys, self.values

    def get_seq_length(self) -> int:
        return (self.prefix[0].shape[-2] if self.prefix else 0) + self._own()


def full_attention(config) -> bool:
    """Whether every layer attends to the whole context (sliding windows cannot share a prefix)."""
    return all(type(layer) is DynamicLayer for layer in DynamicCache(config=config).layers)


def new_cache(config, prefix: KV | None, own: KV | None, reserve: int) -> DynamicCache:
    """Full-attention layers become CascadeLayers; sliding ones stay as they are (callers only pass
    a prefix or reused KV when every layer is full attention, see ``full_attention``)."""
    cache = DynamicCache(config=config)
    cache.layers = [CascadeLayer(prefix[i] if prefix else None, own[i] if own else None, reserve)
                    if type(layer) is DynamicLayer else layer for i, layer in enumerate(cache.layers)]
    return cache


class PrefixCache:
    """A few batch-1 KV caches keyed by their token prefix, least recently used evicted."""

    def __init__(self, model, entries: int = 4):
        self.model, self.entries = model, entries
        self.store: OrderedDict[tuple[int, ...], KV] = OrderedDict()

    def covering(self, rows: list[list[int]]) -> tuple[int, ...] | None:
        """The longest stored prefix shared by every row (each row keeps >= 1 token to run)."""
        fits = [k for k in self.store if all(len(r) > len(k) and tuple(r[: len(k)]) == k for r in rows)]
        return max(fits, key=len, default=None)

    def get(self, key: tuple[int, ...]) -> KV:
        if key not in self.store:
            self.store[key] = self._compute(key)
            while len(self.store) > self.entries:
                self.store.popitem(last=False)
        self.store.move_to_end(key)
        return self.store[key]

    def _compute(self, key: tuple[int, ...]) -> KV:
        """Extend the longest stored prefix of ``key`` (if any) rather than start from scratch."""
        best = max((k for k in self.store if len(k) <= len(key) and key[: len(k)] == k), key=len, default=())
        cache = DynamicCache(config=self.model.config)
        if best:
            for layer, (k, v) in zip(cache.layers, self.store[best]):
                layer.update(k, v)
        rest = torch.tensor([key[len(best):]], device=self.model.device)
        with torch.no_grad():
            # Only the KV is kept: one row of logits, not a vocab-sized row per prefix token.
            out = self.model(input_ids=rest, cache=cache, use_cache=True, logits_to_keep=1)
        return [(layer.keys, layer.values) for layer in out.cache.layers]


@dataclass
class _Entry:
    prefix: tuple[int, ...]  # the shared prefix these tokens follow
    tokens: list[int]  # the row's own tokens after the prefix
    kv: KV  # batch 1, one position per token


def common_prefix_len(a: Sequence[int], b: Sequence[int]) -> int:
    n, i = min(len(a), len(b)), 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


class RowCache:
    """Each conversation's own KV from its last call, least recently used evicted past a token budget."""

    def __init__(self, budget_tokens: int):
        self.budget, self.used = budget_tokens, 0
        self.entries: OrderedDict[int, _Entry] = OrderedDict()
        self._next = 0

    def match(self, prefix: tuple[int, ...], own: list[int]) -> tuple[int | None, int]:
        """(entry id, reusable tokens) of the entry sharing the longest start with ``own``."""
        best, best_n = None, 0
        for eid, e in self.entries.items():
            if e.prefix is prefix or e.prefix == prefix:
                n = common_prefix_len(e.tokens, own)
                if n > best_n:
                    best, best_n = eid, n
        return best, min(best_n, len(own) - 1)  # the last token must run to give logits

    def own_kv(self, hits: list[tuple[int | None, int]], width: int) -> KV | None:
        """Rows' reused KV right-aligned in ``width`` slots (the pads before them are masked)."""
        if not width:
            return None
        like = next(self.entries[eid].kv for eid, n in hits if n)
        out = []
        for layer, (lk, lv) in enumerate(like):
            b, h, d = len(hits), lk.shape[1], lk.shape[-1]
            k, v = lk.new_zeros((b, h, width, d)), lv.new_zeros((b, h, width, d))
            for i, (eid, n) in enumerate(hits):
                if n:
                    ek, ev = self.entries[eid].kv[layer]
                    k[i, :, width - n:], v[i, :, width - n:] = ek[0, :, :n], ev[0, :, :n]
            out.append((k, v))
        return out

    def save(self, prefix: tuple[int, ...], tokens: list[int], kv: KV, replaces: int | None) -> None:
        """Keep a row's KV; the entry it extended is dropped (this one holds all of it)."""
        if replaces is not None and replaces in self.entries:
            self.used -= len(self.entries.pop(replaces).tokens)
        self.entries[self._next] = _Entry(prefix, tokens, kv)
        self._next += 1
        self.used += len(tokens)
        while self.used > self.budget and self.entries:
            self.used -= len(self.entries.popitem(last=False)[1].tokens)

    def clear(self) -> None:
        self.entries.clear()
        self.used = 0


def row_kv(cache: DynamicCache, row: int, index: torch.Tensor) -> KV:
    """One row's own KV at the given buffer positions, copied out at batch 1."""
    return [(layer.keys[row : row + 1].index_select(2, index), layer.values[row : row + 1].index_select(2, index))
            for layer in cache.layers]


class active_cache:
    """Context manager: lets ``cascade_attention`` find the prefix of the running generate()."""

    def __init__(self, cache):
        self.cache = cache

    def __enter__(self):
        _active.cache = self.cache

    def __exit__(self, *exc):
        _active.cache = _active.mask = None


def _prefix_of(layer_idx: int) -> tuple[torch.Tensor, torch.Tensor] | None:
    cache = getattr(_active, "cache", None)
    if cache is None or layer_idx >= len(cache.layers):
        return None
    return getattr(cache.layers[layer_idx], "prefix", None)


_flash_cpu = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", None)


def _own_mask(attention_mask: torch.Tensor, p: int, g: int) -> torch.Tensor:
    """The rows' part of the boolean mask as an additive float mask, GQA groups folded into the
    query dim; built once per forward and shared by every layer."""
    memo = getattr(_active, "mask", None)
    if memo is not None and memo[0] is attention_mask:
        return memo[1]
    b, _, q_len, n = attention_mask.shape
    own = attention_mask[..., p:].unsqueeze(2).expand(b, 1, g, q_len, n - p).reshape(b, 1, g * q_len, n - p)
    out = torch.zeros(own.shape, dtype=torch.float32, device=own.device).masked_fill_(~own, float("-inf"))
    _active.mask = (attention_mask, out)
    return out


def cascade_attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    """Attention over [shared prefix (batch 1)] + [each row's tokens]; plain SDPA without a prefix.

    Both parts run the fused CPU flash kernel, which also returns each query's log-sum-exp, so the
    two partial results merge exactly: out = o_own + (o_pre - o_own) * sigmoid(lse_pre - lse_own)."""
    prefix = _prefix_of(module.layer_idx)
    if prefix is None:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout,
                                      scaling=scaling, **kwargs)
    pk, pv = prefix  # [1, H, P, d]
    b, hq, q_len, d = query.shape
    h, p = key.shape[1], pk.shape[2]
    if _flash_cpu is None or query.device.type != "cpu" or query.dtype != torch.float32:
        k, v = torch.cat([pk.expand(b, -1, -1, -1), key], 2), torch.cat([pv.expand(b, -1, -1, -1), value], 2)
        return sdpa_attention_forward(module, query, k, v, attention_mask, dropout=dropout, scaling=scaling, **kwargs)
    g = hq // h  # query head h*g + i reads kv head h (repeat_kv's order)
    q = query.reshape(b, h, g * q_len, d)
    # The prefix: one batch-1 call, every row's queries stacked per kv head.
    o_pre, l_pre = _flash_cpu(q.transpose(0, 1).reshape(1, h, b * g * q_len, d), pk, pv, scale=scaling)
    o_pre = o_pre.view(h, b, g * q_len, d).transpose(0, 1)
    l_pre = l_pre.view(h, b, g * q_len).transpose(0, 1)
    mask = _own_mask(attention_mask, p, g) if attention_mask is not None else None
    o_own, l_own = _flash_cpu(q, key, value, attn_mask=mask, scale=scaling)
    w = torch.sigmoid(l_pre - l_own).unsqueeze(-1)
    out = torch.addcmul(o_own, o_pre - o_own, w)
    return out.reshape(b, hq, q_len, d).transpose(1, 2).contiguous(), None


def cascade_mask(*args, **kwargs):
    """SDPA's boolean mask, always materialised while a cache is active (cascade needs columns)."""
    if getattr(_active, "cache", None) is not None:
        kwargs["allow_is_causal_skip"] = False
    return sdpa_mask(*args, **kwargs)


AttentionInterface.register(ATTENTION, cascade_attention)
AttentionMaskInterface.register(ATTENTION, cascade_mask)
