"""A local Ray that `--executor ray` starts for a run ends with the run (no raylet left behind), and
Ray's own SIGTERM handler does not replace the job's."""
import contextlib
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from charter.backends import watchdog
from charter.generate import GenerateConfig
from charter.generate import generate
from charter.runs.runread import load_run
from charter.runs.store import RunStore

ray = pytest.importorskip("ray")

# A driver whose one chunk never finishes; it says "ready" once its worker's backend is open.
DRIVER = textwrap.dedent("""
    import sys, time
    from charter.generate import GenerateConfig
    from charter.pipeline.ray_executor import run_job

    class Stuck:
        def open(self, workload): pass
        def capacity(self): return 0
        def run(self, items): time.sleep(300)
        def close(self): pass

    ready = lambda: open(sys.argv[1], "w").close()
    run_job(GenerateConfig(executor="ray", backend="fake", workers=1), Stuck(), ["q"], print, on_ready=ready)
""")
AGENTS = ("ray::DashboardAgent", "ray::RuntimeEnvAgent")


def _tree(pid: int) -> dict[int, int]:
    """pid -> start time of every descendant of `pid`."""
    table, found, todo = watchdog.processes(), {}, [pid]
    while todo:
        for kid in watchdog.children(todo.pop(), table):
            found[kid] = table[kid][1]
            todo.append(kid)
    return found


def _alive(procs: dict[int, int]) -> dict[int, str]:
    """Those of `procs` still running (not the same pid reused), with their titles."""
    return {p: watchdog.cmdline(p)[:80] for p, start in procs.items() if (watchdog._stat(p) or (0, None))[1] == start}


def _wait(test, seconds: float) -> bool:
    deadline = time.time() + seconds
    while time.time() < deadline and not test():
        time.sleep(0.2)
    return test()


def test_a_ray_started_for_the_run_is_shut_down_after_it(tmp_path, monkeypatch):
    assert not ray.is_initialized()
    seen, titles, append = {}, set(), RunStore.append

    def append_and_look(self, rec):  # mid-run: every process the run started is under this one
        seen.update(_tree(os.getpid()))
        titles.update(_alive(seen).values())
        append(self, rec)

    monkeypatch.setattr(RunStore, "append", append_and_look)
    before = _tree(os.getpid())
    previous = signal.signal(signal.SIGTERM, signal.SIG_DFL)
    try:
        cfg = GenerateConfig(executor="ray", workers=1, backend="fake", limit=2, rounds=1, helpful_samples=1,
                             out=str(tmp_path / "run"))
        summary = generate(cfg, progress=False)
        assert summary.records == 4 and len(load_run(tmp_path / "run")) == 4
        assert not ray.is_initialized()
        assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # not Ray's sys.exit handler
    finally:
        signal.signal(signal.SIGTERM, previous)
    started = {p: t for p, t in seen.items() if p not in before}
    assert set(AGENTS) <= titles
    assert not _alive(started)  # Ray's agents too, which would otherwise outlive the run by seconds


@pytest.mark.skipif(not os.path.isdir("/proc"), reason="Linux /proc")
def test_ray_processes_end_with_a_killed_driver(tmp_path):
    """SIGKILL of the driver: Ray's agents and workers end within seconds, rather than after the
    minute the agents spend reporting to the GCS that died with the driver."""
    (tmp_path / "driver.py").write_text(DRIVER)
    ready = tmp_path / "ready"
    proc = subprocess.Popen([sys.executable, str(tmp_path / "driver.py"), str(ready)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ours = {}
    try:
        assert _wait(lambda: ready.exists() or proc.poll() is not None, 180) and proc.poll() is None
        assert _wait(lambda: all(a in _alive(_tree(proc.pid)).values() for a in AGENTS), 60)
        time.sleep(watchdog.HOLD_SCAN_S + 0.5)  # the watchdog's next look at the process tree
        ours = _tree(proc.pid)
        proc.kill()
        proc.wait()
        assert _wait(lambda: not _alive(ours), 20), _alive(ours)
    finally:
        proc.kill()
        for pid in _alive(ours):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
