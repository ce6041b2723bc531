"""`charter label` on the scheduler and the run store: streamed prompts, order-independent seeds,
the lock, a killed run, the complete marker, the output guard and signals (fake backends)."""
from __future__ import annotations

import json
import multiprocessing
import os
import signal
import subprocess
import sys

import pytest

from charter.backends.fake import FakeBackend
from charter.cli import main
from charter.errors import ConfigError, RunError
from charter.pipeline.jobrun import Interrupted
from charter.rlcai.labels import LabelConfig, label
from charter.rlcai.label_store import read_transcripts, transcripts_path
from charter.runs.store import RunStore
from support import die_while_writing

PROMPTS = [f"How do I do risky thing number {i}?" for i in range(7)]


def prompts_file(tmp_path):
    f = tmp_path / "prompts.jsonl"
    if not f.exists():
        f.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in PROMPTS))
    return f


def cfg(tmp_path, **kw):
    base = dict(backend="fake", samples=3, max_tokens=20, few_shot="none", backend_options={"vary": True},
                out=str(tmp_path / "labels.jsonl"))
    if "prompts" not in kw:
        kw["prompts"] = str(prompts_file(tmp_path))
    return LabelConfig(**{**base, **kw}).validate()


class Judge(FakeBackend):
    """Option log-probs that depend on the question only (never on the order questions arrive in)."""

    def choose(self, contexts, options):
        import hashlib

        return [[-(hashlib.sha1((str(c) + o).encode()).digest()[0] / 64) for o in opts]
                for c, opts in zip(contexts, options)]


def rows(path):
    return sorted((json.loads(x) for x in open(path)), key=lambda r: r["id"])


def comparison_ids(n_prompts, samples=3):
    return n_prompts * samples * (samples - 1) // 2


@pytest.mark.parametrize("concurrency", [2, 5])
def test_rows_are_the_same_whatever_the_concurrency(tmp_path, concurrency):
    """Seeds come from the prompt and the step, so a streamed run gives the same rows in any order."""
    got = {}
    for width in (1, concurrency):
        policy, judge = FakeBackend(vary=True), Judge()
        policy.concurrency = judge.concurrency = width
        c = cfg(tmp_path / str(width), prompts=str(prompts_file(tmp_path)))
        s = label(c, policy=policy, feedback=judge, progress=False)
        assert s.failures == 0 and s.rows == comparison_ids(len(PROMPTS))
        got[width] = rows(c.out)
    assert got[1] == got[concurrency]
    assert len({r["chosen"][0]["content"] for r in got[1]}) > len(PROMPTS)  # the samples of a prompt differ


def _killed_run(c):
    """In a child: label `c` and SIGKILL itself half-way through writing the 4th prompt's line."""
    die_while_writing(4)
    label(c, progress=False)


def test_a_killed_run_resumes_and_labels_every_comparison_exactly_once(tmp_path):
    c = cfg(tmp_path)
    child = multiprocessing.get_context("fork").Process(target=_killed_run, args=(c,))
    child.start()
    child.join(120)
    assert child.exitcode == -signal.SIGKILL
    tpath = transcripts_path(c.out)
    assert (tmp_path / "labels.lock").exists() and not tpath.read_bytes().endswith(b"\n")  # as a kill leaves them
    again = FakeBackend(vary=True)
    s = label(c, policy=again, feedback=Judge(), progress=False)
    assert s.resumed == 3 and s.failures == 0 and len(again.calls) == 3 * 4  # 4 prompts left, 3 answers each
    ids = [r["id"] for r in rows(c.out)]
    assert len(ids) == len(set(ids)) == s.rows == comparison_ids(len(PROMPTS))
    lines = [json.loads(x)["id"] for x in tpath.read_text().splitlines()]
    assert len(lines) == len(set(lines)) == len(PROMPTS)
    assert tpath.with_name("labels.transcripts.bad.jsonl").read_text().count("\n") == 1  # the torn line, kept
    assert not (tmp_path / "labels.lock").exists()


