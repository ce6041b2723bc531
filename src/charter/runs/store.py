"""A run directory: resolved config, and records appended one JSON line at a time.

Each record is written (one write) as it completes, so a SIGKILL loses at most the records in
flight; the disk flush follows within a second (charter.jsonl.Appender). On opening, a torn last
line (killed mid-write) and any damaged line are moved to records.bad.jsonl, never deleted, so
their records are generated again. On resume the last line of an id wins; records with an error
are redone. Readers (export, report) stop at a damaged line with `file:line`. An open store holds
the run's lock (charter.runs.lock): one writer per run.

At scale (300k records, ~1 KB each) opening is one streamed pass that keeps the done ids only
(charter.runs.idset, 8 bytes each). The lines this store wrote itself are not parsed again: meta.json
keeps a checkpoint (byte count and CRC-32 of the file as written), and a file whose prefix still
matches it is read for ids only; anything after the checkpoint, or a file changed under it, is
checked line by line.

One store serves every resumable job: a Layout names the run's files and says what a line of its
records holds (generate: a run directory of Records; label: files beside its output, one line per
prompt). Lines are written with "id" first and "error" last, so the ids are read without parsing.
"""
from __future__ import annotations

import hashlib
import json
import logging
import re
import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import yaml

from charter import __version__
from charter.errors import InputError, RunError
from charter.runs import lock
from charter.runs.idset import IdSet
from charter.jsonl import Appender, atomic_write, dumps, move_aside, read_lines, reason as _reason
from charter.redact import redact
from charter.types import Record
# Reading a run (no lock needed) lives in charter.runs.runread; its names stay importable from here.
from charter.runs.runread import CONFIG, META, RECORDS, _FAST_ID, load_run_config, parse_record

log = logging.getLogger("charter.runs.store")

SET_ASIDE = "records.bad.jsonl"
LOCK = "run.lock"
RUN_FILES = (RECORDS, CONFIG, META, SET_ASIDE, LOCK)  # what no command's --out may overwrite
# Temporary files an atomic write killed mid-way leaves behind (charter.jsonl._exclusive_tmp).
_OUR_TMP = re.compile(r"\.(%s)\.[0-9a-f]{8}\.tmp" % "|".join(re.escape(n) for n in RUN_FILES))
CHECKPOINT_EVERY = 30.0  # seconds between checkpoint saves while appending (and at close)


def record_status(raw: bytes) -> tuple[str, bool]:
    """A generate record line: (its id, finished without error); ValueError if it is not one."""
    rec = parse_record(raw)
    return rec.id, rec.error is None


@dataclass(frozen=True)
class Layout:
    """A kind of run: its files (names inside the store's directory) and how a line of its records
    gives (id, finished without error), raising ValueError for a line the job did not write."""

    records: str = RECORDS
    config: str = CONFIG
    meta: str = META
    set_aside: str = SET_ASIDE
    lock: str = LOCK
    status: Callable[[bytes], tuple[str, bool]] = record_status
    own_dir: bool = True  # the directory is the run's alone (generate); False: its files sit beside others
    what: str = "record"  # a line, in warnings
    redo: str = "generated again"  # what becomes of a set-aside line's work


GENERATE = Layout()


