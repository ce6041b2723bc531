"""Bad input in, one-line error out (exit 2, no traceback), the user's files untouched; and a run
directory that is never lost or left stuck. Fake backend only: control flow, not model quality."""
import json
import re
from pathlib import Path

import pytest

from charter.cli import main
from charter.errors import InputError
from charter.runs.store import SET_ASIDE
from charter.runs.runread import load_run
from support import GEN, fails



# ---- data loss and dead ends -------------------------------------------------------------------


@pytest.mark.parametrize("name", ["records.jsonl", "records.bad.jsonl"])
def test_export_never_overwrites_the_runs_own_files(run, capsys, name):
    records = run / "records.jsonl"
    fails(capsys, ["export", "r", "--out", f"r/{name}"], r"is one of the run's own files", records)
    fails(capsys, ["export", "r/records.jsonl", "--out", "./r/../r/records.jsonl"], "one of the run's own files", records)


def test_export_out_is_a_directory(run, capsys):
    (run.parent / "d.jsonl").mkdir()
    fails(capsys, ["export", "r", "--out", "d.jsonl"], r"--out d.jsonl is a directory")


def test_damaged_line_is_a_file_line_error_for_readers_and_regenerated_by_generate(run, capsys):
    records = run / "records.jsonl"
    lines = records.read_text().splitlines(keepends=True)
    damaged = '{"id": "x", "kind": "red_team", "prom'
    records.write_text(lines[0] + damaged + "\n" + lines[2])
    fails(capsys, ["export", "r", "--out", "sft.jsonl"], r"r/records.jsonl:2: damaged record \(invalid JSON", records)
    with pytest.raises(InputError, match=r"records.jsonl:2: damaged record"):
        load_run(run)  # what report and eval read through
    assert main(GEN + ["--limit", "3", "--out", "r"]) == 0
    out = capsys.readouterr()
    assert "1 records written (0 failed), 2 already done" in out.out
    assert "records.jsonl:2: damaged record" in out.err and SET_ASIDE in out.err
    assert (run / SET_ASIDE).read_text() == damaged + "\n"  # kept aside, not deleted
    ids = [json.loads(line)["id"] for line in records.read_text().splitlines()]
    assert len(ids) == len(set(ids)) == 3


@pytest.mark.parametrize("bad, message", [
    ("{}", r"records.jsonl:1: not a Charter record \(missing 'id', 'kind', 'prompt'\)"),
    ("[1, 2]", r"records.jsonl:1: not a Charter record \(expected a JSON object, got list\)"),
    ('{"id": "a", "kind": "red_team", "prompt": [], "rounds": [{"x": 1}]}', r"each round needs exactly"),
])
def test_record_of_the_wrong_shape(run, capsys, bad, message):
    records = run / "records.jsonl"
    records.write_text(bad + "\n" + records.read_text())
    fails(capsys, ["export", "r", "--out", "sft.jsonl"], message, records)
    assert main(GEN + ["--limit", "3", "--out", "r"]) == 0  # set aside, the other records kept
    assert "0 records written (0 failed), 3 already done" in capsys.readouterr().out
    assert (run / SET_ASIDE).read_text() == bad + "\n"


def test_non_utf8_record_line(run, capsys):
    records = run / "records.jsonl"
    records.write_bytes(records.read_bytes() + b'{"id": "caf\xe9"}\n')
    fails(capsys, ["export", "r", "--out", "sft.jsonl"], r"records.jsonl:4: damaged record \(byte 0xe9", records)


def test_broken_meta_json(run, capsys):
    meta = run / "meta.json"
    meta.write_text('{"fingerprint": ')
    fails(capsys, GEN + ["--limit", "3", "--out", "r"], r"r/meta.json:1: damaged run metadata .* --force", meta, run / "records.jsonl")
    assert main(GEN + ["--limit", "3", "--out", "r", "--force"]) == 0
    assert json.loads(meta.read_text())["fingerprint"]


