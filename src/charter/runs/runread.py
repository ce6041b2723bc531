"""Reading a run directory without its lock: records (the final state of each id, streamed),
the run's config, and summaries of the records cached in meta.json. Readers (export, eval,
report) stop at a damaged line with `file:line`; the writer is charter.runs.store.RunStore.
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Callable, Iterator

from charter.errors import InputError, RunError
from charter.runs.idset import IdSet, key
from charter.jsonl import atomic_write, loads, read_lines, reason as _reason
from charter.types import Record

RECORDS = "records.jsonl"
CONFIG = "config.yaml"
META = "meta.json"
HOW_TO_REPAIR = "re-run the run's `charter generate` command to set the line aside and regenerate it"
# A line the store wrote: its id, and whether it failed (to_dict writes "id" first, "error" last).
_FAST_ID = re.compile(rb'\{"id": "([^"\\]*)", ')


def parse_record(raw: bytes | str) -> Record:
    """One JSONL line -> Record; ValueError (JSON, UTF-8 or shape) says what is wrong."""
    record = Record.from_dict(loads(raw))
    check_types(record)
    return record


_TEXT, _OPTIONAL = ("source", "model", "backend", "format"), ("initial", "final", "error")


def check_types(r: Record) -> None:
    """Field types from_dict does not check, so readers (report, export) can trust them."""
    if not all(isinstance(getattr(r, k), str) for k in _TEXT):
        raise ValueError(f"{', '.join(map(repr, _TEXT))} must be text")
    if not all(getattr(r, k) is None or isinstance(getattr(r, k), str) for k in _OPTIONAL):
        raise ValueError(f"{', '.join(map(repr, _OPTIONAL))} must be text or null")
    if not all(isinstance(x.principle, str) and isinstance(x.revision, str) and isinstance(x.critique, (str, type(None)))
               for x in r.rounds):
        raise ValueError("a round's 'principle', 'critique' and 'revision' must be text")
    if not isinstance(r.sample, int) or not isinstance(r.sampling, dict):
        raise ValueError("'sample' must be a number and 'sampling' an object")
    for k in ("tokens", "timings"):
        value = getattr(r, k)
        if not isinstance(value, dict) or not all(_number(v) for v in value.values()):
            raise ValueError(f"'{k}' must be an object of numbers")


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def read_records(path: Path) -> Iterator[Record]:
    """Records of a records.jsonl, skipping a torn final line; a damaged line is an InputError."""
    for n, raw in read_lines(path):
        try:
            yield parse_record(raw)
        except ValueError as exc:
            what = "not a Charter record" if n == 1 else "damaged record"
            tip = "pass a run directory made by `charter generate`" if n == 1 else HOW_TO_REPAIR
            raise InputError(f"{what} ({_reason(exc)}); {tip}", str(path), n) from exc


def load_run_config(run: str | Path, strict: bool = True, name: str = CONFIG) -> dict[str, Any]:
    """A run's config.yaml (`name`: its file name in a store layout other than generate's; {} if
    absent); damaged: an InputError with the line (strict) or {}."""
    path = Path(run) / name
    if not path.exists():
        return {}
    from charter.yamlfile import parse_yaml, strip_lines  # the one YAML reader: alias bombs refused

    try:
        data = strip_lines(parse_yaml(path.read_text(encoding="utf-8"), str(path))) or {}
    except (OSError, ValueError, InputError) as exc:
        if not strict:
            return {}
        why = exc.args[0].split(": ", 1)[-1] if isinstance(exc, InputError) else type(exc).__name__
        raise InputError(f"damaged run config ({why}); restore it or re-run generate with --force",
                         str(path), getattr(exc, "line", None)) from exc
    if not isinstance(data, dict):
        if not strict:
            return {}
        raise InputError("damaged run config (not a mapping); restore it or re-run generate with --force", str(path), 1)
    return data


def records_file(run: str | Path) -> Path:
    """The records.jsonl of a run directory (or the path itself); a RunError if there is none."""
    path = Path(run)
    if not path.exists():
        raise RunError(f"no run at {path}; pass a run directory made by `charter generate`")
    if path.is_dir():
        if not (path / RECORDS).exists():
            raise RunError(f"no records at {path / RECORDS}; pass a run directory made by `charter generate`")
        path = path / RECORDS
    return path


def load_run(run: str | Path) -> list[Record]:
    """Final state of every record in a run directory (or a records.jsonl path)."""
    return list(iter_run(run))


def iter_run(run: str | Path) -> Iterator[Record]:
    """load_run as a stream, in the same order (an id's first position, its last line's content).
    Two passes over the file; memory: 8 bytes per record, plus the offsets of ids written twice."""
    path = records_file(run)
    last = last_lines(path)
    taken = IdSet()
    with path.open("rb") as again:
        for record in read_records(path):
            where = last.get(key(record.id))
            if where is not None:
                if record.id in taken:
                    continue
                taken.add(record.id)
                again.seek(where)
                record = parse_record(again.readline())
            yield record


def last_lines(path: Path, id_of: Callable[[bytes], str] = lambda raw: parse_record(raw).id) -> dict[int, int]:
    """id key -> byte offset of its last line, for the ids that have more than one line (`id_of`:
    the id of a line the fast match cannot read; ValueError: a damaged line, skipped)."""
    seen, last, offset = IdSet(), {}, 0
    with path.open("rb") as fh:
        for raw in fh:
            start, offset = offset, offset + len(raw)
            if not raw.endswith(b"\n") or not raw.strip():
                continue
            m = _FAST_ID.match(raw)
            try:
                rid = m.group(1).decode("utf-8") if m else id_of(raw)
            except ValueError:
                continue  # read_records names it in the second pass
            if rid in seen:
                last[key(rid)] = start
            else:
                seen.add(rid)
    return last


def cached(run: str | Path, name: str, compute: Callable[[], dict]) -> dict:
    """A summary of a run's records (e.g. its cost) kept in meta.json until the records change, so
    resuming a finished 300k-record run does not read them all again."""
    path, meta_path = records_file(run), Path(run) / META
    stat = path.stat()
    stamp = [stat.st_size, stat.st_mtime_ns]
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        meta = None
    cache = meta.get("cache") if isinstance(meta, dict) else None
    cache = cache if isinstance(cache, dict) else {}
    entry = cache.get(name)
    if isinstance(entry, dict) and entry.get("for") == stamp and isinstance(entry.get("value"), dict):
        return entry["value"]
    value = compute()
    if isinstance(meta, dict):
        atomic_write(meta_path, json.dumps({**meta, "cache": {**cache, name: {"for": stamp, "value": value}}}, indent=2))
    return value
