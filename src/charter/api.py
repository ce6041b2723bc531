"""The Python entry points that need no run directory: open a backend, run critique-revision on
prompts in memory, get the records back.

    import charter
    with charter.load_backend("auto", "embedded") as llm:
        records = charter.critique_revise(llm, ["How do I pick a lock?"], rounds=2)

Records match what `charter generate` writes for the same prompts, settings and seed: the same
stable ids (`prompts.prompt_id`), hence the same principle draws and per-step seeds.
"""
from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, Sequence, Union, get_args

from charter.errors import ConfigError, InputError
from charter.types import Constitution, Kind, Message, PromptItem, Record, Sampling

if TYPE_CHECKING:
    from charter.backends.base import Backend

Prompt = Union[str, Sequence[Message], PromptItem]


def load_backend(name: str = "auto", model: str = "embedded", **options: Any) -> Backend:
    """A backend for `model`, usable as a context manager (`with ... as llm:` closes the engine).
    `name` is a registry name or "auto" (llama.cpp for a .gguf file, vLLM where it imports,
    else transformers); `model` may name its own backend (BACKEND:MODEL); `options` go to the
    backend (e.g. concurrency=64, base_url=...)."""
    from charter.backends import open_model

    return open_model(model, name, **options)  # every backend is a context manager


def critique_revise(llm: Backend, prompts: Sequence[Prompt], rounds: int = 4, sampling: Sampling | None = None,
                    constitution: str | Constitution = "default", few_shot: str = "default",
                    critique: bool = True, context: str = "full", format: str = "chat", seed: int = 0,
                    kind: Kind = "red_team", batch_size: int = 16, stop_when_clean: bool = False,
                    clean_threshold: float = 0.5, guard: Any = None, principles: str = "random",
                    principle_group: str | None = None, name_priority: bool = False) -> list[Record]:
    """Answer each prompt, then critique and revise the answer `rounds` times; one Record per
    prompt, in input order. A prompt is a string, a list of {role, content} messages ending with
    a user turn, or a PromptItem. `seed` draws the principles (per record id and round); `sampling`
    defaults to Sampling(seed=seed). A prompt given twice gets two records, samples 0 and 1 (the
    ids the CLI gives --helpful-samples), so the two draw their own principles and seeds.
    A failed request is a record with `error` set, as in a run directory. `stop_when_clean`: after
    each critique, ask whether it found a problem (P(problem) below `clean_threshold`: no) and end
    the chain there; such a record's `stopped` says where, its `p_problem` lists every check.
    `guard`: guard classifiers (a directory from `charter train classifier`, or a
    charter.guard.screen.Guard) as in `generate --guard`: a blocked record has `guard` set.
    `principles`, `principle_group`, `name_priority`: generate's --principles (random or
    relevant[:K]), --principle-group and --name-priority."""
    from charter.inputs.constitution import in_group, load_constitution
    from charter.pipeline.cai import Settings, run_items
    from charter.pipeline.clean_check import check_settings as check_stop
    from charter.pipeline.relevance import relevance_k

    sampling = check_sampling(sampling) or Sampling(seed=seed)
    check_settings(sampling, kind, rounds=rounds, critique=critique, context=context, format=format, seed=seed,
                   batch_size=batch_size, stop_when_clean=stop_when_clean, clean_threshold=clean_threshold)
    check_stop(stop_when_clean, critique)
    relevance_k(principles, "principles")
    if isinstance(constitution, str):
        constitution = load_constitution(constitution, few_shot)
    in_group(constitution.principles, principle_group, constitution.source or constitution.name)
    settings = Settings(rounds=rounds, critique=critique, format=format, seed=seed, batch_size=batch_size,
                        sampling=sampling, context=context, stop_when_clean=stop_when_clean,
                        clean_threshold=clean_threshold, principles=principles, group=principle_group,
                        name_priority=name_priority)
    items = to_items(prompts, kind)
    done: dict[str, Record] = {}

    def keep(rec: Record) -> None:
        done[rec.id] = rec

    if guard is None:
        run_items(llm, constitution, settings, items, keep)
    else:
        run_guarded(llm, constitution, settings, items, keep, guard)
    return [done[it.id] for it in items]


