"""Backends registered by name; heavy libraries are imported only when one is created."""
from __future__ import annotations

import difflib
import importlib
from typing import Any

from charter.backends.base import Backend
from charter.errors import BackendError

BACKENDS: dict[str, str] = {
    "transformers": "charter.backends.hf:HFBackend",
    "llamacpp": "charter.backends.llamacpp:LlamaCppBackend",
    "fake": "charter.backends.fake:FakeBackend",
}

# What to install when a backend's module is missing.
EXTRAS = {"llamacpp": "xllamacpp", "openai": "openai", "vllm": "vllm"}

DEFAULT_BACKEND = "transformers"


def check_backend_name(name: str) -> None:
    if name not in BACKENDS:
        hint = difflib.get_close_matches(name, BACKENDS, n=1)
        tip = f" (did you mean '{hint[0]}'?)" if hint else ""
        raise BackendError(f"unknown backend '{name}'{tip}; choose one of: {', '.join(BACKENDS)}")


def create_backend(name: str, model: str, **options: Any) -> Backend:
    check_backend_name(name)
    module_name, cls_name = BACKENDS[name].split(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        extra = EXTRAS.get(name, name)
        raise BackendError(
            f"backend '{name}' needs a missing package ({exc.name}); pip install 'charter[{extra}]'"
        ) from exc
    return getattr(module, cls_name)(model, **options)
