"""Engine processes die with Charter, however Charter ends (close, Ctrl-C, SIGTERM, SIGKILL, OOM).

vLLM spawns its EngineCore as a fresh interpreter (multiprocessing 'spawn'), so Charter cannot
run code in it to tie it to its parent (a parent-death signal); its Workers and the resource
tracker do end with the EngineCore, but the EngineCore survived a killed Charter under PID 1,
holding gigabytes. So each engine gets a watchdog: a small stdlib-only process in its own session
(signals sent to Charter's process group do not reach it) that reads a pipe only Charter holds.
While told to adopt, it tracks every new child of Charter and, until the end, their descendants;
end-of-file on the pipe means the engine was closed or Charter is gone, and it then stops the
tracked processes: SIGTERM, SIGKILL after a grace period. Linux only (/proc); elsewhere a no-op.

Protocol (one line each): "adopt PID..." (track new children, except these), "hold" (stop
adopting; keep tracking descendants), "grace S" (the grace period at the end); EOF: stop what
is tracked, then exit.
"""
from __future__ import annotations

import logging
import os
import select
import signal
import subprocess
import sys
import time
import weakref

log = logging.getLogger("charter.backends.watchdog")
PROC = "/proc"
# How often the process tree is re-read: often while the engine starts (its processes appear),
# rarely after (only their own children are new). Charter's end is noticed at once (EOF) anyway.
SCAN_S, HOLD_SCAN_S = 0.25, 1.0
# multiprocessing's resource tracker ignores SIGTERM and cleans shared memory when its pipe
# closes (when the engine processes are gone): killing it would leak that memory instead.
SPARE = ("multiprocessing.resource_tracker",)
_open: "weakref.WeakSet[Watchdog]" = weakref.WeakSet()


# ---- /proc ------------------------------------------------------------------------------

