"""Typed, strict configuration: defaults < YAML file < CLI flags.

A setting is declared once, as a dataclass field made by `setting(default, help, ...)`: its YAML
key, type check, allowed values, range and flag (charter.cli.common) all follow from it. Unknown
keys are rejected with a suggestion, because a silently ignored typo ("round: 2") runs the wrong
experiment for hours.
"""
from __future__ import annotations

import copy
import dataclasses
import difflib
import hashlib
import json
import os
from dataclasses import field
from types import MappingProxyType, UnionType
from typing import Any, Mapping, Sequence, Union, get_args, get_origin, get_type_hints

from charter.errors import ConfigError, InputError
from charter.types import Sampling
from charter.yamlfile import BOOKKEEPING, key_line, read_yaml, strip_lines
# The YAML/data-file reader moved to charter.yamlfile; its names stay importable from here.

FORMATS = ("chat", "text")


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


def check_keys(data: dict, allowed: list[str], where: str, line: int | None = None, what: str = "key") -> None:
    for key in data:
        if key in BOOKKEEPING or key in allowed:
            continue
        hint = difflib.get_close_matches(str(key), allowed, n=1)
        tip = f" (did you mean '{hint[0]}'?)" if hint else f"; allowed {what}s: {', '.join(allowed)}"
        line = key_line(data, key) or line
        loc = f"{where}:{line}" if line else where
        raise ConfigError(f"{loc}: unknown {what} '{key}'{tip}")


# ---- one declaration per setting -----------------------------------------------------------------


def setting(default: Any = dataclasses.MISSING, help: str = "", *, choices: Sequence[str] | None = None,
            bounds: str | None = None, flag: str | dict | None = None, result: bool = True,
            cli: bool | dict = True, since: str | None = None) -> Any:
    """A config field and everything that follows from it: its flag, YAML checks and help.

    bounds: ">= 1", "> 0", "[0, 5]", "(0, 1]", "[0, 1)". flag: the flag's name ("--x"; no dashes:
    a positional), or {"--name": (const, help)} for store_const flags. result=False: changing it
    keeps a run resumable (not in the fingerprint). cli: False for no flag, or extra argparse kwargs.
    since: what added a result setting to a command that already had runs (a version or issue); at
    its default (which must give the old behaviour) it stays out of the fingerprint, so they resume."""
    meta = {"help": help, "choices": tuple(choices) if choices else None, "bounds": bounds, "flag": flag,
            "result": result, "cli": cli, "since": since}
    if isinstance(default, (dict, list)):
        return field(default_factory=lambda: copy.deepcopy(default), metadata=meta)
    return field(default=default, metadata=meta)


# The sampling settings, each declared here once (help, bounds, flag): a command gives its own
# default and what the setting applies to; Config.sampling() turns them into a Sampling.


def max_tokens_setting(default: int, per: str) -> Any:
    """max_tokens: the most tokens generated per `per` ("answer", "completion", ...)."""
    return setting(default, f"tokens per {per} (default {default})", bounds=">= 1")


def temperature_setting(default: float, of: str = "") -> Any:
    """temperature (0: greedy); `of`: what is sampled, when the command samples more than one thing."""
    shown = "0: greedy" if default == 0 else default
    return setting(default, f"sampling temperature{' of ' + of if of else ''} (default {shown})", bounds="[0, 5]")


def top_p_setting(default: float = 1.0) -> Any:
    return setting(default, f"nucleus sampling (default {default})", bounds="(0, 1]")


def seed_setting(seeds: str, default: int = 0) -> Any:
    """seed; `seeds`: what it seeds besides sampling ("principle draws and sampling")."""
    return setting(default, f"seeds {seeds} (default {default})")


def backend_setting(of: str) -> Any:
    """The engine a command opens its models on (`of`: which models); `auto` is resolved by
    charter.backends.open_model, where a model given as BACKEND:MODEL also picks its own."""
    return setting("auto", f"backend {of}: auto (default: llamacpp for a .gguf file, transformers for a short run, "
                   "else vllm where it imports) | transformers | vllm | llamacpp | openai | fake; "
                   "a model given as BACKEND:MODEL (e.g. vllm:embedded) picks its own")


SAMPLING_KEYS = ("max_tokens", "temperature", "top_p", "seed")


# Where a job runs, declared once for every job that runs on Ray (charter.pipeline.ray_executor).


def executor_setting() -> Any:
    return setting("local", "ray: shard prompts over Ray workers (RAY_ADDRESS picks the cluster)",
                   choices=("local", "ray"), result=False)


def workers_setting() -> Any:
    return setting(None, "ray: backend instances (default: one per CPU, or per GPU with num_gpus)",
                   bounds=">= 1", result=False)


