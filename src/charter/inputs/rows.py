"""Training data files: read them, check every row, and name `file:line` for a bad one.

One reader for the trainers' data files (.jsonl, .json, .parquet), one check for SFT rows and one
for preference rows, so a bad row is one clean error before any model loads, never a traceback
from inside TRL (a message without `content`, a row without `rejected`, `"score": "0.7"`).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from charter.inputs import transcripts
from charter.yamlfile import read_text
from charter.errors import InputError
from charter.jsonl import TooDeep, loads, reason

Row = tuple[str, dict[str, Any]]  # (where: 'file:LINE' or 'file: row N', the row)
EMPTY = "the file is empty (no rows); pass the file `charter export` or `charter label` wrote, or check the path"


def read_rows(path: str, needed: tuple[str, ...], alternatives: tuple[tuple[str, ...], ...] = ()) -> list[Row]:
    """Every row of a .jsonl/.json/.parquet file, each holding one of the needed column sets."""
    p = Path(path)
    if not p.is_file():
        raise InputError("file not found; pass a run directory or an exported .jsonl/.parquet file", path)
    suffix = p.suffix.lower()
    if suffix not in (".jsonl", ".json", ".parquet"):
        raise InputError("training data must be a run directory, .jsonl or .parquet", path)
    rows = _parquet(p) if suffix == ".parquet" else _json(p)
    if not rows:
        raise InputError(EMPTY, path)
    want = " or ".join(repr(" + ".join(c)) for c in (needed, *alternatives))
    for where, row in rows:
        if not isinstance(row, dict):
            raise InputError(f"expected a JSON object with {want}, got {type(row).__name__}", where)
        found = [k for k, v in row.items() if v is not None]
        if not any(all(c in found for c in cols) for cols in (needed, *alternatives)):
            raise InputError(f"the dataset needs column(s) {want}; found: {', '.join(found) or 'none'}", where)
    return rows


def _json(p: Path) -> list[Row]:
    """JSON lines, or one JSON array (.json); a final line without a newline is a row too."""
    text = read_text(p)  # not UTF-8: an InputError with the line
    if p.suffix.lower() == ".json" and text.lstrip().startswith("["):
        try:
            return [(f"{p}: row {i + 1}", r) for i, r in enumerate(loads(text))]
        except (json.JSONDecodeError, TooDeep) as exc:
            raise InputError(f"{reason(exc)}; fix the file", str(p), exc.lineno) from exc
    rows = []
    for n, line in enumerate(text.split("\n"), 1):
        if line.strip():
            try:
                rows.append((f"{p}:{n}", loads(line)))
            except ValueError as exc:
                raise InputError(f"{reason(exc)}; fix or remove the line", str(p), n) from exc
    return rows


def _parquet(p: Path) -> list[Row]:
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(p)
    except Exception as exc:  # noqa: BLE001 - pyarrow raises several types for a bad file
        raise InputError(f"could not read the Parquet file ({exc}); check that it is one", str(p)) from exc
    return [(f"{p}: row {i + 1}", r) for i, r in enumerate(table.to_pylist())]


def check_turns(value: Any, what: str, where: str) -> None:
    """Text, or a non-empty list of {role, content} messages with text values."""
    if isinstance(value, str):
        return
    if value is None:
        raise InputError(f"'{what}' is missing; every row needs it", where)
    if not isinstance(value, list) or not value:
        raise InputError(f"'{what}' must be text or a list of {{role, content}} messages, got "
                         f"{type(value).__name__ if value != [] else 'an empty list'}", where)
    for i, m in enumerate(value, 1):
        if not isinstance(m, dict) or not isinstance(m.get("role"), str) or not isinstance(m.get("content"), str):
            lacks = "is not an object" if not isinstance(m, dict) else \
                f"has no text '{'role' if not isinstance(m.get('role'), str) else 'content'}'"
            raise InputError(f"'{what}' message {i} {lacks}; each message needs 'role' and 'content' text", where)


def clean_messages(value: list[dict[str, Any]]) -> list[dict[str, str]]:
    """Checked messages with only role and content (extra keys would differ between rows)."""
    return [{"role": m["role"], "content": m["content"]} for m in value]


def sft_row(row: dict[str, Any], where: str) -> dict[str, Any]:
    """A `messages` row as TRL's conversational prompt/completion (loss on the last answer only), or a
    prompt/completion row as it is."""
    if row.get("messages") is None:
        for key in ("prompt", "completion"):
            check_turns(row[key], key, where)
        if isinstance(row["prompt"], str) != isinstance(row["completion"], str):
            raise InputError("'prompt' and 'completion' must both be text or both message lists", where)
        return {k: row[k] if isinstance(row[k], str) else clean_messages(row[k]) for k in ("prompt", "completion")}
    msgs = row["messages"]
    check_turns(msgs, "messages", where)
    if isinstance(msgs, str) or len(msgs) < 2 or msgs[-1]["role"] != "assistant":
        raise InputError("'messages' must hold a prompt and end with an assistant turn", where)
    return to_prompt_completion(clean_messages(msgs))


def to_prompt_completion(messages: list[dict[str, str]]) -> dict[str, list]:
    """TRL's conversational prompt/completion: the loss covers the last (assistant) message only."""
    return {"prompt": messages[:-1], "completion": messages[-1:]}


