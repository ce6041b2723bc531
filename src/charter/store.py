"""A run directory: resolved config, and records appended one JSON line at a time.

Each record is flushed and fsynced as it completes, so a SIGKILL loses at most the records in
flight. On opening, a torn last line (killed mid-write) and any damaged line are moved to
records.bad.jsonl, never deleted, so their records are generated again. On resume the last line
of an id wins; records with an error are redone. Readers (export, report) stop at a damaged line
with `file:line`. An open store holds the run's lock (charter.lock): one writer per run.
"""
from __future__ import annotations

import hashlib
import json
import logging
import re
import time
from pathlib import Path
from typing import Any, Iterator, Sequence

import yaml

from charter import __version__
from charter.errors import InputError, RunError
from charter import lock
from charter.jsonl import append_jsonl, atomic_write, loads, read_lines, reason as _reason, set_aside
from charter.types import Record

log = logging.getLogger("charter.store")

RECORDS = "records.jsonl"
CONFIG = "config.yaml"
META = "meta.json"
SET_ASIDE = "records.bad.jsonl"
LOCK = "run.lock"
RUN_FILES = (RECORDS, CONFIG, META, SET_ASIDE, LOCK)  # what no command's --out may overwrite
# Temporary files an atomic write killed mid-way leaves behind (charter.jsonl._exclusive_tmp).
_OUR_TMP = re.compile(r"\.(%s)\.[0-9a-f]{8}\.tmp" % "|".join(re.escape(n) for n in RUN_FILES))
HOW_TO_REPAIR = "re-run the run's `charter generate` command to set the line aside and regenerate it"


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


