"""In-process transformers backend: batched generation, automatic prefix KV caching, scoring.

CAI prompts share a long few-shot prefix, so the KV cache of the longest common token prefix of
a batch is computed once (batch 1), kept in a small LRU and attended to by every row without
copies (``hf_cache``). Rows are laid out as ``[prefix][pad..pad][suffix]``: generate derives
position ids from the attention mask (pads do not count) and, restarting from a non-empty cache,
only runs the uncached tokens.
"""
from __future__ import annotations

from dataclasses import replace
from typing import Sequence

import torch
from transformers import (AutoModelForCausalLM, AutoTokenizer, GenerationConfig, LogitsProcessor, LogitsProcessorList,
                          StoppingCriteria, StoppingCriteriaList, TemperatureLogitsWarper, TopPLogitsWarper)

from charter.backends.hf_cache import (ATTENTION, PrefixCache, RowCache, active_cache, common_prefix_len,
                                      full_attention, new_cache, row_kv)
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
        lm = AutoModelForCausalLM.from_pretrained(path, dtype=_pick_dtype(dtype, dev), attn_implementation=ATTENTION)
    except (OSError, ValueError) as exc:
        raise BackendError(
            f"could not load model '{model}': {exc}. It was not found locally and hub downloads "
            "need network; pass a local path or --model embedded"
        ) from exc
    return tok, lm.to(dev).eval()


# Halt a batch when (rows ended) x (steps left) reaches this: a restart costs about one decode
# step plus copying the rows' KV, and each ended row wastes a row's share of every step left.
HALT_ROW_STEPS = 48


class _HaltWhenRowsEnd(StoppingCriteria):
    """Stops the whole batch once some, not all, rows have ended and enough steps are left that
    the rest run cheaper in a smaller batch. Ended rows' last token is EOS or pad (generate pads
    rows after they end, stop strings included)."""

    def __init__(self, ends: list[int], width: int, budget: int, device: torch.device):
        self.ends, self.width, self.budget = torch.tensor(ends, device=device), width, budget
        self.halted = False

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor, **kwargs) -> torch.Tensor:
        done = int(torch.isin(input_ids[:, -1], self.ends).sum())
        left = self.budget - (input_ids.shape[1] - self.width)
        self.halted = 0 < done < input_ids.shape[0] and done * left >= HALT_ROW_STEPS
        return torch.full((input_ids.shape[0],), self.halted, dtype=torch.bool, device=input_ids.device)


