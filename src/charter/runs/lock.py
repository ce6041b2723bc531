"""One writer per run directory: a lock file made with O_EXCL, holding who took it.

Two `charter generate` on one --out would both append (the work done twice, ids duplicated), so
the second refuses at once and names the holder. A lock left by a killed process is stale when
its PID is gone on this host, and is taken over; a lock from another host is never guessed at.
Locks still held when the process exits are removed (atexit); a SIGKILL leaves a stale one.

Inside one process (two generate calls in two threads, a second store in a notebook) a registry of
the locks this process holds decides: a lock held here is refused like any other. A lock file with
our PID that is not in the registry was left by an earlier process with the same PID (containers
restart with the same PIDs) and is taken over; so is the lock of a store dropped without closing
(the registry lets go of it when its owner is garbage-collected).
"""
from __future__ import annotations

import atexit
import contextlib
import json
import os
import socket
import threading
import time
import uuid
import weakref
from pathlib import Path
from typing import Any

from charter.errors import RunError

# Locks this process holds: path -> (the token written in the file, the finalizer of its owner).
_HELD: dict[Path, tuple[str, Any]] = {}
_GUARD = threading.RLock()  # acquire/release from many threads (a finalizer may run inside one)


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
    """Its process is gone, or it names our PID but this process does not hold it. No content: a
    lock being written this instant, or one whose writer was killed before it wrote (then it is old)."""
    if not holder:
        with contextlib.suppress(OSError):
            return time.time() - path.stat().st_mtime > 10
        return False
    pid, host = holder.get("pid"), holder.get("host")
    if not isinstance(pid, int) or host != socket.gethostname():
        return False
    if pid == os.getpid():
        return path not in _HELD
    return not _alive(pid)


def acquire(path: str | Path, owner: object | None = None) -> Path:
    """Create the lock at `path` or raise a RunError naming its holder. With an `owner` (the run
    store), the lock is also released when the owner is garbage-collected without releasing it."""
    path = Path(path).absolute()
    with _GUARD:
        return _acquire(path, owner)


def _acquire(path: Path, owner: object | None) -> Path:
    token = uuid.uuid4().hex
    me = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%dT%H:%M:%S"),
          "token": token}
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
        done = weakref.finalize(owner, _release, path, token) if owner is not None else None
        _HELD[path] = (token, done)
        return path
    raise RunError(_held_message(path, _read(path)))


def _held_message(path: Path, holder: dict) -> str:
    if holder.get("pid") == os.getpid() and holder.get("host") == socket.gethostname():
        return (f"{path.parent} is in use by this process (another job on it is still running, e.g. a generate "
                f"call in another thread, since {holder.get('started')}); wait for it to finish or use another --out")
    who = (f"process {holder.get('pid')} on {holder.get('host')}, since {holder.get('started')}"
           if holder else "another process")
    return (f"{path.parent} is in use by {who} (lock file {path}); wait for it to finish or use another --out. "
            "If that process is gone (another machine, or a crash), remove the lock file")


def release(path: str | Path) -> None:
    """Remove the lock this process holds at `path` (the file only if it is still the one we wrote)."""
    path = Path(path).absolute()
    with _GUARD:
        if path in _HELD:
            _release(path, _HELD[path][0])


def _release(path: Path, token: str) -> None:
    with _GUARD:
        held = _HELD.get(path)
        if held is None or held[0] != token:
            return  # released already; the path may be held again since, by someone else
        del _HELD[path]
        if held[1] is not None:
            held[1].detach()
        mine = _read(path)
        if mine.get("token") == token and mine.get("pid") == os.getpid():  # not in a forked child
            with contextlib.suppress(OSError):
                path.unlink()


@atexit.register
def _release_all() -> None:
    for path in list(_HELD):
        release(path)
