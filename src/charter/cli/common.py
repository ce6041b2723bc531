"""What the commands share: flags made from config fields, --config, backend options.

A command's flags come from its config dataclass (charter.config.setting declares each field
once); `given` reads back the flags that were passed, so defaults < YAML file < flags holds.
"""
from __future__ import annotations

import argparse
import dataclasses
from types import UnionType
from typing import Any, Sequence, Union, get_args, get_origin, get_type_hints

from charter.yamlfile import parse_yaml
from charter.config import strip_lines
from charter.errors import ConfigError


def add_config(p: argparse.ArgumentParser, what: str) -> None:
    p.add_argument("--config", help=f"YAML file of {what} settings (flags override it)")


def add_settings(p: argparse.ArgumentParser, cls: type, skip: Sequence[str] = ()) -> None:
    """One flag (or positional) per field of the config dataclass `cls`, in field order."""
    hints = get_type_hints(cls)
    for f in dataclasses.fields(cls):
        meta = f.metadata
        if f.name in skip or meta.get("cli", True) is False:
            continue
        flag, typ = meta.get("flag"), _base(hints[f.name])
        if isinstance(flag, dict):  # {"--lora": (True, help), "--full": (False, help)}
            group = p.add_mutually_exclusive_group() if len(flag) > 1 else p
            for name, (const, text) in flag.items():
                group.add_argument(name, dest=f.name, action="store_const", const=const, help=text)
        elif typ is bool:
            dash = f.name.replace("_", "-")
            name = flag or (f"--no-{dash}" if f.default is True else f"--{dash}")
            p.add_argument(name, dest=f.name, action="store_const", const=not f.default, help=meta.get("help"))
        elif typ is not dict:  # mappings are set in the YAML file (or by a command's own flags)
            _add_value(p, f, typ, flag)


def _add_value(p: argparse.ArgumentParser, f: dataclasses.Field, typ: type, flag: str | None) -> None:
    meta = f.metadata
    kw: dict[str, Any] = {"help": meta.get("help"), **(meta["cli"] if isinstance(meta.get("cli"), dict) else {})}
    if meta.get("choices"):
        kw["choices"] = list(meta["choices"])
    if typ in (int, float):
        kw["type"] = typ
    name = flag or "--" + f.name.replace("_", "-")
    if not name.startswith("-"):  # a positional: optional, so a config file may set it instead
        kw.setdefault("nargs", "*" if typ is list else "?")
        p.add_argument(f.name, **kw)
        return
    if typ is list and "action" not in kw:
        kw.setdefault("nargs", "+")
    p.add_argument(name, dest=f.name, **kw)


def _base(typ: Any) -> type:
    """int | None -> int; list[str] -> list."""
    if get_origin(typ) in (Union, UnionType):
        typ = next(t for t in get_args(typ) if t is not type(None))
    return get_origin(typ) or typ


def given(a: argparse.Namespace, cls: type) -> dict[str, Any]:
    """The config fields the user set on the command line (unset flags are None, or [] for lists)."""
    values = vars(a)
    return {f.name: values[f.name] for f in dataclasses.fields(cls)
            if values.get(f.name) is not None and values.get(f.name) != []}


def add_backend_option(p: argparse.ArgumentParser, help: str | None = None) -> None:
    p.add_argument("--backend-option", action="append", default=[], metavar="KEY=VALUE", help=help)


def parse_backend_options(pairs: Sequence[str]) -> dict:
    """--backend-option KEY=VALUE pairs (VALUE parsed as YAML, aliases capped) -> constructor options."""
    options = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--backend-option expects KEY=VALUE, got '{pair}'")
        options[key.strip()] = strip_lines(parse_yaml(value, f"--backend-option {key.strip()}"))
    return options
