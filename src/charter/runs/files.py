"""Where Charter may read and write a user-named file.

Inputs are regular files: a device or FIFO (`/dev/zero`, a pipe) never ends, so it is refused
before a byte is read.

Outputs: every command that writes a file (export and its card, eval, eval-labeler and its plot,
label, report) goes through one guard. Charter records each output it writes in a small manifest
beside it (MANIFEST, keyed by file name: the kind, size, mtime and digests of its first and last
HEAD bytes); an existing file is overwritten only when the manifest says Charter wrote it as that
kind and it is unchanged since. Anything else (a user's dataset, the command's own inputs, a
run's files, a symlink, a file edited or replaced since, an output of an older Charter that kept
no manifest) is refused with a ConfigError saying what to do; nothing is guessed from content.

    path = files.check_out(cfg.out, "Charter export", inputs=[cfg.run])   # before any work
    files.write_out(path, "Charter export", text)                          # or: write it, then
    files.mark_written(path, "Charter export")                            # record it
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any, Iterable, Iterator

from charter.errors import ConfigError, InputError, RunError
from charter.jsonl import atomic_write

log = logging.getLogger("charter.runs.files")
MANIFEST = ".charter-outputs.json"  # beside the outputs: which files Charter wrote, as what
SCHEMA = "charter.outputs/1"
HEAD = 4096  # bytes digested at each end of an output


def check_input(path: str | Path, what: str = "file") -> Path:
    """`path` exists and is a regular file (a directory, device, FIFO or socket is an InputError)."""
    p = Path(path)
    if not p.exists():
        raise InputError(f"{what} not found; check the path", str(p))
    if p.is_dir():
        raise InputError(f"is a directory; pass a {what}", str(p))
    if not p.is_file():
        raise InputError(f"not a regular file (a device, pipe or socket may never end); pass a {what} "
                         "saved on disk", str(p))
    return p


def run_file(path: Path) -> bool:
    """One of a run directory's own files (records.jsonl, config.yaml, ...), in any run."""
    from charter.runs.runread import META, RECORDS
    from charter.runs.store import RUN_FILES

    folder = path.parent
    return path.name in RUN_FILES and ((folder / META).exists() or (folder / RECORDS).exists())


def _same(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve() or (a.exists() and b.exists() and a.samefile(b))
    except OSError:
        return False


def check_out(out: str | Path, kind: str, *, inputs: Iterable[str | Path] = (), example: str | Path | None = None,
              flag: str = "--out", instead: str | None = None) -> Path:
    """`out` as a Path if it may receive this command's output of `kind`, else a ConfigError.

    `kind` names the output in messages and in the manifest ("Charter export", "Charter labels");
    use the same string in `mark_written`. `inputs` are the files and directories the command
    reads: `out` may be none of them. Refused: a symlink, a directory or other non-regular file,
    a run's own files, the manifest, an input, and any existing file that this guard did not
    record as written with `kind` (or that changed since). Nothing is written here; call
    `mark_written` (or use `write_out`) once the output is on disk. Messages name the setting
    as `flag` and end with `instead` (default: choose another name, e.g. `example`).
    """
    path = Path(out)
    instead = instead or (f"choose another name, e.g. {example}" if example else f"choose another {flag}")
    if path.is_symlink():
        raise ConfigError(f"{flag} {out} is a symbolic link (writing would replace what it points to); {instead}")
    if path.is_dir():
        raise ConfigError(f"{flag} {out} is a directory; give a file name for the {kind}")
    if run_file(path) or path.name == MANIFEST:
        raise ConfigError(f"{flag} {out} is one of the run's own files; {instead}")
    if any(_same(path, Path(i)) for i in inputs):
        raise ConfigError(f"{flag} {out} is one of this command's inputs; {instead}")
    if path.exists() and not path.is_file():
        raise ConfigError(f"{flag} {out} is not a regular file; {instead}")
    if path.exists():
        _check_ours(path, kind, f"{flag} {out}", instead)
    return path


def _check_ours(path: Path, kind: str, named: str, instead: str) -> None:
    entry = _read(path.parent).get(path.name)
    if not isinstance(entry, dict):
        raise ConfigError(f"{named} already exists and is not a {kind} (Charter has no record of writing it; "
                          f"older versions kept none), so it is not overwritten; {instead}, or remove it first")
    if entry.get("kind") != kind:
        raise ConfigError(f"{named} is a {entry.get('kind')}, not a {kind}, so it is not overwritten; {instead}")
    if not _unchanged(path, entry):
        raise ConfigError(f"{named} was written by Charter as a {kind} but has changed since (edited, copied or "
                          f"replaced), so it is not overwritten; {instead}, or remove it first")


def mark_written(path: str | Path, kind: str, growing: bool = False) -> None:
    """Record that Charter has just written `path` as an output of `kind` (after check_out).

    growing=True is for an output that later runs append to (label's JSONL): the file then passes
    as long as it still starts with the bytes recorded here and is no shorter; call it again after
    rewriting the file. A manifest that cannot be written (logged) costs only the next overwrite,
    which is then refused: the output itself is already on disk.
    """
    path = Path(path)
    entry = {"kind": kind, "growing": growing, **_stamp(path, growing)}
    with _locked(path.parent):
        entries = {n: e for n, e in _read(path.parent).items() if (path.parent / n).is_file()}
        entries[path.name] = entry
        try:
            atomic_write(path.parent / MANIFEST, json.dumps({"schema": SCHEMA, "files": entries}, indent=1))
        except RunError as exc:
            log.warning("warning: %s; %s is written, but the next command will not overwrite it", exc, path)


def write_out(path: str | Path, kind: str, content: Any) -> Path:
    """charter.jsonl.atomic_write(path, content), then mark_written(path, kind)."""
    written = atomic_write(path, content)
    mark_written(written, kind)
    return written


def _digest(fh, offset: int, size: int) -> str:
    fh.seek(offset)
    return hashlib.blake2b(fh.read(size), digest_size=16).hexdigest()


def _stamp(path: Path, growing: bool) -> dict[str, Any]:
    st = path.stat()
    with path.open("rb") as fh:
        head = _digest(fh, 0, HEAD)
        if growing:
            return {"size": st.st_size, "head": head}
        return {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "head": head,
                "tail": _digest(fh, max(0, st.st_size - HEAD), HEAD)}


def _unchanged(path: Path, entry: dict) -> bool:
    try:
        if not entry.get("growing"):
            return _stamp(path, False) == {k: entry.get(k) for k in ("size", "mtime_ns", "head", "tail")}
        size = entry.get("size")
        if not isinstance(size, int) or path.stat().st_size < size:
            return False
        with path.open("rb") as fh:
            return _digest(fh, 0, min(size, HEAD)) == entry.get("head")
    except OSError:
        return False


def _read(folder: Path) -> dict[str, Any]:
    """The manifest's entries ({} when absent or damaged: every existing file is then refused)."""
    try:
        data = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    files = data.get("files") if isinstance(data, dict) and data.get("schema") == SCHEMA else None
    return files if isinstance(files, dict) else {}


@contextlib.contextmanager
def _locked(folder: Path) -> Iterator[None]:
    """Two commands recording outputs in one folder at once must not lose each other's entry."""
    try:
        import fcntl

        fd = os.open(folder, os.O_RDONLY)
    except (ImportError, OSError):
        yield  # no directory locks here (Windows): a lost entry only means a refused overwrite
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)