class DrawToken(LogitsProcessor):
    """Draws each row's next token from the warped distribution by inverse CDF (one uniform
    number per row) and leaves only that token possible, so greedy decoding takes it. Same
    distribution as generate's sampling, whose torch.multinomial draws an exponential per
    vocabulary entry: 11 ms a step at batch 8 over SmolLM2's 49k tokens on 2 CPU cores, ~13% of
    a decode step; this takes well under 1 ms."""

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        cdf = scores.float().softmax(-1).cumsum(-1)
        u = torch.rand((scores.shape[0], 1), device=scores.device) * cdf[:, -1:]
        # right=True: the first token whose cdf exceeds u, so zero-probability tokens never win
        pick = torch.searchsorted(cdf, u, right=True).clamp_(max=scores.shape[-1] - 1)
        return torch.full_like(scores, float("-inf")).scatter_(-1, pick, 0.0)


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
        row_cache_mb: int = 2048,
    ):
        if threads:
            torch.set_num_threads(threads)
        self.model_id = model
        self.batch_size = max(1, batch_size)
        self.prefix_cache, self.min_prefix = prefix_cache, min_prefix
        self.tokenizer, self.model = _load(model, dtype, device)
        self.pad_id = self._pad_id()
        self.eos_ids = self._eos_ids()
        self.ends = set(self.eos_ids) | {self.pad_id}  # a row's tokens after it ends are pads
        self._prefixes = PrefixCache(self.model)
        self._reuse = full_attention(self.model.config)  # both caches need full-attention layers
        self._rows = RowCache(row_cache_mb * 2**20 // self._kv_bytes_per_token())

    def _kv_bytes_per_token(self) -> int:
        c = self.model.config
        heads = getattr(c, "num_key_value_heads", None) or c.num_attention_heads
        head_dim = getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads
        return max(1, c.num_hidden_layers * 2 * heads * head_dim * self.model.dtype.itemsize)

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

    def _shared_prefix(self, rows: list[Ids]) -> tuple[int, ...]:
        """The chunk's common prefix worth caching (``()``: none); each row keeps >= 1 token.
        A stored prefix that fits wins, so conversations keep the prefix their KV follows."""
        if not (self.prefix_cache and self._reuse):
            return ()
        key = self._prefixes.covering(rows)
        if key is not None and len(key) >= self.min_prefix:
            return key
        if len(rows) < 2:  # a lone row's "common prefix" is the row itself
            return ()
        n = min(len(r) for r in rows) - 1
        for r in rows[1:]:
            n = min(n, common_prefix_len(rows[0], r))
        return tuple(rows[0][:n]) if n >= self.min_prefix else ()

    def _layout(self, rows: list[Ids], plen: int, reused: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """[prefix][pads][reused own tokens][pads][new tokens] per row; pads are masked out."""
        wide_c = max(reused)
        wide_u = max(len(r) - plen - n for r, n in zip(rows, reused))
        ids, mask = [], []
        for r, n in zip(rows, reused):
            pc, pu = wide_c - n, wide_u - (len(r) - plen - n)
            ids.append(r[:plen] + [self.pad_id] * pc + r[plen : plen + n] + [self.pad_id] * pu + r[plen + n :])
            mask.append([1] * plen + [0] * pc + [1] * n + [0] * pu + [1] * (len(r) - plen - n))
        dev = self.model.device
        return torch.tensor(ids, device=dev), torch.tensor(mask, device=dev)

    def _gen_config(self, sampling: Sampling) -> tuple[GenerationConfig, LogitsProcessorList]:
        """Sampling runs as transformers' own warpers plus ``DrawToken`` under greedy decoding,
        which then takes the drawn token (see ``DrawToken`` for why)."""
        cfg = GenerationConfig(
            max_new_tokens=sampling.max_tokens,
            do_sample=False,
            pad_token_id=self.pad_id,
            eos_token_id=self.eos_ids,
            bos_token_id=self.tokenizer.bos_token_id,
        )
        if any(sampling.stop):
            cfg.stop_strings = [s for s in sampling.stop if s]  # halts rows early; _finish cuts the text
        if sampling.temperature <= 0:
            return cfg, LogitsProcessorList()
        warpers = [TemperatureLogitsWarper(sampling.temperature)]
        if sampling.top_p < 1.0:
            warpers.append(TopPLogitsWarper(sampling.top_p))
        return cfg, LogitsProcessorList(warpers + [DrawToken()])

    def _generate_chunk(self, rows: list[Ids], sampling: Sampling) -> list[Completion]:
        new = self._decode(rows, sampling, self._shared_prefix(rows))
        return [self._finish(r, toks, sampling) for r, toks in zip(rows, new)]

    def _decode(self, rows: list[Ids], sampling: Sampling, key: tuple[int, ...]) -> list[Ids]:
        """Each row's new tokens. Once enough rows have ended, the batch halts and the rest go on
        in a smaller batch from their cached KV: an ended row still costs its share of every
        later decode step (~7 ms a row at batch 8 on 2 CPU cores), and CAI critiques and
        revisions end at very different lengths."""
        new, halted = self._run(rows, sampling, key)
        live = [i for i, toks in enumerate(new) if not self._cut(toks, sampling)[2]] if halted else []
        if live:
            seed = None if sampling.seed is None else sampling.seed + 1
            rest = replace(sampling, max_tokens=sampling.max_tokens - len(new[live[0]]), seed=seed)
            for i, more in zip(live, self._decode([rows[i] + new[i] for i in live], rest, key)):
                new[i] = new[i] + more
        return new

    def _run(self, rows: list[Ids], sampling: Sampling, key: tuple[int, ...]) -> tuple[list[Ids], bool]:
        """One generate() call over the chunk: (new tokens per row, whether it halted early)."""
        plen = len(key)
        reuse = self.prefix_cache and self._reuse
        hits = [self._rows.match(key, r[plen:]) for r in rows] if reuse else [(None, 0)] * len(rows)
        input_ids, mask = self._layout(rows, plen, [n for _, n in hits])
        width = max(n for _, n in hits)
        fresh = input_ids.shape[1] - plen - width
        # Room for the uncached prompt tokens and every new token: the buffer never regrows.
        cache = new_cache(self.model.config, self._prefixes.get(key) if plen else None,
                          self._rows.own_kv(hits, width), fresh + sampling.max_tokens + 1)
        config, processors = self._gen_config(sampling)
        halt = _HaltWhenRowsEnd(sorted(self.ends), input_ids.shape[1], sampling.max_tokens, input_ids.device)
        if sampling.seed is not None:
            torch.manual_seed(sampling.seed)
        with torch.no_grad(), active_cache(cache):
            out = self.model.generate(
                input_ids=input_ids,
                attention_mask=mask,
                generation_config=config,
                logits_processor=processors,
                tokenizer=self.tokenizer,
                cache=cache,
                stopping_criteria=StoppingCriteriaList([halt] if reuse else []),
            )
        new = out[:, input_ids.shape[1] :].tolist()
        if reuse:
            self._remember(cache, rows, key, hits, width, fresh, new)
        return new, halt.halted

    def _remember(self, cache, rows: list[Ids], key: tuple[int, ...], hits, width: int, fresh: int,
                  new: list[Ids]) -> None:
        """Keep each row's own KV (prompt after the prefix, and its completion up to EOS)."""
        plen, start = len(key), width + fresh
        fed = cache.layers[0].keys.shape[-2] - start  # generated tokens whose KV was computed
        for i, (r, (eid, n)) in enumerate(zip(rows, hits)):
            gen = new[i][:fed]
            k = next((j + 1 for j, t in enumerate(gen) if t in self.ends), len(gen))
            u = len(r) - plen - n
            index = [*range(width - n, width), *range(start - u, start), *range(start, start + k)]
            kv = row_kv(cache, i, torch.tensor(index, device=self.model.device))
            self._rows.save(key, r[plen:] + gen[:k], kv, eid)

    def _cut(self, toks: Ids, sampling: Sampling) -> tuple[Ids, str, bool]:
        """(tokens up to EOS, their text up to the first stop string, whether either ended it).
        Finished rows are padded with EOS or pad, so both count as an end."""
        hit_eos = False
        for n, t in enumerate(toks):
            if t in self.ends:
                toks, hit_eos = toks[:n], True
                break
        text = self.tokenizer.decode(toks, skip_special_tokens=False)
        cut = min((i for i in (text.find(s) for s in sampling.stop if s) if i >= 0), default=-1)
        if cut >= 0:
            text = text[:cut]
        return toks, text, hit_eos or cut >= 0

    def _finish(self, prompt: Ids, toks: Ids, sampling: Sampling) -> Completion:
        toks, text, ended = self._cut(toks, sampling)
        reason = "stop" if ended or len(toks) < sampling.max_tokens else "length"
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
        keep = common_prefix_len(ctx, full)
        if keep == 0:  # nothing conditions the first token: prepend BOS (or pad)
            bos = self.tokenizer.bos_token_id
            full, keep = [self.pad_id if bos is None else bos] + full, 1
        return full, len(full) - keep

    def _score_chunk(self, pairs: list[tuple[Ids, int]]) -> list[Score]:
        """Left padding puts every continuation at the end, so only the last logits are needed."""
        rows = [p[0] for p in pairs]
        input_ids, mask = self._layout(rows, 0, [0] * len(rows))
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
        self._rows.clear()
        self.model = None  # type: ignore[assignment]
