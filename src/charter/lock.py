"""One writer per run directory: a lock file made with O_EXCL, holding who took it.

Two `charter generate` on one --out would both append (the work done twice, ids duplicated), so
the second refuses at once and names the holder. A lock left by a killed process is stale when
its PID is gone on this host, and is taken over; a lock from another host is never guessed at.
Locks still held when the process exits are removed (atexit); a SIGKILL leaves a stale one.
"""
from __future__ import annotations

import atexit
import contextlib
import json
import os
import socket
import time
from pathlib import Path

from charter.errors import RunError

_HELD: set[Path] = set()  # locks this process holds, removed at exit


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # exists, owned by another user
    return True


def _read(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def _stale(path: Path, holder: dict) -> bool:
    """Its process is gone (or it is our own, left by a store never closed). No content: a lock
    being written this instant, or one whose writer was killed before it wrote (then it is old)."""
    if not holder:
        with contextlib.suppress(OSError):
            return time.time() - path.stat().st_mtime > 10
        return False
    pid, host = holder.get("pid"), holder.get("host")
    if not isinstance(pid, int) or host != socket.gethostname():
        return False
    return pid == os.getpid() or not _alive(pid)


def acquire(path: str | Path) -> Path:
    """Create the lock at `path` or raise a RunError naming its holder."""
    path = Path(path).absolute()
    me = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%dT%H:%M:%S")}
    for _ in range(3):
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o644)
        except FileExistsError:
            holder = _read(path)
            if not _stale(path, holder):
                raise RunError(_held_message(path, holder)) from None
            with contextlib.suppress(FileNotFoundError):
                path.unlink()  # the holder is gone: take the run over
            continue
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(me, fh)
        _HELD.add(path)
        return path
    raise RunError(_held_message(path, _read(path)))


def _held_message(path: Path, holder: dict) -> str:
    who = (f"process {holder.get('pid')} on {holder.get('host')}, since {holder.get('started')}"
           if holder else "another process")
    return (f"{path.parent} is in use by {who} (lock file {path}); wait for it to finish or use another --out. "
            "If that process is gone (another machine, or a crash), remove the lock file")


def release(path: str | Path) -> None:
    """Remove our lock (only if it is still ours)."""
    path = Path(path).absolute()
    if path in _HELD:
        _HELD.discard(path)
        if _read(path).get("pid") == os.getpid():
            with contextlib.suppress(OSError):
                path.unlink()


@atexit.register
def _release_all() -> None:
    for path in list(_HELD):
        release(path)
