"""Labelled examples for a guard classifier, read from any JSONL or Parquet file and checked row by row.

A row holds what to score, in `text` (a prompt) or `messages` (a conversation: role/content turns;
for an output classifier it ends with the answer), a label (0/1, true/false, "harmful"/"harmless")
and optionally a `category` and a `kind` ("input"/"output": which classifier the row is for; as
`charter train classifier` reads it, a row without one is an output row when its messages end with
an assistant turn, else an input row). A bad row is an InputError naming the file and its line
(Parquet: its row), before any model loads.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from charter.errors import InputError

LABELS = {"harmful": 1, "harmless": 0, "1": 1, "0": 0, "true": 1, "false": 0}
KINDS = ("input", "output")


@dataclass(frozen=True)
class Example:
    messages: list[dict[str, str]]  # what the classifier reads; a text is one user turn
    label: int  # 1 harmful, 0 harmless
    category: str  # "" when the row has none
    kind: str  # the classifier the row is for: "input" or "output"
    path: str
    line: int | None  # JSONL line (None for Parquet, whose rows are named in messages)


def data_file(path: str | Path) -> Path:
    """`path`, or the test split in a directory `charter classifier data` wrote."""
    p = Path(path)
    if p.is_dir():
        if not (p / "test.jsonl").is_file():
            raise InputError("is a directory without test.jsonl; pass a labelled .jsonl/.parquet file, or the "
                             "directory `charter classifier data` wrote with a test share", str(p))
        return p / "test.jsonl"
    return p


def read_labelled(path: str | Path, text_field: str | None = None, label_field: str = "label",
                  category_field: str = "category") -> list[Example]:
    """Every row of `path` as an Example; an empty file, or a bad row, is an InputError."""
    from charter.runs.files import check_input

    p = check_input(data_file(path), "labelled data file")
    if p.suffix.lower() not in (".jsonl", ".parquet"):
        raise InputError("labelled data must be a .jsonl or .parquet file", str(p))
    parquet = p.suffix.lower() == ".parquet"
    rows = list(_parquet(p) if parquet else _jsonl(p))
    if not rows:
        raise InputError("the file has no rows; pass a labelled file with 'text' or 'messages' and 'label'", str(p))
    fields = (text_field, label_field, category_field)
    return [example(row, str(p), None if parquet else n, f"row {n}: " if parquet else "", *fields) for n, row in rows]


def _jsonl(p: Path) -> Iterator[tuple[int, Any]]:
    """(line, row) of each non-blank line; a final line without a newline is a row too."""
    from charter.jsonl import loads, reason
    from charter.yamlfile import read_text

    for n, line in enumerate(read_text(p).split("\n"), 1):
        if line.strip():
            try:
                yield n, loads(line)
            except ValueError as exc:
                raise InputError(f"{reason(exc)}; fix or remove the line", str(p), n) from exc


def _parquet(p: Path) -> Iterator[tuple[int, Any]]:
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(p)
    except Exception as exc:  # noqa: BLE001 - pyarrow raises several types for a bad file
        raise InputError(f"could not read the Parquet file ({exc}); check that it is one", str(p)) from exc
    yield from enumerate(table.to_pylist(), 1)


def example(row: Any, path: str, line: int | None, row_name: str, text_field: str | None, label_field: str,
            category_field: str) -> Example:
    """One checked row: errors name `path:line`, or `path: row N` (row_name) for Parquet."""
    def fail(msg: str) -> InputError:
        return InputError(row_name + msg, path, line)

    if not isinstance(row, dict):
        raise fail(f"expected a JSON object with 'text' or 'messages' and '{label_field}', got {type(row).__name__}")
    field = text_field or ("messages" if row.get("messages") is not None else "text")
    messages = _messages(row.get(field), field, fail)
    category = row.get(category_field)
    if category is not None and not isinstance(category, str):
        raise fail(f"'{category_field}' must be text, got {category!r}")
    answered = messages[-1]["role"] == "assistant"
    kind = row.get("kind") or ("output" if answered else "input")
    if kind not in KINDS:
        raise fail(f"'kind' must be input or output, got {kind!r}")
    if kind == "output" and not answered:
        raise fail("an output row's messages must end with the assistant's answer (the text an output "
                   "classifier reads)")
    return Example(messages, label(row.get(label_field), label_field, fail), category or "", kind, path, line)


def _messages(value: Any, field: str, fail) -> list[dict[str, str]]:
    if isinstance(value, str) and value.strip():
        return [{"role": "user", "content": value}]
    if value is None:
        raise fail(f"no '{field}' to score; each row needs 'text' or 'messages' (or name the field with --text-field)")
    if not isinstance(value, list) or not value:
        raise fail(f"'{field}' must be non-empty text or a list of {{role, content}} messages, got {value!r:.60}")
    for i, m in enumerate(value, 1):
        if not isinstance(m, dict) or not isinstance(m.get("role"), str) or not isinstance(m.get("content"), str):
            raise fail(f"'{field}' message {i} needs 'role' and 'content' text")
    return [{"role": m["role"], "content": m["content"]} for m in value]


def label(value: Any, field: str, fail) -> int:
    """0/1 (or true/false, or "harmful"/"harmless", any case) as 0 or 1."""
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, (int, float)) and value in (0, 1):
        return int(value)
    if isinstance(value, str) and value.strip().lower() in LABELS:
        return LABELS[value.strip().lower()]
    what = "missing" if value is None else f"{value!r:.40}"
    raise fail(f"'{field}' must be 0/1 or \"harmful\"/\"harmless\", got {what}; fix the row, or name the label "
               "field with --label-field")


__all__ = ["Example", "read_labelled", "data_file", "label"]
