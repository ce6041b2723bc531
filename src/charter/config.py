"""Typed, strict configuration: defaults < YAML file < CLI flags.

Unknown keys are rejected with a suggestion, because a silently ignored typo ("round: 2") runs
the wrong experiment for hours.
"""
from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from types import UnionType
from typing import Any, Union, get_args, get_origin, get_type_hints

import yaml

from charter.errors import ConfigError, InputError

FORMATS = ("chat", "text")
CONTEXTS = ("full", "latest")


class _LineLoader(yaml.SafeLoader):
    """SafeLoader that remembers the line of every mapping (key '__line__')."""


def _construct_mapping(loader: _LineLoader, node: yaml.MappingNode) -> dict:
    mapping = loader.construct_mapping(node, deep=True)
    mapping["__line__"] = node.start_mark.line + 1
    return mapping


_LineLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def read_yaml(path: str | Path) -> Any:
    """Parse YAML; mappings carry '__line__' so later errors can point at the line."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise InputError(f"cannot read file ({exc.strerror}); check the path", str(path)) from exc
    try:
        return yaml.load(text, Loader=_LineLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark else None
        problem = getattr(exc, "problem", None) or str(exc)
        raise InputError(f"invalid YAML: {problem}; fix the syntax", str(path), line) from exc


def read_data_file(path: Path) -> Any:
    """A JSON or YAML data file (constitutions, few-shots, feedback sets), errors with the line."""
    if not path.exists():
        raise InputError("file not found; check the path (or use 'default')", str(path))
    if path.suffix.lower() == ".json":
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise InputError(f"invalid JSON ({exc.msg}); fix the file", str(path), exc.lineno) from exc
    return read_yaml(path)


def require_text(value: Any, what: str, where: str, line: int | None) -> str:
    if not isinstance(value, str) or not value.strip():
        raise InputError(f"{what} must be non-empty text", where, line)
    return value.strip()


def read_config_file(path: str | None) -> dict[str, Any]:
    """A YAML config file as a mapping ({} without a path)."""
    if not path:
        return {}
    raw = read_yaml(path) or {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: a config file must be a mapping of keys to values")
    return raw


def strip_lines(value: Any) -> Any:
    """Drop the '__line__' bookkeeping keys (recursively)."""
    if isinstance(value, dict):
        return {k: strip_lines(v) for k, v in value.items() if k != "__line__"}
    if isinstance(value, list):
        return [strip_lines(v) for v in value]
    return value


def check_keys(data: dict, allowed: list[str], where: str, line: int | None = None) -> None:
    for key in data:
        if key == "__line__" or key in allowed:
            continue
        hint = difflib.get_close_matches(str(key), allowed, n=1)
        tip = f" (did you mean '{hint[0]}'?)" if hint else f"; allowed keys: {', '.join(allowed)}"
        line = data.get("__line__", line)
        loc = f"{where}:{line}" if line else where
        raise ConfigError(f"{loc}: unknown key '{key}'{tip}")


@dataclass
class GenerateConfig:
    """Everything that defines a `charter generate` run."""

    model: str = "embedded"
    backend: str = "transformers"
    backend_options: dict[str, Any] = field(default_factory=dict)
    prompts: str = "default"
    helpful_prompts: str = "default"  # "none" disables helpfulness samples
    prompt_field: str | None = None
    constitution: str = "default"
    few_shot: str = "default"  # "none" disables; "default" = the constitution's own or ours
    format: str = "chat"
    rounds: int = 4
    critique: bool = True
    context: str = "full"  # round k sees: "full" = every earlier round; "latest" = the latest revision only
    helpful_samples: int = 2
    limit: int | None = None
    seed: int = 0
    temperature: float = 1.0
    top_p: float = 1.0
    max_tokens: int = 256
    batch_size: int = 16
    out: str = "runs/default"
    executor: str = "local"  # "ray": shard prompts over Ray workers (RAY_ADDRESS picks the cluster)
    workers: int | None = None  # ray: backend instances (default: one per 1 CPU / GPU available)
    worker_resources: dict[str, Any] = field(default_factory=dict)  # ray: e.g. {num_gpus: 1}

    # Keys that do not change what a run produces; editing them keeps a run resumable.
    NON_RESULT_KEYS = ("backend_options", "limit", "batch_size", "out", "executor", "workers", "worker_resources")

    def validate(self, where: str = "config") -> "GenerateConfig":
        from charter.backends import check_backend_name

        check_backend_name(self.backend)
        if self.executor not in ("local", "ray"):
            raise ConfigError(f"{where}: executor must be 'local' or 'ray', not '{self.executor}'")
        if self.context not in CONTEXTS:
            raise ConfigError(f"{where}: context must be one of {CONTEXTS}, not '{self.context}'")
        if self.format not in FORMATS:
            raise ConfigError(f"{where}: format must be one of {FORMATS}, not '{self.format}'")
        for name in ("rounds", "helpful_samples", "max_tokens", "batch_size"):
            low = 0 if name in ("rounds", "helpful_samples") else 1
            if getattr(self, name) < low:
                raise ConfigError(f"{where}: {name} must be >= {low}, got {getattr(self, name)}")
        if self.limit is not None and self.limit < 0:
            raise ConfigError(f"{where}: limit must be >= 0")
        if not 0 <= self.temperature <= 5 or not 0 < self.top_p <= 1:
            raise ConfigError(f"{where}: temperature must be in [0, 5] and top_p in (0, 1]")
        return self

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def fingerprint(self, extra: str = "") -> str:
        return fingerprint(self.to_dict(), self.NON_RESULT_KEYS, extra)


def fingerprint(settings: dict[str, Any], ignore: tuple[str, ...], extra: str = "") -> str:
    """Hash of the settings that shape a run's results (plus resolved file contents), so a
    changed config on an existing output is noticed; `ignore` lists keys that may change."""
    d = {k: v for k, v in settings.items() if k not in ignore}
    return hashlib.sha256((json.dumps(d, sort_keys=True) + extra).encode()).hexdigest()[:16]


def _coerce(name: str, value: Any, typ: Any, where: str) -> Any:
    """Check a value against a field's type (bool is not an int; an int is a fine float)."""
    allowed = get_args(typ) if get_origin(typ) in (Union, UnionType) else (typ,)
    for t in allowed:
        base = get_origin(t) or t
        if t is type(None) and value is None:
            return None
        if base is float and isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if base is not type(None) and isinstance(value, base) and (base is bool or not isinstance(value, bool)):
            return value
    names = " or ".join("null" if t is type(None) else getattr(get_origin(t) or t, "__name__", str(t)) for t in allowed)
    raise ConfigError(f"{where}: '{name}' must be {names}, got {value!r}")


def build_config(cls, data: dict[str, Any], where: str):
    """Make a dataclass config from a mapping, rejecting unknown keys and wrong types."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    check_keys(data, list(fields), where)
    hints = get_type_hints(cls)
    values = {}
    for key, value in data.items():
        if key == "__line__":
            continue
        loc = f"{where}:{data['__line__']}" if "__line__" in data else where
        values[key] = _coerce(key, strip_lines(value), hints[key], loc)
    return cls(**values)


def load_generate_config(path: str | None, overrides: dict[str, Any]) -> GenerateConfig:
    data = read_config_file(path)
    for key, value in overrides.items():
        if value is None:
            continue
        if key == "backend_options" and isinstance(data.get(key), dict):
            value = {**data[key], **value}  # flags add to the file's options
        data[key] = value
    where = path or "command line"
    return build_config(GenerateConfig, data, where).validate(where)