class RunStore:
    def __init__(self, out: str | Path, layout: Layout = GENERATE):
        self.dir, self.layout = Path(out), layout
        # Absolute: records are appended while an engine runs, and a relative path must not
        # depend on the working directory staying put (a vLLM run once failed to append here).
        self.records_path = (self.dir / layout.records).absolute()
        self._lock: Path | None = None
        self.done: IdSet | None = None  # ids finished without error, once open
        self._appender: Appender | None = None
        self._meta: dict[str, Any] = {}
        self._size, self._crc, self._saved = 0, 0, 0.0  # what the checkpoint covers; when last saved
        self.summary: dict = {}  # a complete run's summary, once `finished` has found one

    def __enter__(self) -> "RunStore":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Flush the records, save the checkpoint, release the run's lock (also released when the
        process exits)."""
        if self._appender is not None:
            try:
                self._appender.close()
                if self._meta:  # an opened store: vouch for what it wrote
                    self._save_checkpoint()
            finally:
                self._appender = None
        if self._lock is not None:
            lock.release(self._lock)
            self._lock = None

    def open(self, config: dict, fingerprint: str, force: bool = False, parts: dict[str, str] | None = None,
             ignore: Sequence[str] = ()) -> None:
        """Create the run, or check that an existing one was made with the same settings.

        `parts` (name -> content, e.g. the constitution's) lets a refusal name what changed, and
        `ignore` lists the config keys that do not change results (not named in a refusal). A run
        without records (a failed start) takes the new settings. The config is kept and compared
        without credentials (a key in backend options, a URL's password): the fingerprint still
        hashes the values in use.
        """
        config = redact(config)
        if self.layout.own_dir:
            self._check_out(config, force, ignore)
        _mkdir(self.dir)
        if self._lock is None:
            self._lock = lock.acquire(self.dir / self.layout.lock, owner=self)
        try:
            self._open(config, fingerprint, force, parts or {}, ignore)
        except BaseException:
            self.close()
            raise

    def check(self, config: dict, fingerprint: str, force: bool = False, parts: dict[str, str] | None = None,
              ignore: Sequence[str] = ()) -> None:
        """What `open` would refuse, found without writing anything (a dry run): a file or someone
        else's files at the output, a directory that cannot be made, a run made with other settings."""
        config = redact(config)
        if self.layout.own_dir:
            self._check_out(config, force, ignore)
        existing = next(p for p in (self.dir.absolute(), *self.dir.absolute().parents) if p.exists())
        if not existing.is_dir():
            raise RunError(f"cannot create run directory {self.dir}: {existing} is a file; choose another --out")
        if self.has_records() and not force:
            self._same_settings(config, fingerprint, _hashed(parts or {}), ignore)

    def _open(self, config: dict, fingerprint: str, force: bool, parts: dict[str, str], ignore: Sequence[str]) -> None:
        parts = _hashed(parts)
        old = {}
        if self.has_records() and not force:
            old = self._same_settings(config, fingerprint, parts, ignore)
        old = old or self._read_meta(strict=False)
        checkpoint = old.get("checkpoint")
        self._meta = {"fingerprint": fingerprint, "parts": parts, "charter_version": __version__,
                      "updated": time.strftime("%Y-%m-%dT%H:%M:%S")}
        if isinstance(old.get("cache"), dict):
            self._meta["cache"] = old["cache"]  # summaries of the records (`cached`), each checked on use
        atomic_write(self.dir / self.layout.meta, json.dumps(self._meta, indent=2))
        atomic_write(self.dir / self.layout.config, yaml.safe_dump(config, sort_keys=False))
        self.set_aside_damaged(checkpoint if isinstance(checkpoint, dict) else None)

    def _same_settings(self, config: dict, fingerprint: str, parts: dict[str, str], ignore: Sequence[str]) -> dict:
        """The run's metadata; a RunError naming what changed if its records were made otherwise."""
        old = self._read_meta()
        if old.get("fingerprint") != fingerprint:
            where = self.dir if self.layout.own_dir else self.records_path
            raise RunError(f"{where} holds a run made with different settings "
                           f"({'; '.join(self._changes(config, parts, old, ignore))}); use a new --out, "
                           "restore those settings, or pass --force to continue it anyway")
        return old

    def _check_out(self, config: dict, force: bool = False, ignore: Sequence[str] = ()) -> None:
        """Never write into a file, or into a directory of someone else's files."""
        if self.dir.exists() and not self.dir.is_dir():
            raise RunError(f"--out {self.dir} is a file, not a run directory; choose a new directory name")
        if not self.dir.is_dir() or (self.dir / META).exists():
            return
        try:
            foreign = sorted(p.name for p in self.dir.iterdir() if p.name != LOCK and not _OUR_TMP.fullmatch(p.name))
        except OSError as exc:
            raise RunError(f"cannot read {self.dir} ({exc.strerror}); choose another --out") from exc
        if foreign and RECORDS in foreign and set(foreign) <= set(RUN_FILES):
            self._lost_meta(config, force, ignore)
        elif foreign:
            shown = ", ".join(foreign[:5]) + (", ..." if len(foreign) > 5 else "")
            raise RunError(f"--out {self.dir} is not a Charter run but holds files ({shown}); "
                           "choose a new or empty directory (nothing was written)")

    def _lost_meta(self, config: dict, force: bool, ignore: Sequence[str]) -> None:
        """A run whose meta.json is gone: --force rebuilds it (the records are kept and checked line
        by line); without it, a refusal that says how config.yaml compares with this command."""
        if force:
            log.warning("warning: %s had no %s; rebuilt with this command's settings (the records are kept)",
                        self.dir, META)
            return
        old = load_run_config(self.dir, strict=False)
        differ = [k for k in sorted(set(old) | set(config)) if k not in ignore and old.get(k) != config.get(k)]
        how = f"this command differs from its {CONFIG} in {', '.join(differ)}" if differ else \
            f"its {CONFIG} matches this command"
        raise RunError(f"{self.dir} is a run whose {META} is missing, so its settings cannot be checked ({how}); "
                       f"pass --force to rebuild {META} from the records with this command's settings, or use a new --out")

    def has_records(self) -> bool:
        return self.records_path.exists() and any(True for _ in read_lines(self.records_path))

    def _read_meta(self, strict: bool = True) -> dict[str, Any]:
        path = self.dir / self.layout.meta
        if not path.exists():
            return {}
        try:
            meta = json.loads(path.read_text(encoding="utf-8"))
            if not isinstance(meta, dict):
                raise ValueError("not a JSON object")
        except (OSError, ValueError) as exc:
            if not strict:
                return {}
            why = exc.strerror if isinstance(exc, OSError) else _reason(exc)
            raise InputError(f"damaged run metadata ({why}), so this run's settings cannot be checked; pass "
                             "--force to rewrite it from this command's settings, or use a new --out",
                             str(path), getattr(exc, "lineno", None)) from exc
        return meta

    def _changes(self, config: dict, parts: dict[str, str], old_meta: dict, ignore: Sequence[str]) -> list[str]:
        """What differs from the run's saved settings, for the refusal message."""
        old = load_run_config(self.dir, strict=False, name=self.layout.config)
        keys = [k for k in sorted(set(old) | set(config)) if k not in ignore]
        changes = [f"{k}: {_short(old.get(k))} -> {_short(config.get(k))}" for k in keys if old.get(k) != config.get(k)]
        old_parts = old_meta.get("parts") or {}
        changes += [f"{name} content changed" for name, digest in parts.items() if old_parts.get(name) not in (None, digest)]
        return changes or ["the constitution or few-shot content changed"]

    def set_aside_damaged(self, checkpoint: dict | None = None) -> list[int]:
        """Move damaged lines and a torn tail to records.bad.jsonl (kept; their records are made
        again) and collect `self.done`, in one streamed pass. Returns the moved line numbers."""
        aside = self.dir / self.layout.set_aside
        bad = self._scan(checkpoint)
        if bad is None:  # the file changed under the checkpoint: check every line
            bad = self._scan(None)
        move_aside(self.records_path, aside, bad)
        for n, _, why in bad:
            if why.startswith("torn"):
                continue  # the normal trace of a killed run: no need to alarm anyone
            log.warning("warning: %s:%d: damaged %s (%s); moved to %s, it will be %s",
                        self.records_path, n, self.layout.what, why, aside, self.layout.redo)
        if bad:
            self._size, self._crc = _crc_of(self.records_path)
        if self._meta:  # opened: a kill before the first append's checkpoint must not mean a full check
            self._save_checkpoint()
        return [n for n, _, _ in bad]

    def _scan(self, checkpoint: dict | None) -> list | None:
        """One pass: the done ids and the damaged lines; None if the prefix the checkpoint covers
        no longer matches it (the caller checks everything then)."""
        limit, want = (checkpoint.get("bytes"), checkpoint.get("crc")) if checkpoint else (0, None)
        if not (isinstance(limit, int) and isinstance(want, int)):
            limit, want = 0, 0
        self.done, bad, size, crc = IdSet(), [], limit, want
        try:
            with self.records_path.open("rb") as fh:
                n = self._trusted(fh, limit, want, bad)
                if n is None:
                    return None
                for n, raw in enumerate(fh, n + 1):  # after the checkpoint: every line checked
                    size, crc = size + len(raw), zlib.crc32(raw, crc)
                    if raw.strip():
                        self._take(n, raw, bad)
        except FileNotFoundError:
            if limit:
                return None
        except OSError as exc:
            raise InputError(f"cannot read ({exc.strerror}); check the path and its permissions", str(self.records_path)) from exc
        self._size, self._crc = size, crc
        return bad

    def _trusted(self, fh, limit: int, want: int, bad: list) -> int | None:
        """The first `limit` bytes (the checkpoint's), read in large chunks: ids only. Their line
        count, or None when they are not (or no longer) what the store wrote."""
        n, crc, tail = 0, 0, b""
        while limit > 0:
            chunk = fh.read(min(1 << 18, limit))  # small: large buffers come back to glibc as heap that RSS keeps
            if not chunk:
                return None  # shorter than the checkpoint
            limit, crc = limit - len(chunk), zlib.crc32(chunk, crc)
            buf, start = tail + chunk, 0
            while (end := buf.find(b"\n", start)) >= 0:  # lines located, never copied: ~1 KB each
                n += 1
                m = _FAST_ID.match(buf, start, end)
                if m is None:
                    if buf[start:end].strip():
                        self._take(n, buf[start:end + 1], bad)
                elif buf.endswith(b'"error": null}', start, end):
                    self.done.add(m.group(1).decode("utf-8", "replace"))
                else:
                    self.done.discard(m.group(1).decode("utf-8", "replace"))
                start = end + 1
            tail = buf[start:]
        return None if tail or crc != want else n

    def _take(self, n: int, raw: bytes, bad: list) -> None:
        """One line into the done ids, or into `bad`."""
        if not raw.endswith(b"\n"):
            bad.append((n, raw, "torn write"))
            return
        try:
            rid, ok = self.layout.status(raw[:-1])
        except ValueError as exc:
            bad.append((n, raw[:-1], _reason(exc)))
            return
        if ok:
            self.done.add(rid)
        else:
            self.done.discard(rid)

    def _save_checkpoint(self) -> None:
        """Record how much of the file this store vouches for (written and flushed)."""
        self._meta["checkpoint"] = {"bytes": self._size, "crc": self._crc}
        atomic_write(self.dir / self.layout.meta, json.dumps(self._meta, indent=2))
        self._saved = time.monotonic()

    def finished(self, key: str) -> int | None:
        """Fast resume: the prompt count of a run marked complete under `key` (charter.pipeline.workload.
        completion_key) whose records are still byte for byte what the store vouched for then (the
        run's lock taken first); None otherwise: the caller takes the full path (open, every line).
        `self.summary` is then what mark_complete was given."""
        meta = self._read_meta(strict=False)
        mark, checkpoint = meta.get("complete"), meta.get("checkpoint")
        if not (isinstance(mark, dict) and mark.get("key") == key and mark.get("checkpoint") == checkpoint
                and isinstance(mark.get("prompts"), int) and isinstance(checkpoint, dict)):
            return None
        if self._lock is None:
            self._lock = lock.acquire(self.dir / self.layout.lock, owner=self)
        try:
            stamp = _crc_of(self.records_path)
        except OSError:
            return None
        self.summary = mark.get("summary") if isinstance(mark.get("summary"), dict) else {}
        return mark["prompts"] if stamp == (checkpoint.get("bytes"), checkpoint.get("crc")) else None

    def mark_complete(self, key: str, prompts: int, summary: dict | None = None) -> None:
        """Every one of the run's `prompts` is done without error: say so in meta.json, with the
        checkpoint it holds for, so the next resume (`finished`) reads neither prompts nor records
        (`summary`: what that resume reports). `open` drops the mark; an append after it moves the
        checkpoint past it."""
        if self._appender is not None:
            self._appender.sync()
        self._meta["complete"] = {"key": key, "prompts": prompts, "checkpoint": {"bytes": self._size, "crc": self._crc},
                                  **({"summary": summary} if summary else {})}
        self._save_checkpoint()

    def clear(self) -> None:
        """Start the run again (label --overwrite): its records go, the settings it was opened with stay."""
        if self._appender is not None:
            self._appender.close()
            self._appender = None
        try:
            self.records_path.unlink()
        except FileNotFoundError:
            pass
        self.done, self._size, self._crc = IdSet(), 0, 0
        self._save_checkpoint()

    def done_ids(self) -> IdSet:
        """Ids finished without error (last line of an id wins): collected when the store opened,
        or now (read-only: the checkpoint's lines by id, the rest parsed, nothing moved)."""
        if self.done is None:
            checkpoint = self._read_meta(strict=False).get("checkpoint")
            if not isinstance(checkpoint, dict) or self._scan(checkpoint) is None:
                self._scan(None)
        return self.done

    def append(self, record: Record | dict) -> None:
        """One record (a Record, or a job's line as a dict: "id" first, "error" last)."""
        data = dumps(record.to_dict() if isinstance(record, Record) else record).encode("utf-8")
        if self._appender is None:
            self._appender = Appender(self.records_path)
        self._appender.write(data)
        self._size, self._crc = self._size + len(data), zlib.crc32(data, self._crc)
        if self._meta and time.monotonic() - self._saved >= CHECKPOINT_EVERY:
            self._appender.sync()
            self._save_checkpoint()


def _crc_of(path: Path) -> tuple[int, int]:
    size, crc = 0, 0
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 20):
            size, crc = size + len(chunk), zlib.crc32(chunk, crc)
    return size, crc


def _hashed(parts: dict[str, str]) -> dict[str, str]:
    return {k: hashlib.sha256(v.encode()).hexdigest()[:16] for k, v in parts.items()}


def _short(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= 40 else text[:37] + "..."


def _mkdir(path: Path) -> None:
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise RunError(f"cannot create run directory {path} ({exc.strerror}); choose another --out") from exc
