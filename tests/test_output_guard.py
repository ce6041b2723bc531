"""One output guard for every command that writes a file (charter.runs.files): an existing file is
replaced only when Charter recorded writing it as that command's output and it is unchanged since;
a command's inputs, a run's files, symlinks and anyone else's files are refused, byte for byte
untouched. Fake backend."""
import json

import pytest

from charter.runs import files
from charter.cli import main
from charter.errors import ConfigError
from support import GEN, fails

ROWS = [{"prompt": f"Which reply is better? {i}", "corrects": ["kind"], "incorrects": ["rude"]} for i in range(3)]


@pytest.fixture
def work(tmp_path, monkeypatch, capsys):
    """A run `r` generated from the prompt file p.jsonl, a multiple-choice file, someone's notes."""
    monkeypatch.chdir(tmp_path)
    prompts = [{"id": f"p{i}", "prompt": f"How do I pick lock {i}?"} for i in range(3)]  # '{"id": "...' lines
    (tmp_path / "p.jsonl").write_text("".join(json.dumps(p) + "\n" for p in prompts))
    (tmp_path / "mc.jsonl").write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    (tmp_path / "notes.jsonl").write_text(json.dumps({"messages": [{"role": "user", "content": "my own dataset"},
                                                                  {"role": "assistant", "content": "kept"}]}) + "\n")
    assert main(GEN + ["--prompts", "p.jsonl", "--out", "r"]) == 0
    assert main(["eval", "r", "--models", "fake:base", "--bootstrap", "2"]) == 0  # r/eval.json: report's input
    capsys.readouterr()
    return tmp_path


# command -> (its arguments before --out, an input file of it)
COMMANDS = {
    "generate": (GEN + ["--prompts", "p.jsonl"], "p.jsonl"),  # --out is a run directory
    "train": (["train", "sft", "--data", "notes.jsonl"], "notes.jsonl"),  # --out is a model directory
    "export": (["export", "r"], "p.jsonl"),  # the prompts the run was generated from
    "report": (["report", "r"], "r/eval.json"),
    "eval": (["eval", "r", "--models", "fake:base", "--bootstrap", "2"], "p.jsonl"),
    "eval-labeler": (["eval-labeler", "mc.jsonl", "--backend", "fake", "--quiet"], "mc.jsonl"),
    "label": (["label", "--backend", "fake", "--prompts", "p.jsonl", "--limit", "2", "--quiet"], "p.jsonl"),
}
SUFFIX = {"export": ".jsonl", "report": ".html", "eval": ".json", "eval-labeler": ".json", "label": ".jsonl"}


@pytest.mark.parametrize("command", COMMANDS)
def test_every_out_refuses_inputs_run_files_and_unrelated_files(work, capsys, command):
    if command == "train":
        pytest.importorskip("trl")
    args, given = COMMANDS[command]
    theirs = work / f"theirs{SUFFIX.get(command, '.txt')}"  # a name the command would take
    theirs.write_text('{"messages": [{"role": "user", "content": "a TRL dataset of theirs"}]}\n')
    for target in (given, "r/records.jsonl", theirs.name):
        fails(capsys, args + ["--out", target], r"--out \S+ (is one of|already exists and is not a|is a )",
              work / target, work / "p.jsonl", work / "r" / "records.jsonl", work / "notes.jsonl", theirs)


@pytest.mark.parametrize("command", ["export", "report", "eval", "eval-labeler"])  # label: below (the fake ties)
def test_every_out_replaces_its_own_earlier_output(work, capsys, command):
    args, _ = COMMANDS[command]
    out = work / f"mine{SUFFIX[command]}"
    for _ in range(2):
        assert main(args + ["--out", out.name]) == 0, capsys.readouterr().err
    assert json.loads((work / files.MANIFEST).read_text())["files"][out.name]["kind"].startswith("Charter ")


def test_label_replaces_its_own_earlier_output(tmp_path):
    from charter.rlcai.labels import LabelConfig, label
    from support import Scripted, longer, policy

    cfg = LabelConfig(backend="fake", limit=2, samples=2, max_tokens=20, out=str(tmp_path / "labels.jsonl"))
    assert label(cfg, policy=policy(), feedback=Scripted(longer), progress=False).rows
    assert label(cfg, policy=policy(), feedback=Scripted(longer), progress=False, overwrite=True).rows


def test_an_edited_output_is_no_longer_ours(work, capsys):
    assert main(["export", "r", "--out", "sft.jsonl"]) == 0
    with (work / "sft.jsonl").open("a") as fh:
        fh.write('{"messages": [{"role": "user", "content": "added by hand"}]}\n')
    fails(capsys, ["export", "r", "--out", "sft.jsonl"], r"was written by Charter as a Charter export but has "
          r"changed since", work / "sft.jsonl")


