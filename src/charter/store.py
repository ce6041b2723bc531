"""A run directory: resolved config, and records appended one JSON line at a time.

Each record is flushed and fsynced as it completes, so a SIGKILL loses at most the records in
flight. A torn last line (killed mid-write) is cut off before appending. On resume the last line
of an id wins; records with an error are redone.
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Iterator

import yaml

from charter import __version__
from charter.errors import RunError
from charter.types import Record

RECORDS = "records.jsonl"
CONFIG = "config.yaml"
META = "meta.json"


def read_records(path: Path) -> Iterator[Record]:
    """Records of a records.jsonl, skipping a torn final line."""
    with path.open(encoding="utf-8") as fh:
        for line in fh:
            if not line.endswith("\n"):
                break  # torn write from a killed run: never a complete record
            if line.strip():
                yield Record.from_dict(json.loads(line))


class RunStore:
    def __init__(self, out: str | Path):
        self.dir = Path(out)
        self.records_path = self.dir / RECORDS

    def open(self, config: dict, fingerprint: str, force: bool = False) -> None:
        """Create the run, or check that an existing one was made with the same settings."""
        self.dir.mkdir(parents=True, exist_ok=True)
        meta_path = self.dir / META
        if meta_path.exists() and not force:
            old = json.loads(meta_path.read_text())
            if old.get("fingerprint") != fingerprint:
                raise RunError(f"{self.dir} holds a run made with different settings (see {self.dir / CONFIG}); "
                               "use a new --out, restore the settings, or pass --force to continue it anyway")
        meta = {"fingerprint": fingerprint, "charter_version": __version__, "updated": time.strftime("%Y-%m-%dT%H:%M:%S")}
        _atomic_write(meta_path, json.dumps(meta, indent=2))
        _atomic_write(self.dir / CONFIG, yaml.safe_dump(config, sort_keys=False))
        self._repair_tail()

    def _repair_tail(self) -> None:
        if not self.records_path.exists():
            return
        data = self.records_path.read_bytes()
        if data and not data.endswith(b"\n"):
            keep = data.rfind(b"\n") + 1
            with self.records_path.open("r+b") as fh:
                fh.truncate(keep)

    def load(self) -> dict[str, Record]:
        if not self.records_path.exists():
            return {}
        return {r.id: r for r in read_records(self.records_path)}

    def done_ids(self) -> set[str]:
        return {rid for rid, r in self.load().items() if r.error is None}

    def append(self, record: Record) -> None:
        line = json.dumps(record.to_dict(), ensure_ascii=False) + "\n"
        with self.records_path.open("a", encoding="utf-8") as fh:
            fh.write(line)
            fh.flush()
            os.fsync(fh.fileno())


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def load_run(run: str | Path) -> list[Record]:
    """Final state of every record in a run directory (or a records.jsonl path)."""
    path = Path(run)
    path = path / RECORDS if path.is_dir() else path
    if not path.exists():
        raise RunError(f"no records at {path}; pass a run directory made by `charter generate`")
    return list({r.id: r for r in read_records(path)}.values())