def worker_resources_setting() -> Any:
    return setting({}, "ray: resources of each worker, e.g. {num_gpus: 1}", result=False, cli=False)


def in_bounds(value: float, bounds: str) -> bool:
    if bounds.startswith(">="):
        return value >= float(bounds[2:])
    if bounds.startswith(">"):
        return value > float(bounds[1:])
    low, high = (float(x) for x in bounds[1:-1].split(","))
    return (low <= value if bounds[0] == "[" else low < value) and (value <= high if bounds[-1] == "]" else value < high)


def flag_name(f: dataclasses.Field) -> str:
    """How a user sets the field on the command line ('--max-tokens', or 'RUN' for a positional)."""
    flag = f.metadata.get("flag")
    if isinstance(flag, dict):
        return " / ".join(flag)
    if isinstance(flag, str):
        return flag if flag.startswith("-") else flag.upper()
    return "--" + f.name.replace("_", "-")


def check_value(f: dataclasses.Field, value: Any, label: str) -> None:
    """A field's declared choices and bounds (None passes: the type check decides whether it may be None)."""
    choices, bounds = f.metadata.get("choices"), f.metadata.get("bounds")
    if value is not None and choices and value not in choices:
        raise ConfigError(f"{label} must be one of {', '.join(choices)}, got {value!r}")
    if value is not None and bounds and not in_bounds(value, bounds):
        raise ConfigError(f"{label} must be {bounds if bounds[0] == '>' else 'in ' + bounds}, got {value!r}")


class _NonResultKeys:
    """Class.NON_RESULT_KEYS: the fields declared with result=False."""

    def __get__(self, obj: Any, cls: type) -> tuple[str, ...]:
        if not dataclasses.is_dataclass(cls):  # Config itself (pydoc and inspect read it there too)
            return ()
        return tuple(f.name for f in dataclasses.fields(cls) if not f.metadata.get("result", True))


def describe(cls: type) -> str:
    """A config class's settings, one entry each: name, type, default, flag, allowed values and
    help, from the `setting` declarations (the class's help() and the docs' config reference)."""
    lines = []
    for f in dataclasses.fields(cls):
        if f.default_factory is not dataclasses.MISSING:
            default = f" = {f.default_factory()!r}"
        else:
            default = "" if f.default is dataclasses.MISSING else f" = {f.default!r}"
        rules = [flag_name(f) if f.metadata.get("cli", True) is not False else "no flag (YAML or Python only)"]
        if f.metadata.get("choices"):
            rules.append("one of " + ", ".join(f.metadata["choices"]))
        if f.metadata.get("bounds"):
            rules.append(f.metadata["bounds"])
        type_name = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))
        lines.append(f"    {f.name}: {type_name}{default}  [{'; '.join(rules)}]")
        if f.metadata.get("help"):
            lines.append(f"        {f.metadata['help']}")
    return "Settings (YAML keys and keyword arguments):\n" + "\n".join(lines)


class _Doc:
    """A config class's __doc__: its own docstring, then `describe` of its settings. Computed when
    read, because the dataclass fields exist only after the class body (and @dataclass) ran."""

    def __init__(self, text: str | None):
        self.text = text

    def __get__(self, obj: Any, cls: type) -> str | None:
        if not dataclasses.is_dataclass(cls):
            return self.text
        return "\n\n".join(part for part in (self.text, describe(cls)) if part)