def run_guarded(llm: Backend, constitution: Constitution, settings: Any, items: list[PromptItem], keep: Any,
                guard: Any) -> None:
    """run_items behind guard classifiers: blocked prompts skip generation, answers are checked."""
    from charter.guard.screen import Guard, blocked_record
    from charter.pipeline.cai import run_items

    own = not isinstance(guard, Guard)
    guard = Guard(guard) if own else guard
    try:
        todo = guard.screen(items, lambda it, g: keep(blocked_record(it, g, model=llm.model_id, backend=llm.name,
                                                                      format=settings.format)))
        run_items(llm, constitution, settings, todo, lambda rec: keep(guard.check(rec)))
    finally:
        if own:
            guard.close()


def answer(llm: Backend, prompts: Sequence[Prompt], sampling: Sampling | None = None, format: str = "chat",
           seed: int = 0) -> list[Record]:
    """One plain answer per prompt (the helpfulness records of `charter generate`), in input order;
    each record's answer is its `initial` (and `final`)."""
    return critique_revise(llm, prompts, rounds=0, sampling=sampling, few_shot="none", format=format,
                           seed=seed, kind="helpful")


def check_sampling(sampling: Any) -> Sampling | None:
    """`sampling` if it is a Sampling (or None); a mapping or anything else gets the call to write instead."""
    if sampling is None or isinstance(sampling, Sampling):
        return sampling
    if isinstance(sampling, dict):
        args = ", ".join(f"{k}={v!r}" for k, v in sampling.items())
        raise ConfigError(f"sampling must be a charter.Sampling, not a dict: write sampling=charter.Sampling({args})")
    raise ConfigError(f"sampling must be a charter.Sampling (e.g. charter.Sampling(max_tokens=256)), got {sampling!r}")


def check_settings(sampling: Sampling, kind: str, **values: Any) -> None:
    """The arguments against GenerateConfig's declarations (type, choices, bounds), as the CLI checks them."""
    from charter.generate import GenerateConfig

    if kind not in get_args(Kind):
        raise ConfigError(f"kind must be one of {', '.join(get_args(Kind))}, got {kind!r}")
    GenerateConfig.check_values(values)
    sampled = {k: getattr(sampling, k) for k in ("temperature", "top_p", "max_tokens")}
    GenerateConfig.check_values(sampled, prefix="sampling.")


def to_items(prompts: Sequence[Prompt], kind: Kind) -> list[PromptItem]:
    """PromptItems with the CLI's ids; a repeated prompt takes the next sample number."""
    from charter.inputs.prompts import prompt_id, to_messages

    if isinstance(prompts, (str, PromptItem, dict)):
        raise ConfigError("prompts must be a list of prompts; wrap a single prompt in a list: [prompt]")
    prompts = list(prompts)
    if prompts and isinstance(prompts[0], dict):
        raise ConfigError("prompts must be a list of prompts, got one message list; wrap it in a list: [messages]")
    items, seen = [], {}
    for i, p in enumerate(prompts):
        if isinstance(p, PromptItem):
            items.append(p)
            continue
        if not isinstance(p, (str, list, tuple)):
            raise InputError(f"a prompt must be a string, a list of {{role, content}} messages or a PromptItem, "
                             f"got {type(p).__name__} {p!r:.60}", f"prompts[{i}]")
        msgs = to_messages(list(p) if isinstance(p, (list, tuple)) else p, f"prompts[{i}]", None)  # None: InputError
        key = json.dumps(msgs, sort_keys=True)
        sample = seen[key] = seen.get(key, -1) + 1
        items.append(PromptItem(prompt_id(kind, msgs, sample), kind, tuple(msgs), sample))
    ids = [it.id for it in items]
    if len(set(ids)) < len(ids):
        raise ConfigError("two PromptItems share an id; give each its own id (or its own sample number)")
    return items
