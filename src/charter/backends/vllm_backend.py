"""Offline, in-process vLLM for GPU machines (`pip install 'charter[vllm]'`).

vLLM batches continuously and caches shared prefixes itself (enable_prefix_caching), so a whole
batch goes in as one call. Scoring uses prompt_logprobs: the log-prob of every prompt token given
the ones before it, read off for the continuation's tokens.
"""
from __future__ import annotations

from typing import Any, Sequence

from charter import models
from charter.errors import BackendError
from charter.types import Completion, Message, Sampling, Score


class VLLMBackend:
    name = "vllm"

    def __init__(self, model: str, **llm_options: Any):
        try:
            import vllm
        except ImportError as exc:
            raise BackendError("the vllm backend needs vLLM and a GPU; pip install 'charter[vllm]'") from exc
        self.model_id, self._vllm = model, vllm
        path = models.resolve_hf_checkpoint(model) if models.is_embedded(model) else model
        options = {"enable_prefix_caching": True, **llm_options}  # our few-shot prefix is shared
        try:
            self.llm = vllm.LLM(model=path, **options)
        except Exception as exc:  # vLLM raises many kinds; all mean "could not start"
            raise BackendError(f"vLLM could not load '{model}': {exc}") from exc
        self.tokenizer = self.llm.get_tokenizer()

    def _params(self, sampling: Sampling, **extra: Any):
        # max_tokens always explicit: vLLM's own default is 16 tokens
        return self._vllm.SamplingParams(max_tokens=sampling.max_tokens, temperature=sampling.temperature,
                                         top_p=sampling.top_p, stop=list(sampling.stop) or None, seed=sampling.seed,
                                         logprobs=0 if sampling.logprobs else None, **extra)

    @staticmethod
    def _completion(out) -> Completion:
        c = out.outputs[0]
        logprob = getattr(c, "cumulative_logprob", None)
        finish = "length" if c.finish_reason == "length" else "stop"
        return Completion(c.text, len(out.prompt_token_ids or []), len(c.token_ids), finish, logprob)

    def chat(self, convos: Sequence[Sequence[Message]], sampling: Sampling) -> list[Completion]:
        outs = self.llm.chat([list(c) for c in convos], self._params(sampling), use_tqdm=False)
        return [self._completion(o) for o in outs]

    def complete(self, prompts: Sequence[str], sampling: Sampling) -> list[Completion]:
        outs = self.llm.generate(list(prompts), self._params(sampling), use_tqdm=False)
        return [self._completion(o) for o in outs]

    def _render(self, context: str | Sequence[Message]) -> str:
        if isinstance(context, str):
            return context
        return self.tokenizer.apply_chat_template(list(context), tokenize=False, add_generation_prompt=True)

    def score(self, contexts: Sequence[str | Sequence[Message]], continuations: Sequence[str]) -> list[Score]:
        texts = [self._render(c) for c in contexts]
        starts = [len(self.tokenizer(t, add_special_tokens=False).input_ids) for t in texts]
        ids = [self.tokenizer(t + c, add_special_tokens=False).input_ids for t, c in zip(texts, continuations)]
        params = self._vllm.SamplingParams(max_tokens=1, prompt_logprobs=0, temperature=0.0)
        outs = self.llm.generate([{"prompt_token_ids": i} for i in ids], params, use_tqdm=False)
        scores = []
        for out, start, tok in zip(outs, starts, ids):
            picked = [out.prompt_logprobs[k][tok[k]].logprob for k in range(max(start, 1), len(tok))]
            scores.append(Score(float(sum(picked)), len(picked)))
        return scores

    def close(self) -> None:
        self.llm = None
