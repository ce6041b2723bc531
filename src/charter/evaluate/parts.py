"""A long `charter eval` resumes: every finished task (charter.evaluate.tasks) is one JSON line in
OUT.parts/ beside eval.json the moment it finishes, and is read back on the next run, so what was
done is not asked again.

The directory is a run store (charter.runs.store.RunStore with the EVAL_PARTS layout): one writer
(run.lock), appends flushed within a second, a torn or damaged line set aside and its task redone.
A part is reused only for the same question (its key names the model or judge and holds a digest
of what was asked); the settings that change nearly every part (backend, sampling, seed) are the
store's fingerprint, and an eval with other ones starts over. Adding a model, a judge, prompts or
runs keeps what is done.
"""
from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

from charter.evaluate.tasks import Memo
from charter.jsonl import loads, read_jsonl
from charter.runs.store import Layout, RunStore

log = logging.getLogger("charter.eval")
FINGERPRINTED = ("backend", "max_tokens", "temperature", "top_p", "seed")


def part_status(raw: bytes) -> tuple[str, bool]:
    """A part line: (its key, done without error); ValueError for a line eval did not write."""
    row = loads(raw)
    if not isinstance(row, dict) or not isinstance(row.get("id"), str) or "value" not in row:
        raise ValueError("not an eval part (an object with 'id' and 'value')")
    return row["id"], row.get("error") is None


EVAL_PARTS = Layout(records="parts.jsonl", set_aside="parts.bad.jsonl", status=part_status, what="eval part",
                    redo="computed again")


def parts_dir(out: str | Path) -> Path:
    """Where the parts of the eval written to `out` go: OUT.parts/ beside it."""
    out = Path(out)
    return out.with_name(out.name + ".parts")


def fingerprint(settings: dict[str, Any]) -> str:
    kept = {k: settings.get(k) for k in FINGERPRINTED}
    return hashlib.sha256(json.dumps(kept, sort_keys=True).encode()).hexdigest()[:16]


class Parts(Memo):
    """The finished tasks of an eval: `save` appends one, `in` and `[]` read them (last line wins)."""

    def __init__(self, folder: str | Path, settings: dict[str, Any]):
        super().__init__()
        self.folder, self.settings = Path(folder), settings
        self.store: RunStore | None = None

    def __enter__(self) -> "Parts":
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def open(self) -> "Parts":
        """Take the lock, set aside a torn tail, read the parts back; start over when the
        fingerprinted settings changed."""
        fp = fingerprint(self.settings)
        changed = _saved_fingerprint(self.folder) not in (None, fp)
        self.store = RunStore(self.folder, EVAL_PARTS)
        self.store.open(self.settings, fp, force=changed)
        if changed:
            log.warning("eval: %s holds work done with another backend, sampling or seed; starting over",
                        self.folder)
            self.store.clear()
        self.values = {}
        if self.store.records_path.exists():
            for _, row in read_jsonl(self.store.records_path, skip_damaged=True):
                if row.get("error") is None:
                    self.values[row["id"]] = row["value"]
                else:
                    self.values.pop(row["id"], None)
        if self.values:
            log.info("eval: %d finished requests read back from %s", len(self.values), self.folder)
        return self

    def save(self, key: str, value: Any, error: str | None) -> None:
        assert self.store is not None, "Parts.open first"
        self.store.append({"id": key, "value": value, "error": error})
        super().save(key, value, error)

    def close(self) -> None:
        if self.store is not None:
            self.store.close()
            self.store = None


def _saved_fingerprint(folder: Path) -> str | None:
    """The fingerprint of the parts in `folder` (None: none yet; "": unreadable or lost, so start over)."""
    path = folder / EVAL_PARTS.meta
    if not path.exists():
        return "" if (folder / EVAL_PARTS.records).exists() else None
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return ""
    return str(meta.get("fingerprint", "")) if isinstance(meta, dict) else ""
