"""Hostile probes, each as a user or an attacker would try it: outputs that would replace
someone's files, inputs that never end or nest without end, two writers on one run. Fake backend."""
import errno
import json
import os
import socket
import subprocess
import sys

import pytest

import charter.jsonl
from charter.backends.fake import FakeBackend
from charter.cli import main
from charter.inputs.constitution import load_constitution, validate
from charter.errors import ConfigError, InputError, RunError
from charter.evaluate.suite import EvalConfig, evaluate_records
from charter.inputs.prompts import load_prompts
from charter.report.html import write_report
from charter.runs.store import LOCK, SET_ASIDE, RunStore
from charter.runs.runread import load_run
from support import GEN, fails

DEEP = "[" * 100_000 + "]" * 100_000
EVAL = {"schema": "charter.eval/1", "run": "r", "records": 0, "charter_version": "0", "created": "2026-01-01T00:00:00",
        "settings": {"models": [], "judge": None, "pm": None, "limit": None, "seed": 0, "bootstrap": 1,
                     "sampling": {}}, "models": {}}


# ---- outputs never replace a run's files, an input, a symlink's target or a foreign file ----


@pytest.mark.parametrize("name", ["records.jsonl", "config.yaml", "meta.json", "records.bad.jsonl"])
def test_report_out_never_replaces_the_runs_own_files(run, capsys, name):
    (run / SET_ASIDE).write_text("")
    fails(capsys, ["report", "r", "--out", f"r/{name}"], r"--out r/%s is one of the run's own files" % name,
          run / name)


def test_report_out_refuses_a_symlink_an_input_and_a_foreign_file(run, capsys):
    theirs = run.parent / "theirs.txt"
    theirs.write_text("someone's notes\n")
    (run.parent / "link.html").symlink_to(theirs)
    fails(capsys, ["report", "r", "--out", "link.html"], r"--out link.html is a symbolic link", theirs)
    (run / "eval.json").write_text(json.dumps(EVAL))
    fails(capsys, ["report", "r", "--out", "r/eval.json"], r"one of this command's inputs", run / "eval.json")
    page = run.parent / "page.html"
    page.write_text("<!DOCTYPE html><html><title>my page</title></html>")
    fails(capsys, ["report", "r", "--out", "page.html"], r"--out page.html already exists and is not a Charter "
          r"report \(Charter has no record of writing it.*\), so it is not overwritten; choose another --out", page)
    assert main(["report", "r", "--out", "mine.html"]) == 0 and main(["report", "r", "--out", "mine.html"]) == 0


def test_eval_out_never_replaces_the_runs_records_or_a_foreign_file(run, tmp_path):
    records = load_run(run)
    before = (run / "records.jsonl").read_bytes()
    factory = lambda spec: FakeBackend(spec)  # noqa: E731

    def evaluate(out=None):
        return evaluate_records(EvalConfig(run=str(run), models=["base"], out=out), records, factory=factory,
                                log=lambda m: None)

    with pytest.raises(ConfigError, match="one of the run's own files"):
        evaluate(str(run / "records.jsonl"))
    notes = tmp_path / "notes.json"
    notes.write_text('{"mine": true}')
    with pytest.raises(ConfigError, match="is not a Charter eval.json"):
        evaluate(str(notes))
    assert (run / "records.jsonl").read_bytes() == before and notes.read_text() == '{"mine": true}'
    for _ in range(2):  # its own earlier result is replaced
        evaluate()
    assert json.loads((run / "eval.json").read_text())["schema"] == "charter.eval/1"


def test_export_out_refuses_a_symlink_and_a_foreign_file(run, capsys):
    theirs = run.parent / "prompts.jsonl"
    theirs.write_text('{"prompt": "mine"}\n')
    fails(capsys, ["export", "r", "--out", "prompts.jsonl"], r"not a Charter export", theirs)
    (run.parent / "sft.jsonl").symlink_to(theirs)
    fails(capsys, ["export", "r", "--out", "sft.jsonl"], r"symbolic link", theirs)
    assert main(["export", "r", "--out", "o.jsonl"]) == 0 and main(["export", "r", "--out", "o.jsonl"]) == 0


# ---- a full disk names the file and leaves the previous one whole -------------------------