def test_another_commands_output_is_refused(work, capsys):
    assert main(["eval-labeler", "mc.jsonl", "--backend", "fake", "--quiet", "--out", "el.json"]) == 0
    fails(capsys, ["report", "r", "--out", "el.json"],
          r"--out el.json is a Charter eval-labeler result, not a Charter report", work / "el.json")


def test_an_export_from_before_the_manifest_is_refused_with_the_way_out(work, capsys):
    assert main(["export", "r", "--out", "sft.jsonl"]) == 0
    (work / files.MANIFEST).unlink()  # as an older Charter left it: the file, no record of it
    msg = fails(capsys, ["export", "r", "--out", "sft.jsonl"], r"already exists and is not a Charter export "
                r"\(Charter has no record of writing it; older versions kept none\)", work / "sft.jsonl")
    assert "choose another name, e.g. r/sft.jsonl, or remove it first" in msg


def test_the_default_plot_never_replaces_a_png(work, capsys):
    (work / "el.png").write_bytes(b"\x89PNG someone's figure")
    fails(capsys, ["eval-labeler", "mc.jsonl", "--backend", "fake", "--quiet", "--out", "el.json"],
          r"--plot el.png already exists .* pass --plot PATH \(default: OUT with .png\) or --plot none",
          work / "el.png")
    assert not (work / "el.json").exists()
    for _ in range(2):  # a plot path of its own, then its own plot again
        assert main(["eval-labeler", "mc.jsonl", "--backend", "fake", "--quiet", "--out", "el.json",
                     "--plot", "f.png"]) == 0


def test_the_manifest_itself_and_a_symlinked_out_are_refused(work, capsys):
    assert main(["export", "r", "--out", "sft.jsonl"]) == 0
    fails(capsys, ["export", "r", "--out", files.MANIFEST], r"one of the run's own files|must end in",
          work / files.MANIFEST)
    (work / "link.json").symlink_to(work / "notes.jsonl")
    fails(capsys, ["eval-labeler", "mc.jsonl", "--backend", "fake", "--out", "link.json"], r"is a symbolic link",
          work / "notes.jsonl")


def test_a_growing_output_passes_while_its_head_is_kept(tmp_path):
    out = tmp_path / "labels.jsonl"
    out.write_text('{"a": 1}\n')
    files.mark_written(out, "Charter labels", growing=True)
    with out.open("a") as fh:
        fh.write('{"a": 2}\n')
    assert files.check_out(out, "Charter labels") == out
    out.write_text('{"b": 1}\n{"a": 2}\n')
    with pytest.raises(ConfigError, match="has changed since"):
        files.check_out(out, "Charter labels")


# ---- export's staged rows: gone after SIGTERM and a full disk, which names the file ---------------

SIGTERM_EXPORT = """
import os, signal, sys
import charter.export.staging
from charter.cli import main

add = charter.export.staging.Staging.add
def add_then_term(self, row, prompt):
    if len(self) == 1:
        os.kill(os.getpid(), signal.SIGTERM)
    return add(self, row, prompt)
charter.export.staging.Staging.add = add_then_term
sys.exit(main(["export", "r", "--out", "out/sft.jsonl", "--no-card"]))
"""


def test_sigterm_during_export_removes_the_staged_rows(work):
    import subprocess
    import sys

    (work / "out").mkdir()
    done = subprocess.run([sys.executable, "-c", SIGTERM_EXPORT], cwd=work, capture_output=True, text=True, timeout=120)
    assert done.returncode == 143, done.stderr
    assert "interrupted: the export stopped" in done.stderr and "Traceback" not in done.stderr
    assert list((work / "out").iterdir()) == []


class FullDisk:
    """A file whose writes and final flush fail as on a full disk (what a buffered writer sees)."""

    def __init__(self, real):
        self.real = real

    def write(self, data):
        raise OSError(28, "No space left on device")

    def close(self):
        self.real.close()
        raise OSError(28, "No space left on device")


def test_full_disk_during_export_names_the_file_and_removes_the_staged_rows(work, capsys, monkeypatch):
    import charter.export.staging

    init = charter.export.staging.Staging.__init__

    def full(self, *a, **kw):
        init(self, *a, **kw)
        self._out = FullDisk(self._out)

    monkeypatch.setattr(charter.export.staging.Staging, "__init__", full)
    (work / "out").mkdir()
    fails(capsys, ["export", "r", "--out", "out/sft.jsonl"], r"error: out/sft.jsonl \(rows staged in \.sft\.jsonl\.\w+"
          r"\.tmp\): cannot write \(No space left on device\); free space on that disk")
    assert list((work / "out").iterdir()) == []