def check_preference(row: dict[str, Any], where: str, prompt: bool = True) -> float | None:
    """Check a preference row (prompt unless optional, chosen, rejected: text or messages); its score."""
    for key in ("prompt", "chosen", "rejected") if prompt else ("chosen", "rejected"):
        check_turns(row.get(key), key, where)
    if not prompt and row.get("prompt") is not None:
        check_turns(row["prompt"], "prompt", where)
    return check_score(row.get("score"), where)


def check_score(s: Any, where: str) -> float | None:
    if s is None:
        return None
    if not isinstance(s, (int, float)) or isinstance(s, bool) or not 0 <= s <= 1:
        raise InputError(f"score must be a probability in [0, 1], got {s!r}", where)
    return float(s)


def to_dataset(rows: list[dict[str, Any]], path: str):
    """datasets.Dataset of checked rows; rows of mixed shapes (text here, messages there) cannot be one table."""
    import datasets
    import pyarrow as pa

    try:
        return datasets.Dataset.from_list(rows)
    except (pa.ArrowException, TypeError, ValueError) as exc:
        raise InputError(f"the rows have mixed shapes ({exc}); use one form (text or message lists) in the "
                         "whole file", path) from exc


def _messages(value: str | list, role: str) -> list[dict[str, str]]:
    """A checked conversation (list of messages), an hh-rlhf transcript, or a plain string as one `role` turn."""
    if isinstance(value, str):
        return transcripts.parse(value) if transcripts.looks_like(value) else [{"role": role, "content": value}]
    return clean_messages(value)


def preference_pair(row: dict[str, Any], where: str, score: float | None = None) -> dict[str, Any]:
    """Any preference row -> {prompt, chosen, rejected, score} with conversational messages."""
    s = check_preference(row, where, prompt=False)
    chosen = _messages(row["chosen"], "assistant")
    rejected = _messages(row["rejected"], "assistant")
    if row.get("prompt") is not None:
        prompt = _messages(row["prompt"], "user")
    else:  # implicit prompt (hh-rlhf): the shared leading turns
        n = 0
        while n < min(len(chosen), len(rejected)) - 1 and chosen[n] == rejected[n]:
            n += 1
        prompt, chosen, rejected = chosen[:n], chosen[n:], rejected[n:]
    s = (1.0 if s is None else s) if score is None else score
    if not prompt or not chosen or not rejected:
        raise InputError("a preference row needs a prompt and non-empty chosen and rejected answers", where)
    return {"prompt": prompt, "chosen": chosen, "rejected": rejected, "score": float(s)}


def read_pairs(path: str, hard: bool = False) -> list[dict[str, Any]]:
    """Preference rows of a .jsonl/.parquet file (hard: every score 1.0, for mixed-in comparisons)."""
    return [preference_pair(r, where, 1.0 if hard else None) for where, r in read_rows(path, ("chosen", "rejected"))]
