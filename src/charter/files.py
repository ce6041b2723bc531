"""Where Charter may read and write a user-named file.

Inputs are regular files: a device or FIFO (`/dev/zero`, a pipe) never ends, so it is refused
before a byte is read. Outputs (`--out` of report, eval, export) go through `check_out`, which
never lets a result replace a run's own files, one of the command's inputs, a symlink's target,
or an existing file that is not this command's own kind of output; the caller then writes it
whole with charter.jsonl.atomic_write.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterable

from charter.errors import ConfigError, InputError

HEAD = 4096  # bytes read to recognise a file's kind: markers are written at the start
Recognise = Callable[[bytes], bool]  # the first HEAD bytes of an existing file -> "is our output"


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
    from charter.store import META, RECORDS, RUN_FILES

    folder = path.parent
    return path.name in RUN_FILES and ((folder / META).exists() or (folder / RECORDS).exists())


def _same(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve() or (a.exists() and b.exists() and a.samefile(b))
    except OSError:
        return False


def _head(path: Path) -> bytes:
    try:
        with path.open("rb") as fh:
            return fh.read(HEAD)
    except OSError:
        return b""


def check_out(out: str | Path, kind: str, recognise: Recognise | None = None, inputs: Iterable[str | Path] = (),
              example: str | Path | None = None) -> Path:
    """`out` may receive this command's result (`kind`, e.g. "Charter report"), or a ConfigError
    saying why not. `recognise` tells our own earlier output (overwritten) from anyone else's file."""
    path = Path(out)
    instead = f"choose another name, e.g. {example}" if example else "choose another --out"
    if path.is_symlink():
        raise ConfigError(f"--out {out} is a symbolic link (writing would replace what it points to); {instead}")
    if path.is_dir():
        raise ConfigError(f"--out {out} is a directory; give a file name for the {kind}")
    if run_file(path):
        raise ConfigError(f"--out {out} is one of the run's own files; {instead}")
    if any(_same(path, Path(i)) for i in inputs):
        raise ConfigError(f"--out {out} is one of this command's inputs; {instead}")
    if recognise is not None and path.is_file() and path.stat().st_size and not recognise(_head(path)):
        raise ConfigError(f"--out {out} already exists and is not a {kind}, so it is not overwritten; "
                          f"{instead} (or remove the file first)")
    if path.exists() and not path.is_file():
        raise ConfigError(f"--out {out} is not a regular file; {instead}")
    return path

