"""The CLI turns user mistakes into one clean line and a non-zero exit, never a traceback."""
import subprocess
import sys

import pytest

from charter.cli import main


@pytest.mark.parametrize("args, message", [
    (["generate", "--backend", "fakee"], "unknown backend 'fakee' (did you mean 'fake'?)"),
    (["generate", "--backend", "fake", "--prompts", "nope.jsonl"], "nope.jsonl: prompt file not found"),
    (["generate", "--backend", "fake", "--constitution", "nope.yaml"], "nope.yaml: file not found"),
    (["generate", "--backend", "fake", "--rounds", "-2"], "--rounds must be >= 0, got -2"),
    (["generate", "--backend", "fake", "--limit", "0"], "--limit must be >= 1, got 0"),
    (["export", "nowhere", "--out", "x.jsonl"], "no run at nowhere"),
])
def test_clean_errors(tmp_path, monkeypatch, capsys, args, message):
    monkeypatch.chdir(tmp_path)
    assert main(args) == 2
    err = capsys.readouterr().err
    assert f"error: {message}" in err and "Traceback" not in err


def test_bad_prompt_line_from_cli(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "p.jsonl").write_text('{"prompt": "fine"}\n{"prompt": \n')
    assert main(["generate", "--backend", "fake", "--prompts", "p.jsonl"]) == 2
    assert "p.jsonl:2: invalid JSON" in capsys.readouterr().err


def test_generate_then_export(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["generate", "--backend", "fake", "--limit", "2", "--quiet", "--out", "r"]) == 0
    assert "6 records written (0 failed)" in capsys.readouterr().out
    assert main(["export", "r", "--format", "dpo", "--out", "r/dpo.jsonl"]) == 0
    assert "wrote 2 dpo rows" in capsys.readouterr().out


def test_help_imports_nothing_heavy():
    """What keeps `charter --help` fast: building the parser imports no engine or ML library."""
    code = "import sys, charter.cli; charter.cli.build_parser(); print(sorted(m for m in ('torch', 'transformers', 'datasets') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


@pytest.mark.parametrize("args", [["constitution", "show"], ["--help"]])
def test_a_reader_that_leaves_early_is_not_an_error(args):
    """`charter constitution show | head -3`: the pipe's reader is gone before Charter writes
    (closed here before the command starts, so the write always meets the closed pipe)."""
    import os

    read_end, write_end = os.pipe()
    os.close(read_end)
    code = "import sys; from charter.cli import console_main; sys.argv[1:] = %r; console_main()" % (args,)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}  # stdout buffered, as for most users
    try:
        done = subprocess.run([sys.executable, "-c", code], stdout=write_end, stderr=subprocess.PIPE, text=True,
                              timeout=120, env=env)
    finally:
        os.close(write_end)
    assert done.returncode == 141 and done.stderr == ""


def test_backend_option_checked(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["generate", "--backend", "fake", "--backend-option", "fial_on=x", "--quiet"]) == 2
    assert "unknown option 'fial_on' for backend 'fake' (did you mean 'fail_on'?)" in capsys.readouterr().err


def test_backend_option_reaches_backend(tmp_path, monkeypatch, capsys):
    """Options merge file < flags and reach the constructor (fail_on makes every record fail)."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "run.yaml").write_text("backend: fake\nbackend_options: {fail_on: 'nothing-matches'}\n")
    args = ["generate", "--config", "run.yaml", "--backend-option", "fail_on=<|user|>", "--limit", "1", "--quiet"]
    assert main(args) == 1
    assert "3 records written (3 failed)" in capsys.readouterr().out


def test_eval_takes_a_config_and_flags_override_it(tmp_path, monkeypatch, capsys):
    import json

    monkeypatch.chdir(tmp_path)
    assert main(["generate", "--backend", "fake", "--limit", "2", "--rounds", "1", "--quiet", "--out", "r"]) == 0
    (tmp_path / "eval.yaml").write_text("run: r\nmodels: [fake:a, fake:b]\njudge: fake:j\nbootstrap: 10\n")
    assert main(["eval", "--config", "eval.yaml", "--bootstrap", "5", "--out", "e.json"]) == 0
    settings = json.loads((tmp_path / "e.json").read_text())["settings"]
    assert settings["bootstrap"] == 5 and settings["models"] == ["fake:a", "fake:b"] and settings["judge"] == "fake:j"
    (tmp_path / "eval.yaml").write_text("run: r\nmodel: [fake:a]\n")
    assert main(["eval", "--config", "eval.yaml"]) == 2
    assert "eval.yaml:2: unknown key 'model' (did you mean 'models'?)" in capsys.readouterr().err


def test_eval_labeler_takes_a_config_and_flags_override_it(tmp_path, monkeypatch, capsys):
    import json

    monkeypatch.chdir(tmp_path)
    rows = [{"prompt": f"Which reply is better? {i}", "corrects": ["kind"], "incorrects": ["rude"]} for i in range(3)]
    (tmp_path / "mc.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "el.yaml").write_text("file: mc.jsonl\nbackend: fake\nlimit: 3\nout: el.json\nplot: none\n")
    assert main(["eval-labeler", "--config", "el.yaml", "--limit", "2", "--quiet"]) == 0
    assert json.loads((tmp_path / "el.json").read_text())["n_rows"] == 2
    assert "wrote el.json" in capsys.readouterr().out
    (tmp_path / "el.yaml").write_text("backend: fake\n")
    assert main(["eval-labeler", "--config", "el.yaml"]) == 2
    assert "el.yaml: 'file' is required (pass FILE or set it in the config file)" in capsys.readouterr().err
