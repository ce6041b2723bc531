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
    """SafeLoader that remembers where things are: every mapping gets '__line__' (its first line)
    and '__lines__' ({key: line}), so errors can point at the offending key; duplicate keys are
    rejected (YAML would silently keep the last one)."""


_MERGE_TAG = "tag:yaml.org,2002:merge"


def _construct_mapping(loader: _LineLoader, node: yaml.MappingNode) -> dict:
    lines: dict[Any, int] = {}
    for key_node, _ in node.value:
        if key_node.tag == _MERGE_TAG:
            continue  # '<<: *base' may override keys on purpose
        key = loader.construct_object(key_node, deep=True)
        try:
            if key in lines:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key '{key}' (first set on line {lines[key]}); keep only one",
                    key_node.start_mark)
            lines[key] = key_node.start_mark.line + 1
        except TypeError:  # an unhashable key: construct_mapping reports it below
            pass
    mapping = loader.construct_mapping(node, deep=True)
    mapping["__line__"] = node.start_mark.line + 1
    mapping["__lines__"] = lines
    return mapping


_LineLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)
BOOKKEEPING = ("__line__", "__lines__")


def key_line(data: dict, key: Any) -> int | None:
    """The line of `key` in a mapping read by read_yaml (the mapping's own line as a fallback)."""
    return (data.get("__lines__") or {}).get(key, data.get("__line__"))


def read_text(path: str | Path) -> str:
    """A UTF-8 text file (a leading BOM is dropped); unreadable or non-UTF-8 files are InputErrors."""
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError as exc:
        raise InputError("file not found; check the path", str(path)) from exc
    except IsADirectoryError as exc:
        raise InputError("is a directory; pass a file", str(path)) from exc
    except OSError as exc:
        raise InputError(f"cannot read file ({exc.strerror}); check the path and its permissions", str(path)) from exc
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise InputError(f"byte 0x{data[exc.start]:02x} at offset {exc.start} is not UTF-8; re-save the file as UTF-8",
                         str(path), line) from exc


def read_yaml(path: str | Path) -> Any:
    """Parse YAML; mappings carry '__line__' / '__lines__' so later errors can point at the line."""
    text = read_text(path)
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
            return json.loads(read_text(path))
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
        raise ConfigError(f"{path}: a config file must be a mapping of keys to values (key: value lines)")
    return raw


def strip_lines(value: Any) -> Any:
    """Drop the '__line__' / '__lines__' bookkeeping keys (recursively)."""
    if isinstance(value, dict):
        return {k: strip_lines(v) for k, v in value.items() if k not in BOOKKEEPING}
    if isinstance(value, list):
        return [strip_lines(v) for v in value]
    return value


def check_keys(data: dict, allowed: list[str], where: str, line: int | None = None) -> None:
    for key in data:
        if key in BOOKKEEPING or key in allowed:
            continue
        hint = difflib.get_close_matches(str(key), allowed, n=1)
        tip = f" (did you mean '{hint[0]}'?)" if hint else f"; allowed keys: {', '.join(allowed)}"
        line = key_line(data, key) or line
        loc = f"{where}:{line}" if line else where
        raise ConfigError(f"{loc}: unknown key '{key}'{tip}")


@dataclass
class GenerateConfig:
    """Everything that defines a `charter generate` run."""

    model: str = "embedded"
    backend: str = "auto"  # vllm where it imports, else transformers (backends.resolve_backend)
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

    def validate(self, where: str = "config", origins: dict[str, str] | None = None) -> "GenerateConfig":
        """Check values; `origins` names where each key was set ('--rounds', 'run.yaml:3: rounds')."""
        from charter.backends import check_backend_name

        def bad(key: str, rule: str) -> ConfigError:
            label = (origins or {}).get(key) or f"{where}: {key}"
            return ConfigError(f"{label} must be {rule}, got {getattr(self, key)!r}")

        check_backend_name(self.backend)
        for key, choices in (("executor", ("local", "ray")), ("context", CONTEXTS), ("format", FORMATS)):
            if getattr(self, key) not in choices:
                raise bad(key, "one of " + ", ".join(choices))
        for key, low in (("rounds", 0), ("helpful_samples", 0), ("max_tokens", 1), ("batch_size", 1),
                         ("limit", 1), ("workers", 1)):
            if getattr(self, key) is not None and getattr(self, key) < low:
                raise bad(key, f">= {low}")
        if not 0 <= self.temperature <= 5:
            raise bad("temperature", "in [0, 5]")
        if not 0 < self.top_p <= 1:
            raise bad("top_p", "in (0, 1]")
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


def _coerce(label: str, value: Any, typ: Any) -> Any:
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
    raise ConfigError(f"{label} must be {names}, got {value!r}")


def key_origins(data: dict[str, Any], where: str) -> dict[str, str]:
    """Where each key of a file was set, for messages: 'run.yaml:3: max_tokens'."""
    return {k: f"{where}:{key_line(data, k)}: {k}" if key_line(data, k) else f"{where}: {k}"
            for k in data if k not in BOOKKEEPING}


def build_config(cls, data: dict[str, Any], where: str, origins: dict[str, str] | None = None):
    """Make a dataclass config from a mapping, rejecting unknown keys and wrong types."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    check_keys(data, list(fields), where)
    hints = get_type_hints(cls)
    origins = origins or key_origins(data, where)
    values = {}
    for key, value in data.items():
        if key not in BOOKKEEPING:
            values[key] = _coerce(origins.get(key, f"{where}: {key}"), strip_lines(value), hints[key])
    return cls(**values)


def load_generate_config(path: str | None, overrides: dict[str, Any]) -> GenerateConfig:
    data = read_config_file(path)
    where = path or "command line"
    origins = key_origins(data, where)
    for key, value in overrides.items():
        if value is None:
            continue
        if key == "backend_options" and isinstance(data.get(key), dict):
            value = {**data[key], **value}  # flags add to the file's options
        data[key] = value
        origins[key] = "--" + key.replace("_", "-")
    return build_config(GenerateConfig, data, where, origins).validate(where, origins)