def test_a_second_label_on_the_same_output_is_refused_while_the_first_holds_it(tmp_path):
    c = cfg(tmp_path)
    label(c, policy=FakeBackend(vary=True), feedback=Judge(), progress=False)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from charter.runs import lock; "
                               f"lock.acquire({str(tmp_path / 'labels.lock')!r}); print('held', flush=True); "
                               "time.sleep(60)"], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(RunError, match=rf"in use by process {holder.pid} .*labels\.lock"):
            label(c, policy=FakeBackend(vary=True), feedback=Judge(), progress=False, overwrite=True)
        after = {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.name != "labels.lock"}
    finally:
        holder.kill()
        holder.wait()
    assert after == before


def test_a_finished_run_resumes_without_reading_prompts_or_lines(tmp_path, monkeypatch):
    import charter.inputs.prompts
    import charter.rlcai.label_store

    c = cfg(tmp_path)
    first = label(c, policy=FakeBackend(vary=True), feedback=Judge(), progress=False)
    out = (tmp_path / "labels.jsonl").read_bytes()
    meta = json.loads((tmp_path / "labels.meta.json").read_text())
    assert meta["complete"]["prompts"] == len(PROMPTS)

    def untouched(*a, **k):
        raise AssertionError("read on a finished run")

    with monkeypatch.context() as m:
        for where, name in ((charter.inputs.prompts, "iter_prompts"), (charter.rlcai.label_store, "iter_lines"),
                            (RunStore, "_scan")):
            m.setattr(where, name, untouched)
        again = label(c, progress=False)  # no backend opened either: `fake` would have been made
    assert (again.rows, again.comparisons, again.prompts, again.resumed) == (first.rows, first.comparisons, 7, 7)
    assert (tmp_path / "labels.jsonl").read_bytes() == out
    os.utime(prompts_file(tmp_path))  # a touched prompt file takes the full path again
    calls = []
    with monkeypatch.context() as m:
        iter_prompts = charter.inputs.prompts.iter_prompts
        m.setattr(charter.inputs.prompts, "iter_prompts", lambda *a, **k: (calls.append(1), iter_prompts(*a, **k))[1])
        s = label(c, progress=False)
    assert calls and s.resumed == 7 and s.rows == first.rows and (tmp_path / "labels.jsonl").read_bytes() == out


def test_out_equal_to_the_prompts_file_is_refused_with_the_prompts_unchanged(tmp_path, capsys):
    f = prompts_file(tmp_path)
    before = f.read_bytes()
    with pytest.raises(ConfigError, match="is one of this command's inputs"):
        label(cfg(tmp_path, out=str(f)), progress=False)
    assert main(["label", "--backend", "fake", "--prompts", str(f), "--out", str(f), "--quiet"]) == 2
    assert "is one of this command's inputs" in capsys.readouterr().err
    other = tmp_path / "notes.jsonl"  # a file of the user's own
    other.write_text("{}\n")
    with pytest.raises(ConfigError, match="already exists"):
        label(cfg(tmp_path, out=str(other)), progress=False)
    assert f.read_bytes() == before and other.read_text() == "{}\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.jsonl", "prompts.jsonl"]


def test_sigterm_stops_label_like_ctrl_c(tmp_path, default_sigterm):
    class Terminated(FakeBackend):
        def chat(self, convos, sampling):
            if len(self.calls) == 9:  # three prompts answered: SIGTERM, as `timeout` sends it
                os.kill(os.getpid(), signal.SIGTERM)
            return super().chat(convos, sampling)

    c = cfg(tmp_path, batch_size=1)
    with pytest.raises(Interrupted) as info:
        label(c, policy=Terminated(vary=True), feedback=Judge(), progress=False)
    saved = transcripts_path(c.out).read_text().count("\n")
    assert info.value.exit_code == 143 and 1 <= saved < len(PROMPTS)
    assert str(info.value).startswith(f"interrupted: {saved} prompts saved")
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    assert not (tmp_path / "labels.lock").exists()
    s = label(c, policy=FakeBackend(vary=True), feedback=Judge(), progress=False)
    assert s.resumed == saved and s.rows == comparison_ids(len(PROMPTS))
    assert len({r["id"] for r in rows(c.out)}) == s.rows


