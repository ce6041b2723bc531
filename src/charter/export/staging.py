"""Rows of any number written in any order with flat memory: `charter export` at 300k records.

Rows are staged once, as they are made, in a temporary JSONL beside the output; memory keeps
8 bytes per row for its offset and 8 for a key of its prompt (the train/test split). Each output
file is then written in its final order from the staged lines through charter.jsonl.atomic_write
(the old file or the new one, never half of one): JSONL copies the lines, Parquet parses them in
row groups (pyarrow.parquet.ParquetWriter) under one schema unified over every row, as a
single Table.from_pylist of all of them would infer it.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
from array import array
from pathlib import Path
from typing import Any, Iterable, Iterator

from charter.jsonl import _exclusive_tmp, atomic_write, dumps, write_error

ROW_GROUP = 2000  # rows parsed at once for Parquet (a row group); bounds memory, not the file


def prompt_key(prompt: Any) -> int:
    """A stable 64-bit key of a prompt (the same in every process, unlike hash())."""
    digest = hashlib.blake2b(json.dumps(prompt, sort_keys=True).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little", signed=True)


class Staging:
    """Staged rows: `add` writes one and returns its index; `lines(order)` reads them back."""

    def __init__(self, beside: Path, parquet: bool = False):
        self.path: Path | None = None
        made = [d for d in (beside.parent, *beside.parent.parents) if not d.exists()]  # deepest first
        try:
            beside.parent.mkdir(parents=True, exist_ok=True)
            self.path, fd = _exclusive_tmp(beside)
        except OSError as exc:
            raise write_error(beside, exc) from exc
        self._made, self._beside = made, beside
        self._out = os.fdopen(fd, "wb")
        self.offsets, self.keys, self._size = array("q"), array("q"), 0
        self.schema, self._pending = None, [] if parquet else None

    def add(self, row: dict[str, Any], prompt: Any) -> int:
        line = dumps(row).encode("utf-8")
        self.offsets.append(self._size)
        self.keys.append(prompt_key(prompt))
        try:
            self._out.write(line)
        except OSError as exc:
            raise self._error(exc) from exc
        self._size += len(line)
        if self._pending is not None:
            self._pending.append(row)
            if len(self._pending) >= ROW_GROUP:
                self._infer()
        return len(self.offsets) - 1

    def _infer(self) -> None:
        import pyarrow as pa

        if self._pending:
            schema = pa.Table.from_pylist(self._pending).schema
            self.schema = schema if self.schema is None else \
                pa.unify_schemas([self.schema, schema], promote_options="permissive")
        self._pending.clear()

    def __len__(self) -> int:
        return len(self.offsets)

    def finish(self) -> None:
        """Every row added: flush the file (and the schema's last rows)."""
        try:
            self._out.close()
        except OSError as exc:
            raise self._error(exc) from exc
        if self._pending is not None:
            self._infer()

    def lines(self, order: Iterable[int] | None = None) -> Iterator[bytes]:
        """The staged lines in `order` (row indices), or as added."""
        with self.path.open("rb") as fh:
            if order is None:
                yield from fh
                return
            for i in order:
                fh.seek(self.offsets[i])
                yield fh.readline()

    def write(self, out: Path, order: Iterable[int] | None = None) -> Path:
        """`out` (.jsonl or .parquet) holding the rows in `order`, replaced whole."""
        lines = self.lines(order)
        if out.suffix.lower() == ".jsonl":
            return atomic_write(out, lambda tmp: _write_jsonl(tmp, lines))
        return atomic_write(out, lambda tmp: _write_parquet(tmp, lines, self.schema))

    def __enter__(self) -> "Staging":
        return self

    def _error(self, exc: OSError):
        """Named by the output it was staged for (the staged file is a hidden one beside it)."""
        return write_error(f"{self._beside} (rows staged in {self.path.name})", exc)

    def __exit__(self, *exc: object) -> None:
        with contextlib.suppress(OSError):
            self._out.close()  # a full disk fails the flush again: the file must go all the same
        with contextlib.suppress(OSError):
            self.path.unlink()
        if exc[0] is not None:
            with contextlib.suppress(OSError):
                for folder in self._made:
                    folder.rmdir()  # a failed export leaves no empty folder behind


def _write_jsonl(path: Path, lines: Iterable[bytes]) -> None:
    with path.open("wb") as fh:
        fh.writelines(lines)


def _write_parquet(path: Path, lines: Iterable[bytes], schema) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    with pq.ParquetWriter(path, schema) as writer:
        batch: list[dict] = []
        for line in lines:
            batch.append(json.loads(line))
            if len(batch) >= ROW_GROUP:
                writer.write_table(pa.Table.from_pylist(batch, schema=schema))
                batch.clear()
        if batch:
            writer.write_table(pa.Table.from_pylist(batch, schema=schema))
