"""Backends registered by name; heavy libraries are imported only when one is created."""
from __future__ import annotations

import difflib
import importlib
import importlib.util
import inspect
import logging
from typing import Any

from charter.backends.base import Backend
from charter.errors import BackendError

log = logging.getLogger("charter.backends")

BACKENDS: dict[str, str] = {
    "transformers": "charter.backends.hf:HFBackend",
    "llamacpp": "charter.backends.llamacpp:LlamaCppBackend",
    "openai": "charter.backends.openai_backend:OpenAIBackend",
    "vllm": "charter.backends.vllm_backend:VLLMBackend",
    "fake": "charter.backends.fake:FakeBackend",
}

# What to install when a backend's module is missing.
EXTRAS = {"llamacpp": "xllamacpp", "openai": "openai", "vllm": "vllm"}

AUTO = "auto"  # the default of every command: auto_choice picks the engine
NAMES = [AUTO, *BACKENDS]


def check_backend_name(name: str) -> None:
    if name not in NAMES:
        hint = difflib.get_close_matches(name, NAMES, n=1)
        tip = f" (did you mean '{hint[0]}'?)" if hint else ""
        raise BackendError(f"unknown backend '{name}'{tip}; choose one of: {', '.join(NAMES)}")


def vllm_imports() -> bool:
    """Whether vLLM imports here (a real import: a broken install must not be picked)."""
    if importlib.util.find_spec("vllm") is None:
        return False
    from charter.backends.engine_site.sitecustomize import quiet_notices

    try:
        with quiet_notices():  # vLLM's import-time notices (a Triton one on CPU)
            importlib.import_module("vllm")
    except Exception:  # a broken install (e.g. mismatched torchvision) raises anything
        return False
    return True


# `auto` on a short run: a run that can generate at most this many tokens (requests x max_tokens)
# finishes first on transformers, which starts in seconds, than on vLLM, whose start takes half a
# minute on a CPU and which then generates about 9x faster: the break-even of the two (README,
# Benchmarks: bench/engine.py) on a 2-core CPU.
AUTO_SHORT_RUN_TOKENS = 512
# What one scored multiple-choice question (few-shot block and all) weighs in that budget: it
# generates nothing, yet transformers takes as long on it as on ~20 generated tokens, while vLLM
# reads it off its prefix cache (bench/label.py).
SCORED_QUESTION_TOKENS = 20


def auto_choice(model: str, budget: int | None = None) -> tuple[str, str]:
    """The backend `auto` stands for, and why: llama.cpp for GGUF files; transformers for a run
    of at most AUTO_SHORT_RUN_TOKENS tokens (`budget`, when known); else vLLM where it imports,
    else transformers."""
    if model.lower().endswith(".gguf") and not model.startswith("hf:"):
        return "llamacpp", "a GGUF file"
    if budget is not None and budget <= AUTO_SHORT_RUN_TOKENS:
        return "transformers", (f"a short run: at most {budget} tokens, which transformers finishes before "
                                f"vLLM has started (break-even ~{AUTO_SHORT_RUN_TOKENS})")
    if vllm_imports():
        return "vllm", "vLLM imports here"
    return "transformers", "no vLLM here"


def resolve_backend(name: str, model: str, budget: int | None = None) -> str:
    """`name`, or the backend `auto` stands for (auto_choice, logged with why); `budget`: the most
    tokens the run can generate (requests x max_tokens), if known."""
    if name != AUTO:
        return name
    chosen, why = auto_choice(model, budget)
    log.info("backend auto -> %s (%s)", chosen, why)
    return chosen


def split_spec(spec: str, backend: str = AUTO) -> tuple[str, str]:
    """'BACKEND:MODEL' -> (BACKEND, MODEL) when BACKEND is a registered name or `auto`; anything
    else (a path, a hub id ORG/NAME, hf:ORG/NAME) is a model on `backend`."""
    name, sep, model = spec.partition(":")
    if sep and model and name in NAMES:
        return name, model
    return backend, spec


def open_model(spec: str, backend: str = AUTO, workload: int | None = None, budget: int | None = None,
               **options: Any) -> Backend:
    """The one way a command opens a model: `spec` is MODEL (on `backend`) or BACKEND:MODEL;
    `auto` is resolved here with the run's token `budget` (requests x max_tokens, when known);
    `workload` (requests) and `options` go to create_backend."""
    name, model = split_spec(spec, backend)
    check_backend_name(name)
    return create_backend(resolve_backend(name, model, budget), model, workload=workload, **options)


def create_backend(name: str, model: str, workload: int | None = None, **options: Any) -> Backend:
    """Backend `name` (a registered name; `auto` resolves with no budget) on `model`. `workload`
    (requests the run will make, if known) lets a backend pick settings that pay off only on long
    runs (vLLM on CPU: compiling); `options` win. Commands open models with open_model."""
    check_backend_name(name)
    name = resolve_backend(name, model)
    module_name, cls_name = BACKENDS[name].split(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        extra = EXTRAS.get(name, name)
        raise BackendError(
            f"backend '{name}' needs a missing package ({exc.name}); pip install 'charter[{extra}]'"
        ) from exc
    cls: type[Backend] = getattr(module, cls_name)
    check_options(name, cls, options)
    return cls(model, **{**cls.workload_options(workload), **options})


def check_options(name: str, cls: type, options: dict[str, Any]) -> None:
    params = inspect.signature(cls.__init__).parameters
    if any(p.kind is p.VAR_KEYWORD for p in params.values()):
        return  # the backend passes extra options through to its engine, which checks them
    allowed = [p for p in params if p not in ("self", "model")]
    for key in options:
        if key not in allowed:
            hint = difflib.get_close_matches(key, allowed, n=1)
            tip = f" (did you mean '{hint[0]}'?)" if hint else ""
            raise BackendError(f"unknown option '{key}' for backend '{name}'{tip}; options: {', '.join(allowed)}")
