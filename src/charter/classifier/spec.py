"""A classifier constitution: restricted and permitted content categories (arXiv 2501.18837, §3).

The file is YAML (or JSON) of our own shape, read strictly: an unknown key is an InputError
with its file, line and a did-you-mean, as Charter's other inputs are.

    name: charter-guard-default
    restricted:
      - {id: cyberattacks, description: "...", examples: ["...", "..."]}
    permitted:
      - {id: security-defence, description: "...", examples: ["..."]}

Restricted categories give label 1 (what a guard stops), permitted ones label 0.
"""
from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from charter.errors import InputError
from charter.yamlfile import BOOKKEEPING, key_line, read_data_file

DEFAULT = Path(__file__).parents[1] / "data" / "classifier_constitution.yaml"
TOP_KEYS = ["name", "version", "description", "restricted", "permitted"]
CATEGORY_KEYS = ["id", "description", "examples"]
KINDS = ("restricted", "permitted")
_ID = re.compile(r"[a-z0-9][a-z0-9_-]*")  # ids name rows and files: no spaces or colons


@dataclass(frozen=True)
class Category:
    """One content category; `restricted` categories give label 1."""

    id: str
    description: str
    examples: tuple[str, ...]
    restricted: bool

    @property
    def label(self) -> int:
        return int(self.restricted)


@dataclass(frozen=True)
class ClassifierConstitution:
    name: str
    restricted: tuple[Category, ...]
    permitted: tuple[Category, ...]
    description: str = ""
    version: int | str | None = None
    source: str = ""

    @property
    def categories(self) -> tuple[Category, ...]:
        """Restricted, then permitted, in file order."""
        return self.restricted + self.permitted

    def category(self, cid: str) -> Category:
        for c in self.categories:
            if c.id == cid:
                return c
        raise KeyError(cid)


def load_classifier_constitution(source: str | Path = "default") -> ClassifierConstitution:
    """'default' (Charter's own, data/classifier_constitution.yaml) or a path to a YAML/JSON file."""
    from charter.runs.files import check_input

    path = DEFAULT if str(source) == "default" else Path(source)
    if path.exists():
        check_input(path, "classifier constitution")  # a device or pipe would never end
    data, where = read_data_file(path), str(path)
    if not isinstance(data, dict):
        raise InputError("a classifier constitution must be a mapping with 'restricted' and 'permitted' lists",
                         where, None)
    check_keys(data, TOP_KEYS, where, data.get("__line__"))
    lists = {kind: _categories(data, kind, where) for kind in KINDS}
    _unique([c.id for kind in KINDS for c in lists[kind]], where)
    name = data.get("name", path.stem)
    if not isinstance(name, str) or not name.strip():
        raise InputError("'name' must be non-empty text", where, key_line(data, "name"))
    description = _text(data.get("description", ""), "'description'", where, key_line(data, "description"), True)
    version = data.get("version")
    if isinstance(version, bool) or not isinstance(version, (int, str, type(None))):
        raise InputError(f"'version' must be a number or text, got {version!r}", where, key_line(data, "version"))
    return ClassifierConstitution(name.strip(), lists["restricted"], lists["permitted"], description, version, where)


def check_keys(data: dict, allowed: list[str], where: str, line: int | None) -> None:
    """Unknown keys are an InputError at their line, with the closest allowed key suggested."""
    for key in data:
        if key in BOOKKEEPING or key in allowed:
            continue
        hint = difflib.get_close_matches(str(key), allowed, n=1)
        tip = f" (did you mean '{hint[0]}'?)" if hint else f"; allowed keys: {', '.join(allowed)}"
        raise InputError(f"unknown key '{key}'{tip}", where, key_line(data, key) or line)


def _categories(data: dict, kind: str, where: str) -> tuple[Category, ...]:
    items, line = data.get(kind), key_line(data, kind)
    if not isinstance(items, list) or not items:
        raise InputError(f"'{kind}' must be a non-empty list of categories ({{id, description, examples}}); a "
                         "classifier learns the line between the two kinds only when it sees both", where, line)
    return tuple(_category(item, kind, where, line) for item in items)


def _category(item: Any, kind: str, where: str, line: int | None) -> Category:
    if not isinstance(item, dict):
        raise InputError(f"each {kind} category must be a mapping with {', '.join(CATEGORY_KEYS)}, "
                         f"got {type(item).__name__}", where, line)
    line = item.get("__line__", line)
    check_keys(item, CATEGORY_KEYS, where, line)
    cid = item.get("id")
    if not isinstance(cid, str) or not _ID.fullmatch(cid):
        raise InputError(f"category id must be lower-case letters, digits, '-' or '_' (e.g. 'cyberattacks'), "
                         f"got {cid!r}", where, key_line(item, "id"))
    description = _text(item.get("description"), f"category '{cid}': 'description'", where,
                        key_line(item, "description"))
    examples = item.get("examples")
    if not isinstance(examples, list) or not examples:
        raise InputError(f"category '{cid}': 'examples' must be a non-empty list of example requests", where,
                         key_line(item, "examples"))
    texts = tuple(_text(e, f"category '{cid}': each example", where, key_line(item, "examples")) for e in examples)
    return Category(cid, description, texts, kind == "restricted")


def _text(value: Any, what: str, where: str, line: int | None, empty: bool = False) -> str:
    if not isinstance(value, str) or not (value.strip() or empty):
        raise InputError(f"{what} must be non-empty text, got {value!r}", where, line)
    return value.strip()


def _unique(ids: list[str], where: str) -> None:
    dupes = sorted({i for i in ids if ids.count(i) > 1})
    if dupes:
        raise InputError(f"duplicate category ids: {', '.join(dupes)}; make each id unique across restricted "
                         "and permitted", where, None)


__all__ = ["Category", "ClassifierConstitution", "load_classifier_constitution"]