class RunStore:
    def __init__(self, out: str | Path):
        self.dir = Path(out)
        # Absolute: records are appended while an engine runs, and a relative path must not
        # depend on the working directory staying put (a vLLM run once failed to append here).
        self.records_path = (self.dir / RECORDS).absolute()
        self._lock: Path | None = None

    def __enter__(self) -> "RunStore":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Release the run's lock (also released when the process exits)."""
        if self._lock is not None:
            lock.release(self._lock)
            self._lock = None

    def open(self, config: dict, fingerprint: str, force: bool = False, parts: dict[str, str] | None = None,
             ignore: Sequence[str] = ()) -> None:
        """Create the run, or check that an existing one was made with the same settings.

        `parts` (name -> content, e.g. the constitution's) lets a refusal name what changed, and
        `ignore` lists the config keys that do not change results (not named in a refusal). A run
        without records (a failed start) takes the new settings.
        """
        self._check_out()
        _mkdir(self.dir)
        if self._lock is None:
            self._lock = lock.acquire(self.dir / LOCK)
        try:
            self._open(config, fingerprint, force, parts or {}, ignore)
        except BaseException:
            self.close()
            raise

    def _open(self, config: dict, fingerprint: str, force: bool, parts: dict[str, str], ignore: Sequence[str]) -> None:
        parts = {k: hashlib.sha256(v.encode()).hexdigest()[:16] for k, v in parts.items()}
        if self.has_records() and not force:
            old = self._read_meta()
            if old.get("fingerprint") != fingerprint:
                raise RunError(f"{self.dir} holds a run made with different settings "
                               f"({'; '.join(self._changes(config, parts, old, ignore))}); use a new --out, "
                               "restore those settings, or pass --force to continue it anyway")
        meta = {"fingerprint": fingerprint, "parts": parts, "charter_version": __version__,
                "updated": time.strftime("%Y-%m-%dT%H:%M:%S")}
        atomic_write(self.dir / META, json.dumps(meta, indent=2))
        atomic_write(self.dir / CONFIG, yaml.safe_dump(config, sort_keys=False))
        self.set_aside_damaged()

    def _check_out(self) -> None:
        """Never write into a file, or into a directory of someone else's files."""
        if self.dir.exists() and not self.dir.is_dir():
            raise RunError(f"--out {self.dir} is a file, not a run directory; choose a new directory name")
        if not self.dir.is_dir() or (self.dir / META).exists():
            return
        try:
            foreign = sorted(p.name for p in self.dir.iterdir() if p.name != LOCK and not _OUR_TMP.fullmatch(p.name))
        except OSError as exc:
            raise RunError(f"cannot read {self.dir} ({exc.strerror}); choose another --out") from exc
        if foreign:
            shown = ", ".join(foreign[:5]) + (", ..." if len(foreign) > 5 else "")
            raise RunError(f"--out {self.dir} is not a Charter run but holds files ({shown}); "
                           "choose a new or empty directory (nothing was written)")

    def has_records(self) -> bool:
        return self.records_path.exists() and any(True for _ in read_lines(self.records_path))

    def _read_meta(self) -> dict[str, Any]:
        path = self.dir / META
        if not path.exists():
            return {}
        try:
            meta = json.loads(path.read_text(encoding="utf-8"))
            if not isinstance(meta, dict):
                raise ValueError("not a JSON object")
        except (OSError, ValueError) as exc:
            why = exc.strerror if isinstance(exc, OSError) else _reason(exc)
            raise InputError(f"damaged run metadata ({why}), so this run's settings cannot be checked; pass "
                             "--force to rewrite it from this command's settings, or use a new --out",
                             str(path), getattr(exc, "lineno", None)) from exc
        return meta

    def _changes(self, config: dict, parts: dict[str, str], old_meta: dict, ignore: Sequence[str]) -> list[str]:
        """What differs from the run's saved settings, for the refusal message."""
        old = load_run_config(self.dir, strict=False)
        keys = [k for k in sorted(set(old) | set(config)) if k not in ignore]
        changes = [f"{k}: {_short(old.get(k))} -> {_short(config.get(k))}" for k in keys if old.get(k) != config.get(k)]
        old_parts = old_meta.get("parts") or {}
        changes += [f"{name} content changed" for name, digest in parts.items() if old_parts.get(name) not in (None, digest)]
        return changes or ["the constitution or few-shot content changed"]

    def set_aside_damaged(self) -> list[int]:
        """Move damaged lines and a torn tail to records.bad.jsonl (kept for the user); their
        records are then missing, so generate makes them again. Returns the moved line numbers."""
        aside = self.dir / SET_ASIDE
        bad = set_aside(self.records_path, aside, parse_record)
        for n, _, why in bad:
            if why.startswith("torn"):
                continue  # the normal trace of a killed run: no need to alarm anyone
            log.warning("warning: %s:%d: damaged record (%s); moved to %s, it will be generated again",
                        self.records_path, n, why, aside)
        return [n for n, _, _ in bad]

    def load(self) -> dict[str, Record]:
        if not self.records_path.exists():
            return {}
        return {r.id: r for r in read_records(self.records_path)}

    def done_ids(self) -> set[str]:
        return {rid for rid, r in self.load().items() if r.error is None}

    def append(self, record: Record) -> None:
        append_jsonl(self.records_path, [record.to_dict()])


def _short(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= 40 else text[:37] + "..."


def _mkdir(path: Path) -> None:
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise RunError(f"cannot create run directory {path} ({exc.strerror}); choose another --out") from exc


def load_run_config(run: str | Path, strict: bool = True) -> dict[str, Any]:
    """A run's config.yaml ({} if absent); damaged: an InputError with the line (strict) or {}."""
    path = Path(run) / CONFIG
    if not path.exists():
        return {}
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, ValueError, yaml.YAMLError) as exc:
        if not strict:
            return {}
        mark = getattr(exc, "problem_mark", None)
        raise InputError(f"damaged run config ({type(exc).__name__}); restore it or re-run generate with --force",
                         str(path), mark.line + 1 if mark else None) from exc
    if not isinstance(data, dict):
        if not strict:
            return {}
        raise InputError("damaged run config (not a mapping); restore it or re-run generate with --force", str(path), 1)
    return data


def load_run(run: str | Path) -> list[Record]:
    """Final state of every record in a run directory (or a records.jsonl path)."""
    path = Path(run)
    if not path.exists():
        raise RunError(f"no run at {path}; pass a run directory made by `charter generate`")
    if path.is_dir():
        if not (path / RECORDS).exists():
            raise RunError(f"no records at {path / RECORDS}; pass a run directory made by `charter generate`")
        path = path / RECORDS
    return list({r.id: r for r in read_records(path)}.values())
