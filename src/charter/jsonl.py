"""Files that survive a crash: atomic whole-file writes, fsynced JSONL appends, and a JSONL reader
that tolerates the one thing a SIGKILL leaves behind (a torn final line without its newline).

Every writer in Charter goes through here (the run store, `label`, exports, results, reports), so
there is one answer to "what does a kill at any moment leave on disk": the old file or the new
one, never half of one; appended lines are on disk before the call returns.
"""
from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import secrets
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from charter.errors import InputError, RunError

# O_NOFOLLOW: never write through a symlink planted at the temporary path (absent on Windows).
_EXCL = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_BINARY", 0)

Writer = Callable[[Path], None]


FULL = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)  # the disk, a quota or a file size limit


def write_error(path: str | Path, exc: OSError) -> RunError:
    if exc.errno in FULL:
        return RunError(f"{path}: cannot write ({exc.strerror or exc}); free space on that disk (or raise the "
                        "quota or file size limit), or write somewhere else")
    return RunError(f"{path}: cannot write ({exc.strerror or exc}); check the path, its permissions and free space")


def read_error(path: str | Path, exc: OSError) -> InputError:
    return InputError(f"cannot read ({exc.strerror or exc}); check the path and its permissions", str(path))


def _exclusive_tmp(path: Path) -> tuple[Path, int]:
    """A new file next to `path` (same filesystem, so os.replace is atomic), created exclusively."""
    for _ in range(100):
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
        try:
            return tmp, os.open(tmp, _EXCL, 0o666)
        except FileExistsError:
            continue
    raise FileExistsError(f"no free temporary name next to {path}")


def atomic_write(path: str | Path, content: str | bytes | Writer) -> Path:
    """Replace `path` whole: write a temporary file, fsync it, rename it over `path`.

    `content` is text, bytes, or a function that writes the file at the path it is given (e.g.
    pyarrow's Parquet writer). On failure the temporary file is removed and `path` is untouched.
    """
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp, fd = _exclusive_tmp(path)
        with os.fdopen(fd, "wb") as fh:
            if not callable(content):
                fh.write(content.encode("utf-8") if isinstance(content, str) else content)
        if callable(content):
            content(tmp)
        _fsync_file(tmp)
        os.replace(tmp, path)
        tmp = None
    except OSError as exc:
        raise write_error(path, exc) from exc
    finally:
        if tmp is not None:
            with contextlib.suppress(OSError):
                tmp.unlink()
    _fsync_dir(path.parent)
    return path


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_BINARY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(folder: Path) -> None:
    """Make the rename itself durable; not every platform can open a directory."""
    with contextlib.suppress(OSError):
        _fsync_file(folder)


MAX_DEPTH = 100  # nesting of arrays/objects; Python's recursion limit (json, repr, copy) is ~1000
_TOKEN = re.compile(r'"(?:[^"\\]|\\.)*"|[\[\]{}]')


class TooDeep(ValueError):
    """JSON nested deeper than MAX_DEPTH; `lineno`/`colno` like json.JSONDecodeError."""

    def __init__(self, text: str, pos: int):
        self.lineno, self.colno = text.count("\n", 0, pos) + 1, pos - text.rfind("\n", 0, pos)
        super().__init__(f"JSON nested deeper than {MAX_DEPTH} levels at line {self.lineno} column {self.colno}")


def check_depth(text: str) -> None:
    """TooDeep where `text` opens its MAX_DEPTH+1-th nested bracket (brackets in strings ignored)."""
    if text.count("[") + text.count("{") <= MAX_DEPTH:
        return  # cannot be that deep: the common case costs two counts
    depth = 0
    for m in _TOKEN.finditer(text):
        c = m.group()
        depth += 1 if c in "[{" else -1 if c in "]}" else 0
        if depth > MAX_DEPTH:
            raise TooDeep(text, m.start())


class LoneSurrogate(json.JSONDecodeError):
    """A \\uD800-\\uDFFF escape that is not half of a pair: json.loads makes it a str that no
    UTF-8 writer, terminal or tokenizer accepts, so every reader refuses it here, with its place."""

    def __init__(self, text: str, pos: int):
        super().__init__(f"{text[pos:pos + 6]} is half of a surrogate pair, not a character", text, pos)


_SURROGATE = re.compile(r"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")
_ESCAPE = re.compile(r"\\(?:u([0-9a-fA-F]{4})|.)", re.S)


def check_surrogates(text: str) -> None:
    """LoneSurrogate at the first surrogate escape without its other half (pairs are fine)."""
    if not _SURROGATE.search(text):
        return  # the common case costs one search
    high = None  # the match of a high half waiting for its low half right after it
    for m in _ESCAPE.finditer(text):
        code = int(m.group(1), 16) if m.group(1) else -1
        if high is not None:
            if 0xDC00 <= code <= 0xDFFF and m.start() == high.end():
                high = None
                continue
            raise LoneSurrogate(text, high.start())
        if 0xD800 <= code <= 0xDBFF:
            high = m
        elif 0xDC00 <= code <= 0xDFFF:
            raise LoneSurrogate(text, m.start())
    if high is not None:
        raise LoneSurrogate(text, high.start())


def loads(text: str | bytes) -> Any:
    """json.loads, refusing nesting that would be a RecursionError here or in whoever reads the
    value later, and lone surrogate escapes (LoneSurrogate, a json.JSONDecodeError); every
    failure (JSON, UTF-8, depth) is a ValueError."""
    if isinstance(text, bytes):
        text = text.decode("utf-8")
    check_depth(text)
    value = json.loads(text)
    check_surrogates(text)
    return value