def test_full_disk_names_the_report_and_keeps_the_old_one(run, capsys, monkeypatch):
    assert main(["report", "r"]) == 0
    capsys.readouterr()

    def full(path):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(charter.jsonl, "_fsync_file", full)
    fails(capsys, ["report", "r"], r"r/report.html: cannot write \(No space left on device\)", run / "report.html")
    assert [p.name for p in run.iterdir() if p.name.endswith(".tmp")] == []


# ---- inputs that never end --------------------------------------------------------------


def test_devices_and_fifos_are_refused_before_reading(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    fails(capsys, GEN + ["--prompts", "/dev/zero"], r"/dev/zero: not a regular file")
    os.mkfifo(tmp_path / "p.txt")  # nobody writes: reading it would block for ever
    fails(capsys, GEN + ["--prompts", "p.txt"], r"p.txt: not a regular file")
    fails(capsys, ["constitution", "validate", "/dev/zero"], r"/dev/zero: not a regular file")


def test_a_runaway_line_names_file_and_line(tmp_path, monkeypatch):
    import charter.inputs.prompts

    monkeypatch.setattr(charter.inputs.prompts, "MAX_LINE", 100)
    f = tmp_path / "p.txt"
    f.write_text("fine\n" + "x" * 101 + "\n")
    with pytest.raises(InputError, match=r"p.txt:2: line longer than 100 characters"):
        load_prompts(str(f), "red_team")


# ---- tracebacks -> file:line ---------------------------------------------------------------


@pytest.mark.parametrize("name, body, pattern", [
    ("p.jsonl", '{"prompt": "ok"}\n{"prompt": ' + DEEP + "}\n", r"p.jsonl:2: JSON nested deeper than 100 levels"),
    ("p.json", "[\n" + DEEP + "]", r"p.json:2: invalid JSON \(JSON nested deeper than 100 levels"),
])
def test_deeply_nested_prompts(tmp_path, name, body, pattern):
    (tmp_path / name).write_text(body)
    with pytest.raises(InputError, match=pattern):
        load_prompts(str(tmp_path / name), "red_team")


def test_deeply_nested_constitution(tmp_path):
    (tmp_path / "c.json").write_text('{"constitutions":\n' + DEEP + "}")
    with pytest.raises(InputError, match=r"c.json:2: .*JSON nested deeper than 100 levels"):
        load_constitution(str(tmp_path / "c.json"))


def test_deeply_nested_record_line_is_named_then_set_aside(run, capsys):
    records = run / "records.jsonl"
    lines = records.read_text().splitlines(keepends=True)
    records.write_text(lines[0] + '{"id": "x", "prompt": ' + DEEP + "}\n" + "".join(lines[1:]))
    fails(capsys, ["export", "r", "--out", "sft.jsonl"], r"r/records.jsonl:2: damaged record \(JSON nested deeper")
    assert main(GEN + ["--limit", "3", "--out", "r"]) == 0  # set aside, the run resumes
    assert DEEP in (run / SET_ASIDE).read_text() and len(load_run(run)) == 3


def test_csv_field_longer_than_the_csv_modules_default_limit(tmp_path):
    f = tmp_path / "p.csv"
    f.write_text("prompt\n" + "a" * 200_000 + "\nshort\n")
    assert [len(it.messages[0]["content"]) for it in load_prompts(str(f), "red_team")] == [200_000, 5]


def test_record_with_tokens_of_the_wrong_type(run, capsys):
    records = run / "records.jsonl"
    row = json.loads(records.read_text().splitlines()[0])
    records.write_text(json.dumps(dict(row, tokens="lots")) + "\n")
    fails(capsys, ["report", "r"], r"r/records.jsonl:1: not a Charter record \('tokens' must be an object of numbers")


@pytest.mark.parametrize("evaluation", [dict(EVAL, models=[1, 2]), dict(EVAL, elo="x"),
                                        dict(EVAL, answers=[{"id": 1, "kind": 2, "prompt": [{"role": "user", "content": 3}],
                                                             "answers": {"m": 4}}])])
def test_eval_json_of_another_shape(run, capsys, evaluation):
    (run / "eval.json").write_text(json.dumps(evaluation))
    fails(capsys, ["report", "r"], r"r/eval.json: not an evaluation.*(models|elo|answers).*rerun `charter eval`")


# ---- one writer per run ------------------------------------------------------------------


def test_second_writer_refuses_naming_the_holder_and_a_stale_lock_is_taken_over(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "r").mkdir()
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        lock = {"pid": holder.pid, "host": socket.gethostname(), "started": "2026-01-01T00:00:00"}
        (tmp_path / "r" / LOCK).write_text(json.dumps(lock))
        fails(capsys, GEN + ["--limit", "2", "--out", "r"], rf"r is in use by process {holder.pid} on "
              rf"{socket.gethostname()}, since 2026-01-01T00:00:00 \(lock file .*run.lock\); wait for it")
    finally:
        holder.kill()
        holder.wait()
    assert main(GEN + ["--limit", "2", "--out", "r"]) == 0  # the holder is gone: stale, taken over
    assert len(load_run(tmp_path / "r")) == 2


def test_two_processes_on_one_run(tmp_path):
    """A real second process, while this one holds the run open."""
    store = RunStore(tmp_path / "r")
    store.open({"rounds": 1}, "f")
    try:
        cmd = [sys.executable, "-m", "charter.cli", *GEN, "--limit", "1", "--out", str(tmp_path / "r")]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        assert done.returncode == 2 and f"in use by process {os.getpid()}" in done.stderr, done.stderr
        assert "Traceback" not in done.stderr and not (tmp_path / "r" / "records.jsonl").exists()
    finally:
        store.close()
    assert not (tmp_path / "r" / LOCK).exists()
    with RunStore(tmp_path / "r") as again:  # released: the run opens again
        again.open({"rounds": 1}, "f")
        assert (tmp_path / "r" / LOCK).exists()
    assert not (tmp_path / "r" / LOCK).exists()


def test_a_refused_open_releases_the_lock(tmp_path):
    store = RunStore(tmp_path / "r")
    store.open({"rounds": 1}, "f")
    store.append(load_run_record())
    store.close()
    with pytest.raises(RunError, match="different settings"):
        RunStore(tmp_path / "r").open({"rounds": 2}, "g")
    assert not (tmp_path / "r" / LOCK).exists()


def load_run_record():
    from charter.types import Record

    return Record(id="a-0", kind="red_team", prompt=[{"role": "user", "content": "hi"}], initial="x", final="x")


# ---- odd inputs and settings -------------------------------------------------------------------------


def test_out_holding_only_dotfiles_is_not_empty(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / ".env").write_text("KEY=secret\n")
    fails(capsys, GEN + ["--out", "d"], r"--out d is not a Charter run but holds files \(.env\)", tmp_path / "d" / ".env")
    assert [p.name for p in (tmp_path / "d").iterdir()] == [".env"]


def test_runs_with_the_same_folder_name_get_distinct_labels(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    for parent in ("cmpA", "cmpB"):
        assert main(GEN + ["--limit", "1", "--out", f"{parent}/run"]) == 0
    page = write_report(["cmpA/run", "cmpB/run"], tmp_path / "both.html").read_text()
    assert '<option value="cmpA/run">' in page and '<option value="cmpB/run">' in page
    assert 'data-run="run"' not in page


def test_csv_with_an_unterminated_quote(tmp_path):
    f = tmp_path / "p.csv"
    f.write_text('prompt\nfirst\n"second, never closed\nthird\nfourth\n')
    with pytest.raises(InputError, match=r'p.csv:3: a quoted field is never closed.*add the missing "'):
        load_prompts(str(f), "red_team")


def test_identical_principles_are_a_warning(tmp_path, capsys):
    rule = {"critic": "Identify ways the answer is harmful.", "revision": "Rewrite the answer to remove harm."}
    (tmp_path / "c.json").write_text(json.dumps({"constitutions": [rule, rule]}))
    problems = validate(load_constitution(str(tmp_path / "c.json"), "none"))
    assert any("principles 'principle-0' and 'principle-1' are identical" in p for p in problems)
    assert main(["constitution", "validate", str(tmp_path / "c.json")]) == 0
    assert "are identical" in capsys.readouterr().err
