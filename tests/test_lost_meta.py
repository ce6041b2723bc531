"""A run whose meta.json is lost is not a dead end: the refusal says how its config.yaml compares
with the command, and --force rebuilds meta.json and continues the run with its records kept."""
import json

from charter.cli import main
from support import GEN, fails


def test_a_run_without_meta_json_is_rebuilt_with_force(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(GEN + ["--limit", "3", "--out", "r"]) == 0
    records = (tmp_path / "r" / "records.jsonl").read_bytes()
    (tmp_path / "r" / "meta.json").unlink()
    fails(capsys, GEN + ["--limit", "3", "--out", "r"], r"r is a run whose meta.json is missing, so its settings "
          r"cannot be checked \(its config.yaml matches this command\); pass --force to rebuild meta.json",
          tmp_path / "r" / "records.jsonl")
    fails(capsys, GEN + ["--limit", "3", "--rounds", "2", "--out", "r"], r"this command differs from its "
          r"config.yaml in rounds\)")
    assert main(GEN + ["--limit", "3", "--out", "r", "--force"]) == 0
    err = capsys.readouterr().err
    assert "had no meta.json; rebuilt" in err
    assert (tmp_path / "r" / "records.jsonl").read_bytes() == records  # nothing generated twice
    assert json.loads((tmp_path / "r" / "meta.json").read_text())["fingerprint"]
    assert main(GEN + ["--limit", "3", "--out", "r"]) == 0  # and it resumes as any run does


def test_someone_elses_directory_is_still_refused_with_force(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "records.jsonl").write_text('{"mine": 1}\n')
    (tmp_path / "d" / "notes.txt").write_text("mine")
    fails(capsys, GEN + ["--out", "d", "--force"], r"--out d is not a Charter run but holds files",
          tmp_path / "d" / "records.jsonl")