def dumps(row: Any) -> str:
    """One JSONL line (with its newline), UTF-8 kept readable."""
    return json.dumps(row, ensure_ascii=False) + "\n"


def write_jsonl(path: str | Path, rows: Iterable[Any]) -> Path:
    return atomic_write(path, "".join(dumps(r) for r in rows))


def write_json(path: str | Path, data: Any, indent: int | None = 1) -> Path:
    return atomic_write(path, json.dumps(data, indent=indent, ensure_ascii=False))


def append_bytes(path: str | Path, data: bytes) -> None:
    """Append and fsync, in one write: a kill leaves at most a torn final line."""
    if not data:
        return
    try:
        with Path(path).open("ab") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
    except OSError as exc:
        raise write_error(path, exc) from exc


def append_jsonl(path: str | Path, rows: Iterable[Any]) -> None:
    append_bytes(path, "".join(dumps(r) for r in rows).encode("utf-8"))


class Appender:
    """Lines appended to one file held open, for a writer that appends many (the run store).

    Each `write` is one write(2) of whole lines, so a SIGKILL leaves at most a torn final line
    and loses nothing written before it (the kernel holds it). The disk flush (fsync) runs at most
    every `sync_every` seconds and on `close`: a power loss costs at most that window, and a long
    run does not pay a flush per record (4-5 ms each on a busy disk: more than the record cost).
    """

    def __init__(self, path: str | Path, sync_every: float = 1.0):
        self.path, self.sync_every = Path(path), sync_every
        self._fd: int | None = None
        self._synced = 0.0  # time.monotonic() of the last flush

    def write(self, data: bytes) -> None:
        import time

        try:
            if self._fd is None:
                self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_BINARY", 0), 0o666)
            view = memoryview(data)
            while view:
                view = view[os.write(self._fd, view):]
            if time.monotonic() - self._synced >= self.sync_every:
                self.sync()
        except OSError as exc:
            raise write_error(self.path, exc) from exc

    def sync(self) -> None:
        import time

        if self._fd is not None:
            os.fsync(self._fd)
        self._synced = time.monotonic()

    def close(self) -> None:
        if self._fd is not None:
            try:
                self.sync()
            except OSError as exc:
                raise write_error(self.path, exc) from exc
            finally:
                os.close(self._fd)
                self._fd = None


def read_lines(path: str | Path) -> Iterator[tuple[int, bytes]]:
    """(line number, complete non-blank line); a torn final line (no newline) is not yielded."""
    try:
        with Path(path).open("rb") as fh:
            for n, raw in enumerate(fh, 1):
                if raw.endswith(b"\n") and raw.strip():
                    yield n, raw
    except OSError as exc:
        raise read_error(path, exc) from exc


def reason(exc: ValueError) -> str:
    """What is wrong with a line, in words (JSON position, or the byte that is not UTF-8)."""
    if isinstance(exc, json.JSONDecodeError):
        return f"invalid JSON: {exc.msg} at column {exc.colno}"
    if isinstance(exc, UnicodeDecodeError):
        return f"byte 0x{exc.object[exc.start]:02x} at column {exc.start + 1} is not UTF-8"
    return str(exc)


def read_jsonl(path: str | Path, skip_damaged: bool = False) -> Iterator[tuple[int, Any]]:
    """(line number, parsed row) of a JSONL file, without a torn final line.

    A damaged line in the middle is an InputError naming `file:line`, or skipped (`skip_damaged`:
    for callers that set such lines aside with `set_aside` before writing).
    """
    for n, raw in read_lines(path):
        try:
            yield n, loads(raw)
        except ValueError as exc:
            if not skip_damaged:
                raise InputError(f"damaged line ({reason(exc)}); fix or remove it", str(path), n) from exc


Bad = tuple[int, bytes, str]  # (line number, raw line without newline, why)


def set_aside(path: str | Path, aside: str | Path, check: Callable[[bytes], Any] = loads) -> list[Bad]:
    """Move damaged lines (`check` raises ValueError) and a torn tail of `path` to `aside`.

    Streams the file (memory does not grow with it) and rewrites it only when a line is moved.
    """
    bad = []
    for n, raw, last in scan_lines(path):
        if not last:
            bad.append((n, raw, "torn write"))
            continue
        try:
            check(raw)
        except ValueError as exc:
            bad.append((n, raw, reason(exc)))
    move_aside(path, aside, bad)
    return bad


def scan_lines(path: str | Path) -> Iterator[tuple[int, bytes, bool]]:
    """(line number, non-blank line without its newline, whether it ended with one), streamed."""
    path = Path(path)
    if not path.exists():
        return
    try:
        with path.open("rb") as fh:
            for n, raw in enumerate(fh, 1):
                if raw.strip():
                    ended = raw.endswith(b"\n")
                    yield n, raw[:-1] if ended else raw, ended
    except OSError as exc:
        raise read_error(path, exc) from exc


def move_aside(path: str | Path, aside: str | Path, bad: list[Bad]) -> None:
    """Append the `bad` lines to `aside` (kept for the user, never deleted), then rewrite `path`
    without them, streamed: a kill in between duplicates a line at worst and loses none."""
    if not bad:
        return
    append_bytes(aside, b"".join(raw + b"\n" for _, raw, _ in bad))
    drop = {n for n, _, _ in bad}

    def write(tmp: Path) -> None:
        with Path(path).open("rb") as src, tmp.open("wb") as dst:
            for n, raw in enumerate(src, 1):
                if n not in drop and raw.strip():
                    dst.write(raw)

    try:
        atomic_write(path, write)
    except FileNotFoundError as exc:  # pragma: no cover - the file vanished under us
        raise read_error(path, exc) from exc