def test_failed_start_takes_the_corrected_settings(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    fails(capsys, GEN + ["--rounds", "3", "--backend-option", "fial_on=x", "--out", "r"], r"unknown option 'fial_on'")
    assert main(GEN + ["--rounds", "2", "--limit", "1", "--out", "r"]) == 0


def test_refusal_names_the_settings_that_differ(run, capsys):
    msg = fails(capsys, GEN + ["--limit", "3", "--out", "r", "--rounds", "2", "--temperature", "0.5"],
                r"different settings", run / "records.jsonl", run / "config.yaml", run / "meta.json")
    assert "rounds: 1 -> 2" in msg and "temperature: 1.0 -> 0.5" in msg and "--force" in msg
    assert "limit" not in msg  # --limit may change freely


@pytest.mark.parametrize("which", ["constitution", "few_shot"])
def test_changed_constitution_or_few_shot_content_refuses_resume(tmp_path, monkeypatch, capsys, which):
    from charter.inputs.constitution import DEFAULT_CONSTITUTION, DEFAULT_FEW_SHOT

    monkeypatch.chdir(tmp_path)
    src = {"constitution": DEFAULT_CONSTITUTION, "few_shot": DEFAULT_FEW_SHOT}[which]
    local = tmp_path / src.name
    local.write_text(src.read_text())
    flag = "--constitution" if which == "constitution" else "--few-shot"
    args = GEN + ["--limit", "2", "--out", "r", flag, local.name]
    assert main(args) == 0
    local.write_text(local.read_text().replace("revision: ", "revision: Please, ", 1))
    msg = fails(capsys, args, r"different settings", tmp_path / "r" / "records.jsonl")
    assert f"({which.replace('_', '-')} content changed)" in msg  # names the part that changed


def test_out_that_is_a_file_or_a_foreign_directory(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    notes = tmp_path / "notes.txt"
    notes.write_text("mine\n")
    fails(capsys, GEN + ["--out", "notes.txt"], r"--out notes.txt is a file", notes)
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "config.yaml").write_text("rounds: 9  # hand-written\n")
    fails(capsys, GEN + ["--out", "mine"], r"--out mine is not a Charter run but holds files \(config.yaml\)", mine / "config.yaml")
    assert sorted(p.name for p in mine.iterdir()) == ["config.yaml"]
    fails(capsys, GEN + ["--out", "notes.txt/run"], r"cannot create run directory notes.txt/run", notes)


# ---- one-line errors instead of tracebacks -----------------------------------------------------


@pytest.mark.parametrize("name, data, pattern", [
    ("p.jsonl", b'{"prompt": "na\xefve"}\n', r"p.jsonl:1: byte 0xef at offset 14 is not UTF-8; re-save the file as UTF-8"),
    ("p.parquet", b"hello\n", r"p.parquet: not a Parquet file"),
    ("p.jsonl", b"", r"no red-team prompts in 'p.jsonl'"),
])
def test_bad_prompt_files(tmp_path, monkeypatch, capsys, name, data, pattern):
    monkeypatch.chdir(tmp_path)
    (tmp_path / name).write_bytes(data)
    fails(capsys, GEN + ["--prompts", name], pattern, tmp_path / name)
    assert not (tmp_path / "runs").exists()  # nothing was started


def test_bad_few_shot_file(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    f = tmp_path / "shots.yaml"
    f.write_text("examples:\n  - conversation:\n      - {role: human, content: Hi}\n")
    fails(capsys, ["constitution", "validate", "--few-shot", "shots.yaml"], r"shots.yaml:3: unknown role 'human'", f)


def test_paths_that_are_directories_or_unreadable(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "cfg").mkdir()
    fails(capsys, GEN + ["--config", "cfg"], r"cfg: is a directory; pass a file")
    fails(capsys, GEN + ["--prompts", "cfg"], r"cfg: is a directory")

    def denied(self, *a, **k):
        raise PermissionError(13, "Permission denied", str(self))

    (tmp_path / "run.yaml").write_text("rounds: 1\n")
    monkeypatch.setattr(Path, "read_bytes", denied)
    fails(capsys, GEN + ["--config", "run.yaml"], r"run.yaml: cannot read file \(Permission denied\)")


def test_unexpected_os_error_is_still_one_line(tmp_path, monkeypatch, capsys):
    import charter.cli.constitution

    def boom(a):
        raise PermissionError(13, "Permission denied", "/some/where")

    monkeypatch.setattr(charter.cli.constitution, "cmd_constitution", boom)
    fails(capsys, ["constitution", "show"], r"^error: /some/where: Permission denied; check the path")


def test_export_to_an_unwritable_place(run, capsys):
    notes = run.parent / "notes.txt"
    notes.write_text("x")
    fails(capsys, ["export", "r", "--out", "notes.txt/sft.jsonl"], r"notes.txt/sft.jsonl: cannot write", notes)


@pytest.mark.parametrize("make, pattern", [
    (lambda d: (d / "p.jsonl").write_text('{"prompt": "hi"}\n') and "p.jsonl", r"p.jsonl:1: not a Charter record \(missing 'id'"),
    (lambda d: (d / "empty").mkdir() or "empty", r"no records at empty/records.jsonl"),
])
def test_export_of_something_that_is_not_a_run(tmp_path, monkeypatch, capsys, make, pattern):
    monkeypatch.chdir(tmp_path)
    fails(capsys, ["export", make(tmp_path), "--out", "o.jsonl"], pattern)
    assert not (tmp_path / "o.jsonl").exists()


def test_config_error_names_the_line_from_the_cli(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    f = tmp_path / "run.yaml"
    f.write_text("backend: fake\nrounds: 2\nmax_tokens: 0\n")
    fails(capsys, ["generate", "--config", "run.yaml"], r"run.yaml:3: max_tokens must be >= 1, got 0", f)
    f.write_text("backend: fake\nrounds: 2\nrounds: 3\n")
    fails(capsys, ["generate", "--config", "run.yaml"], r"run.yaml:3: invalid YAML: duplicate key 'rounds'", f)


@pytest.mark.parametrize("args, pattern", [
    (["--max-tokens", "0"], r"--max-tokens must be >= 1, got 0"),
    (["--temperature", "9"], r"--temperature must be in \[0, 5\], got 9.0"),
    (["--top-p", "0"], r"--top-p must be in \(0, 1\], got 0.0"),
    (["--batch-size", "0"], r"--batch-size must be >= 1, got 0"),
    (["--workers", "0"], r"--workers must be >= 1, got 0"),
    (["--concurrency", "0"], r"--concurrency must be >= 1, got 0"),
    (["--rounds", "x"], None),  # argparse: exit 2 with the flag and value in its usage line
])
def test_numeric_errors_name_the_flag_and_value(tmp_path, monkeypatch, capsys, args, pattern):
    monkeypatch.chdir(tmp_path)
    if pattern:
        fails(capsys, GEN + args, pattern)
        return
    with pytest.raises(SystemExit) as exit_:
        main(GEN + args)
    assert exit_.value.code == 2 and "argument --rounds: invalid int value: 'x'" in capsys.readouterr().err


# ---- feedback ------------------------------------------------------------------------------------


@pytest.mark.parametrize("args, pattern", [
    (["--format", "dpo", "--upto", "2"], r"--upto only applies to --format sft; drop it for --format dpo"),
    (["--format", "trace", "--revision", "all", "--seed", "1"], r"--revision, --seed only apply to --format sft"),
    (["--upto", "0"], r"--upto must be >= 1 \(the last round to use\), got 0"),
    (["--helpful-ratio", "1.5"], r"--helpful-ratio must be in \[0, 1\), got 1.5"),
])
def test_export_options(run, capsys, args, pattern):
    fails(capsys, ["export", "r", "--out", "o.jsonl"] + args, pattern, run / "records.jsonl")
    assert not (run.parent / "o.jsonl").exists()


def test_zero_rows_is_an_error_not_a_silent_success(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(GEN[:-2] + ["--rounds", "0", "--limit", "2", "--out", "r"]) == 0
    assert "warning: rounds is 0" in capsys.readouterr().err
    fails(capsys, ["export", "r", "--format", "dpo", "--out", "dpo.jsonl"], r"no dpo rows to write: .*--rounds 0")
    assert not (tmp_path / "dpo.jsonl").exists()


def test_export_counts_the_failed_records_it_skips(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(GEN + ["--limit", "3", "--out", "r"]) == 0
    records = tmp_path / "r" / "records.jsonl"
    lines = records.read_text().splitlines()
    failed = json.loads(lines[0]) | {"error": "RuntimeError: scripted", "final": None}
    records.write_text("\n".join(lines + [json.dumps(failed)]) + "\n")
    capsys.readouterr()
    assert main(["export", "r", "--format", "dpo", "--out", "dpo.jsonl"]) == 0
    assert "wrote 2 dpo rows to dpo.jsonl (skipped 1 failed records; re-run generate to retry them)" in capsys.readouterr().out


def test_upto_beyond_the_runs_rounds_warns(run, capsys):
    assert main(["export", "r", "--upto", "3", "--out", "o.jsonl"]) == 0
    assert "warning: --upto 3 is more than the run's 1 rounds" in capsys.readouterr().err


def test_missing_relative_model_path_is_reported_as_a_path(tmp_path, monkeypatch):
    from charter.errors import BackendError
    from charter.backends.models import resolve_hf_checkpoint

    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs").mkdir()
    for model in ("runs/sft", "models/a/b", "my-model.gguf"):
        with pytest.raises(BackendError, match=f"model path {re.escape(model)} does not exist"):
            resolve_hf_checkpoint(model)
    assert resolve_hf_checkpoint("HuggingFaceTB/SmolLM2-135M") == "HuggingFaceTB/SmolLM2-135M"  # a hub id


def test_refusal_names_the_changed_part_when_generate_passes_parts(tmp_path):
    from charter.errors import RunError
    from charter.runs.store import RunStore
    from charter.types import Record

    store = RunStore(tmp_path / "r")
    store.open({"rounds": 1}, "fp1", parts={"constitution": "A", "few-shot": "B"})
    store.append(Record(id="x", kind="red_team", prompt=[{"role": "user", "content": "hi"}]))
    store.close()  # an open store holds the run: a second one in this process is refused
    with pytest.raises(RunError, match=r"\(few-shot content changed\)"):
        RunStore(tmp_path / "r").open({"rounds": 1}, "fp2", parts={"constitution": "A", "few-shot": "C"})
