"""Reading YAML and JSON data files with line numbers, strictly.

Mappings remember the line of each key ('__line__' / '__lines__') so later checks can point at
file:line; duplicate keys, nesting deeper than MAX_DEPTH and aliases that blow a document up
("billion laughs") are refused as InputErrors. charter.config builds configs on top of this.
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml

from charter.errors import InputError
from charter.jsonl import MAX_DEPTH, TooDeep, loads


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
    """Parse a YAML file; mappings carry '__line__' / '__lines__' so later errors can point at the line."""
    return parse_yaml(read_text(path), str(path))


def parse_yaml(text: str, where: str) -> Any:
    """Parse YAML text (from `where`, for messages): too deep, or aliases that explode, are InputErrors."""
    loader = _LineLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        check_nodes(node, where)
        return loader.construct_document(node)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark else None
        problem = getattr(exc, "problem", None) or str(exc)
        raise InputError(f"invalid YAML: {problem}; fix the syntax", where, line) from exc
    except RecursionError as exc:  # the composer recurses per nesting level
        raise InputError(f"YAML nested deeper than {MAX_DEPTH} levels; flatten it", where,
                         loader.get_mark().line + 1) from exc
    finally:
        loader.dispose()


# An alias is one shared object when loaded, but every later step (checks, asdict, the run's
# config.yaml) copies it out: nine levels of ten aliases ("billion laughs") grew to 4 GB. Merges
# ('<<: *base') and a few reused values add little, so cap what aliases add, not aliases.
MAX_ALIAS_GROWTH = 100_000  # values + characters that aliases may add to what the file spells out


def _children(node: yaml.Node) -> list:
    if isinstance(node, yaml.SequenceNode):
        return node.value
    if isinstance(node, yaml.MappingNode):
        return [n for pair in node.value for n in pair]
    return []


def _weight(node: yaml.Node) -> int:
    return 1 + (len(node.value) if isinstance(node, yaml.ScalarNode) else 0)


_SURROGATE = re.compile("[\ud800-\udfff]")  # only a "\\ud800" escape makes one: no writer accepts it


def check_nodes(root: yaml.Node, where: str) -> None:
    """Refuse nesting deeper than MAX_DEPTH, recursive aliases, aliases that blow the document up,
    and lone surrogates ("\\ud800": text no UTF-8 writer accepts)."""
    written, seen, todo = 0, set(), [(root, 1)]
    while todo:  # the document as written (each node once); iterative: no recursion on deep input
        node, depth = todo.pop()
        if depth > MAX_DEPTH:
            raise InputError(f"YAML nested deeper than {MAX_DEPTH} levels; flatten it", where, node.start_mark.line + 1)
        if id(node) not in seen:
            seen.add(id(node))
            written += _weight(node)
            if isinstance(node, yaml.ScalarNode) and (m := _SURROGATE.search(node.value)):
                raise InputError(f"\\u{ord(m.group()):04x} is half of a surrogate pair, not a character; write "
                                 "the character itself", where, node.start_mark.line + 1)
            todo += [(c, depth + 1) for c in _children(node)]
    limit, size, height, active, stack = written + MAX_ALIAS_GROWTH, {}, {}, set(), [(root, False)]
    while stack:  # the document as later steps see it: every alias copied out (memoised)
        node, done = stack.pop()
        line = node.start_mark.line + 1
        if done:
            active.discard(id(node))
            size[id(node)] = _weight(node) + sum(size[id(c)] for c in _children(node))
            height[id(node)] = 1 + max((height[id(c)] for c in _children(node)), default=0)
            if size[id(node)] > limit:
                raise InputError(f"YAML aliases (*name) expand this document by more than {MAX_ALIAS_GROWTH:,} "
                                 "values and characters; write the values out instead", where, line)
            if height[id(node)] > MAX_DEPTH:  # aliases nest copies inside copies
                raise InputError(f"YAML nested deeper than {MAX_DEPTH} levels; flatten it", where, line)
        elif id(node) in active:
            raise InputError("a YAML alias refers to a value that contains it; remove the recursive alias", where, line)
        elif id(node) not in size:
            active.add(id(node))
            stack += [(node, True)] + [(c, False) for c in _children(node)]


def read_data_file(path: Path) -> Any:
    """A JSON or YAML data file (constitutions, few-shots, feedback sets), errors with the line."""
    if not path.exists():
        raise InputError("file not found; check the path (or use 'default')", str(path))
    if path.suffix.lower() == ".json":
        try:
            return loads(read_text(path))
        except json.JSONDecodeError as exc:
            raise InputError(f"invalid JSON ({exc.msg}); fix the file", str(path), exc.lineno) from exc
        except TooDeep as exc:
            raise InputError(f"invalid JSON ({exc}); flatten it", str(path), exc.lineno) from exc
    return read_yaml(path)


def strip_lines(value: Any) -> Any:
    """Drop the '__line__' / '__lines__' bookkeeping keys (recursively)."""
    if isinstance(value, dict):
        return {k: strip_lines(v) for k, v in value.items() if k not in BOOKKEEPING}
    if isinstance(value, list):
        return [strip_lines(v) for v in value]
    return value