# ---- the real engine ---------------------------------------------------------------------------------

VLLM_OPTS = {"kv_cache_memory_bytes": 1 << 30, "max_model_len": 4096}  # small: tests share 2 cores


@pytest.mark.slow
def test_label_on_vllm_runs_through_the_streaming_pipeline(tmp_path, monkeypatch):
    """label's default path on vLLM: every prompt a program on the streaming driver, one engine for both."""
    pytest.importorskip("vllm")
    from charter.pipeline import scheduler

    streamed, run = [], scheduler._Streaming.run
    monkeypatch.setattr(scheduler._Streaming, "run", lambda self, *a: (streamed.append(a[1]), run(self, *a))[1])
    c = LabelConfig(backend="vllm", limit=2, max_tokens=16, backend_options=VLLM_OPTS,
                    out=str(tmp_path / "labels.jsonl"))
    s = label(c, progress=False)
    assert streamed and s.failures == 0 and s.prompts == 2 and s.rows + s.skipped == 2 and s.rows
    for t in read_transcripts(transcripts_path(c.out)):
        if t.get("skipped"):
            continue
        assert all(sum(a["probs"]) == pytest.approx(1) and 0 < a["probs"][0] < 1 for a in t["asks"])
        assert 0 < t["score_first"] < 1
    assert all(0.5 <= r["score"] < 1 for r in rows(c.out))


def _descendants(pid: int) -> set[int]:
    from charter.backends import watchdog

    table, found, todo = watchdog.processes(), set(), [pid]
    while todo:
        kids = watchdog.children(todo.pop(), table)
        found |= kids
        todo += kids
    return found


@pytest.mark.slow
def test_sigkill_mid_label_on_vllm_then_the_same_command(tmp_path):
    """Kill `charter label` (vLLM) once two prompts are saved: its engine goes with it, and the same
    command labels every comparison exactly once."""
    pytest.importorskip("vllm")
    import time

    from charter.backends import watchdog

    out, n = tmp_path / "labels.jsonl", 12
    opts = [x for k, v in {**VLLM_OPTS, "concurrency": 2}.items() for x in ("--backend-option", f"{k}={v}")]
    cmd = [sys.executable, "-m", "charter.cli", "label", "--backend", "vllm", "--limit", str(n), "--max-tokens", "16",
           "--quiet", "--out", str(out), *opts]
    tpath = transcripts_path(out)
    with open(tmp_path / "first.err", "w") as err:
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err)
    tree: set[int] = set()
    try:
        deadline = time.time() + 600
        while time.time() < deadline and proc.poll() is None:
            if tpath.exists() and tpath.read_bytes().count(b"\n") >= 2:
                break
            time.sleep(0.2)
        tree = _descendants(proc.pid)
        assert proc.poll() is None, (tmp_path / "first.err").read_text()[-3000:]
        assert any(watchdog.cmdline(p).startswith("VLLM::EngineCore") for p in tree)
        proc.kill()  # SIGKILL: no code of Charter's runs
        proc.wait()
        deadline = time.time() + 15
        while time.time() < deadline and any(watchdog._stat(p) for p in tree):
            time.sleep(0.2)
        assert not [watchdog.cmdline(p) for p in tree if watchdog._stat(p)], "engine processes left over"
    finally:
        for pid in tree | {proc.pid}:
            with __import__("contextlib").suppress(OSError):
                os.kill(pid, signal.SIGKILL)
    before = tpath.read_bytes().count(b"\n")
    assert 2 <= before < n, "the run should have been killed part-way"
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = [json.loads(x)["id"] for x in tpath.read_text().splitlines()]
    assert len(lines) == len(set(lines)) == n
    ids = [r["id"] for r in rows(out)]
    assert len(ids) == len(set(ids)) == n - sum(1 for t in read_transcripts(tpath) if t.get("skipped"))
    assert f"{before} prompts resumed" in done.stdout