class Config:
    """Base of every command's settings (a dataclass of `setting` fields): load, validate, fingerprint."""

    where = "config"  # where the settings came from, for messages (set by load)
    lines: Mapping[str, dict] = MappingProxyType({})  # {dict field: {key: YAML line}} (set by load)
    REQUIRED: tuple[str, ...] = ()  # fields that must be set (non-empty)
    NON_RESULT_KEYS = _NonResultKeys()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.__doc__ = _Doc(cls.__dict__.get("__doc__"))

    def __new__(cls, *args: Any, **kwargs: Any):
        """A misspelled keyword gets the YAML path's did-you-mean, not a bare TypeError."""
        if kwargs and dataclasses.is_dataclass(cls):
            check_keys(kwargs, [f.name for f in dataclasses.fields(cls) if f.init], cls.__name__, what="setting")
        return super().__new__(cls)

    def check(self, where: str) -> None:
        """Rules across fields (a subclass adds its own); single-field rules come from `setting`."""

    def validate(self, where: str | None = None, origins: dict[str, str] | None = None):
        """Check values; `origins` names where each key was set ('--rounds', 'run.yaml:3: rounds')."""
        where, hints = where or self.where, get_type_hints(type(self))
        for f in dataclasses.fields(self):  # the same type checks as YAML and flags get: a config made in Python
            label = (origins or {}).get(f.name) or f"{where}: {f.name}"
            value = _coerce(label, getattr(self, f.name), hints[f.name])
            setattr(self, f.name, value)
            if f.name in self.REQUIRED and not value:
                raise ConfigError(f"{where}: '{f.name}' is required (pass {flag_name(f)} or set it in the config file)")
            check_value(f, value, label)
        self.check(where)
        return self

    @classmethod
    def check_values(cls, values: Mapping[str, Any], prefix: str = "") -> None:
        """Check settings given one by one (a function's arguments) as `load` would; named prefix + field."""
        fields, hints = {f.name: f for f in dataclasses.fields(cls)}, get_type_hints(cls)
        for key, value in values.items():
            check_value(fields[key], _coerce(prefix + key, value, hints[key]), prefix + key)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def sampling(self, prefix: str = "") -> Sampling:
        """The Sampling its sampling settings give; `prefix` ("cot_") reads cot_max_tokens and the
        like where declared, else the plain setting. A setting the config lacks keeps Sampling's default."""
        names = {f.name for f in dataclasses.fields(self)}
        chosen = {key: prefix + key if prefix + key in names else key for key in SAMPLING_KEYS}
        return Sampling(**{key: getattr(self, name) for key, name in chosen.items() if name in names})

    def fingerprint(self, extra: str = "") -> str:
        d = self.to_dict()
        for f in dataclasses.fields(self):  # settings added later count only once moved off their default
            default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
            if f.metadata.get("since") and d[f.name] == default:
                del d[f.name]
        return fingerprint(d, self.NON_RESULT_KEYS, extra)

    @classmethod
    def load(cls, path: str | None = None, overrides: dict[str, Any] | None = None):
        """defaults < YAML file < overrides (flags); a dict setting merges key by key."""
        data = read_config_file(path)
        where = path or "command line"
        origins = key_origins(data, where)
        lines = {k: dict(v.get("__lines__") or {}) for k, v in data.items() if isinstance(v, dict) and k not in BOOKKEEPING}
        for key, value in (overrides or {}).items():
            if isinstance(value, dict):
                value = {k: v for k, v in value.items() if v is not None} or None
                if value and data.get(key) is not None:
                    if not isinstance(data[key], dict):
                        continue  # the file's value is wrong: its type error names the line
                    value = {**data[key], **value}
            if value is None:
                continue
            data[key] = value
            origins[key] = "--" + key.replace("_", "-")
        cfg = build_config(cls, data, where, origins)
        cfg.where, cfg.lines = where, lines
        return cfg.validate(where, origins)


def fingerprint(settings: dict[str, Any], ignore: tuple[str, ...], extra: str = "") -> str:
    """Hash of the settings that shape a run's results (plus resolved file contents), so a
    changed config on an existing output is noticed; `ignore` lists keys that may change."""
    d = {k: v for k, v in settings.items() if k not in ignore}
    return hashlib.sha256((json.dumps(d, sort_keys=True) + extra).encode()).hexdigest()[:16]


def _coerce(label: str, value: Any, typ: Any) -> Any:
    """Check a value against a field's type (bool is not an int; an int is a fine float; a path is
    fine text), list items against the item type, and a mapping's contents as plain data."""
    allowed = get_args(typ) if get_origin(typ) in (Union, UnionType) else (typ,)
    for t in allowed:
        base = get_origin(t) or t
        if t is type(None) and value is None:
            return None
        if base is float and isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if base is str and isinstance(value, os.PathLike):
            return os.fspath(value)
        if base is list and isinstance(value, list) and get_args(t):
            return [_coerce(f"{label}[{i}]", v, get_args(t)[0]) for i, v in enumerate(value)]
        if base is dict and isinstance(value, dict):
            return _plain(label, value)
        if base is not type(None) and isinstance(value, base) and (base is bool or not isinstance(value, bool)):
            return value
    names = " or ".join("null" if t is type(None) else getattr(get_origin(t) or t, "__name__", str(t)) for t in allowed)
    raise ConfigError(f"{label} must be {names}, got {value!r}")


PLAIN = (str, int, float, bool, type(None))


def _plain(label: str, value: Any) -> Any:
    """`value` if it holds only what YAML and JSON hold (a run's config.yaml is written from it)."""
    todo = [value]
    while todo:
        v = todo.pop()
        if isinstance(v, dict):
            todo += [*v, *v.values()]
        elif isinstance(v, list):
            todo += v
        elif not isinstance(v, PLAIN):
            raise ConfigError(f"{label} must hold plain values (text, numbers, true/false, null, lists, mappings), "
                              f"got {v!r}")
    return value


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