def _stat(pid: int) -> tuple[int, int] | None:
    """(parent pid, start time) of a live process; None if it is gone."""
    try:
        with open(f"{PROC}/{pid}/stat", "rb") as fh:
            rest = fh.read().rsplit(b")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (int(rest[1]), int(rest[19])) if rest[0] != b"Z" else None  # a zombie is already dead


def processes() -> dict[int, tuple[int, int]]:
    """pid -> (parent pid, start time) of every live process."""
    table = {}
    for name in os.listdir(PROC) if os.path.isdir(PROC) else ():
        if name.isdigit() and (st := _stat(int(name))) is not None:
            table[int(name)] = st
    return table


def cmdline(pid: int) -> str:
    try:
        with open(f"{PROC}/{pid}/cmdline", "rb") as fh:
            return fh.read().replace(b"\0", b" ").decode("utf-8", "replace").strip()
    except OSError:
        return ""


def children(pid: int, table: dict[int, tuple[int, int]] | None = None) -> set[int]:
    table = processes() if table is None else table
    return {p for p, (ppid, _) in table.items() if ppid == pid}


def orphans(prefix: str = "VLLM::") -> list[tuple[int, str, int]]:
    """(pid, title, resident bytes) of this user's processes whose title starts with `prefix` and
    whose parent is gone (re-parented to PID 1): engines a killed Charter left behind before
    engines had watchdogs (or ones started by other tools)."""
    found = []
    for pid, (ppid, _) in processes().items():
        title = cmdline(pid)
        if ppid == 1 and title.startswith(prefix) and _owned(pid):
            found.append((pid, title.split()[0], _rss(pid)))
    return found


def _owned(pid: int) -> bool:
    try:
        return os.stat(f"{PROC}/{pid}").st_uid == os.getuid()
    except OSError:
        return False


def _rss(pid: int) -> int:
    try:
        with open(f"{PROC}/{pid}/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


# ---- Charter's side -----------------------------------------------------------------------

class Watchdog:
    """The watchdog of one engine. `adopt()` before starting it, `hold()` once it runs,
    `close()` after shutting it down (stops whatever is left of it)."""

    def __init__(self, grace_s: float = 3.0):
        self.grace_s = grace_s
        self.proc = None
        if not os.path.isdir(PROC):
            return
        self.proc = subprocess.Popen([sys.executable, "-I", __file__, str(os.getpid()), str(grace_s)],
                                     stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                     start_new_session=True)
        _open.add(self)

    def _send(self, line: str) -> None:
        if self.proc is None or self.proc.stdin.closed:
            return
        try:
            self.proc.stdin.write(line.encode() + b"\n")
            self.proc.stdin.flush()
        except OSError:  # it died: the engine still works, but would not die with us
            log.warning("the engine watchdog exited early; the engine may outlive a killed Charter")

    def adopt(self) -> None:
        """From now on, every new child process of Charter belongs to the engine."""
        if self.proc is not None:
            self._send(" ".join(["adopt", str(self.proc.pid), *map(str, children(os.getpid()))]))

    def hold(self) -> None:
        """The engine is up: stop adopting (its processes' own children are still tracked)."""
        self._send("hold")

    def close(self, wait: bool = True, grace_s: float | None = None) -> None:
        """Stop the engine's processes that are still alive (and the watchdog); `grace_s`: the
        time they get between SIGTERM and SIGKILL, if not the watchdog's own."""
        if self.proc is None or self.proc.stdin.closed:
            return
        if grace_s is not None:
            self._send(f"grace {grace_s}")
        self.proc.stdin.close()
        if wait:
            try:
                self.proc.wait(self.grace_s + 5)
            except subprocess.TimeoutExpired:
                log.warning("the engine watchdog (pid %d) did not finish in time", self.proc.pid)


def _close_in_forked_child() -> None:
    # A forked engine process must not hold the pipe's write end: EOF would never come.
    for dog in list(_open):
        if dog.proc is not None and not dog.proc.stdin.closed:
            try:
                dog.proc.stdin.close()
            except OSError:
                pass


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_close_in_forked_child)


# ---- the watchdog process -----------------------------------------------------------------

class _Tracker:
    def __init__(self, parent: int):
        self.parent, self.me = parent, os.getpid()
        self.adopting, self.spared = False, {self.me}
        self.grace_s: float | None = None  # set by "grace S"
        self.tracked: dict[int, int] = {}  # pid -> start time (a reused pid is not ours)

    def command(self, line: str) -> None:
        word, *pids = line.split()
        if word == "adopt":
            self.adopting, self.spared = True, self.spared | {int(p) for p in pids}
        elif word == "hold":  # what was started up to now is the engine's, even if not yet seen
            self.scan()
            self.adopting = False
        elif word == "grace":
            self.grace_s = float(pids[0])

    def scan(self) -> dict[int, tuple[int, int]]:
        table = processes()
        self.tracked = {p: t for p, t in self.tracked.items() if table.get(p, (0, -1))[1] == t}
        grew = True
        while grew:  # descendants of tracked processes, to any depth
            grew = False
            for pid, (ppid, start) in table.items():
                ours = ppid in self.tracked or (self.adopting and ppid == self.parent)
                if ours and pid not in self.tracked and pid not in self.spared:
                    if any(s in cmdline(pid) for s in SPARE):
                        self.spared.add(pid)
                        continue
                    self.tracked[pid], grew = start, True
        return table

    def stop(self, grace_s: float) -> None:
        """SIGTERM everything tracked, SIGKILL what is left after `grace_s` (0: SIGKILL only)."""
        self.scan()  # adopting still if the engine's start was cut short: what it had started
        self.adopting = False
        deadline = time.time() + grace_s
        for sig in (signal.SIGTERM, signal.SIGKILL) if grace_s > 0 else (signal.SIGKILL,):
            self.scan()
            for pid in self.tracked:
                try:
                    os.kill(pid, sig)
                except OSError:
                    pass
            while self.tracked and sig == signal.SIGTERM and time.time() < deadline:
                time.sleep(0.1)
                self.scan()


def _watch(parent: int, grace_s: float) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # only EOF ends it
    tracker, fd, buf = _Tracker(parent), sys.stdin.fileno(), b""
    while True:
        ready, _, _ = select.select([fd], [], [], SCAN_S if tracker.adopting else HOLD_SCAN_S)
        if ready:
            chunk = os.read(fd, 4096)
            if not chunk:
                break
            buf += chunk
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                tracker.command(line.decode())
        tracker.scan()
    tracker.stop(grace_s if tracker.grace_s is None else tracker.grace_s)


if __name__ == "__main__":
    _watch(int(sys.argv[1]), float(sys.argv[2]))
