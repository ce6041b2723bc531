"""`charter export` and `charter eval` stream a run: rows staged on disk with flat memory,
in the same order and bytes as the in-memory row functions, and eval reading only its held-out prompts."""
import json
from pathlib import Path

import pytest

from charter.generate import GenerateConfig
from charter.errors import RunError
from charter.export import ExportConfig, dpo_rows, export, export_run, sft_rows, trace_rows
from charter.generate import generate
from charter.runs.runread import load_run


@pytest.fixture
def run(tmp_path) -> Path:
    generate(GenerateConfig(backend="fake", limit=8, rounds=2, helpful_samples=2, out=str(tmp_path / "run")),
             progress=False)
    return tmp_path / "run"


def no_load_run(monkeypatch):
    """Whole-run loads are what streaming replaces: any call fails the test."""
    import charter.runs.runread

    def whole(run):
        raise AssertionError("load_run called: the run must be streamed")

    monkeypatch.setattr(charter.runs.runread, "load_run", whole)


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.mark.parametrize("fmt, options", [("sft", {"helpful_ratio": 0.4, "seed": 3, "revision": "all"}),
                                          ("dpo", {}), ("trace", {})])
def test_streamed_rows_equal_the_row_functions(run, tmp_path, monkeypatch, fmt, options):
    records = load_run(run)
    expected = {"sft": lambda: sft_rows(records, **options), "dpo": lambda: dpo_rows(records),
                "trace": lambda: trace_rows(records)}[fmt]()
    no_load_run(monkeypatch)
    result = export_run(ExportConfig(run=str(run), out=str(tmp_path / "o" / "x.jsonl"), format=fmt,
                                     clean_patterns="none", **options))
    assert read_jsonl(tmp_path / "o" / "x.jsonl") == json.loads(json.dumps(expected))  # same rows, same order
    assert result.rows == {"train": len(expected)}
    assert not [p for p in (tmp_path / "o").iterdir() if p.name.endswith(".tmp")]  # the staged rows are gone


@pytest.mark.parametrize("fmt", ["sft", "trace"])
def test_parquet_in_row_groups_equals_one_table(run, tmp_path, monkeypatch, fmt):
    import pyarrow.parquet as pq

    import charter.export.staging

    whole = tmp_path / "whole.parquet"
    export(load_run(run), fmt, whole)  # one Table.from_pylist of every row
    monkeypatch.setattr(charter.export.staging, "ROW_GROUP", 5)
    export_run(ExportConfig(run=str(run), out=str(tmp_path / "o" / "x.parquet"), format=fmt, clean_patterns="none"))
    streamed, one = pq.read_table(tmp_path / "o" / "x.parquet"), pq.read_table(whole)
    assert streamed.schema == one.schema and streamed.to_pylist() == one.to_pylist()
    assert pq.ParquetFile(tmp_path / "o" / "x.parquet").num_row_groups > 1


def test_split_by_prompt_counts_and_stable_keys(run, tmp_path):
    from charter.export.staging import prompt_key

    assert prompt_key([{"role": "user", "content": "hi"}]) == prompt_key([{"content": "hi", "role": "user"}])
    assert prompt_key([{"role": "user", "content": "hi"}]) == -7235730004343814349  # the same in every process
    cfg = ExportConfig(run=str(run), out=str(tmp_path / "o" / "sft.jsonl"), test_share=0.25, seed=1)
    result = export_run(cfg)
    rows = {s: read_jsonl(p) for s, p in result.files.items()}
    prompts = {s: {json.dumps(r["messages"][:-1]) for r in rows[s]} for s in rows}
    assert not prompts["train"] & prompts["test"] and len(prompts["test"]) == round(0.25 * 16)
    assert sorted(map(json.dumps, rows["train"] + rows["test"])) == sorted(map(json.dumps, sft_rows(load_run(run))))


def test_failed_export_leaves_nothing_behind(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    generate(GenerateConfig(backend="fake", limit=2, rounds=0, helpful_prompts="none", out="r"), progress=False)
    with pytest.raises(RunError, match="no dpo rows to write"):
        export_run(ExportConfig(run="r", out="new/deeper/dpo.jsonl", format="dpo"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r"]  # no staged file, no folder it made


def test_eval_streams_and_stops_at_the_limit(tmp_path, monkeypatch):
    import charter.runs.runread
    from charter.evaluate.suite import EvalConfig, evaluate

    generate(GenerateConfig(backend="fake", limit=30, rounds=1, helpful_prompts="none", out=str(tmp_path / "r")),
             progress=False)
    read, iter_run = [], charter.runs.runread.iter_run

    def counted(path):
        for r in iter_run(path):
            read.append(r.id)
            yield r

    no_load_run(monkeypatch)
    monkeypatch.setattr(charter.runs.runread, "iter_run", counted)
    result = evaluate(EvalConfig(run=str(tmp_path / "r"), models=["fake:base"], limit=4, bootstrap=5))
    assert result.records == 4 and len(read) == 4  # no helpfulness records in this run: stop at 4
    assert [a["id"] for a in result.answers] == read


@pytest.mark.slow
def test_streamed_export_and_eval_on_the_embedded_model(tmp_path, monkeypatch, capsys):
    """A real run (embedded model, 3 prompts x 1 round): Parquet in row groups and a split come out
    of the stream, and eval reads one prompt of it and answers it with the same model."""
    import pyarrow.parquet as pq

    import charter.export.staging
    from charter.cli import main

    monkeypatch.chdir(tmp_path)
    generate(GenerateConfig(backend="transformers", limit=3, helpful_prompts="none", rounds=1, max_tokens=12, seed=1,
                            out="r"), progress=False)
    monkeypatch.setattr(charter.export.staging, "ROW_GROUP", 1)
    assert main(["export", "r", "--out", "d/sft.parquet", "--test-share", "0.34", "--clean-patterns", "none"]) == 0
    tables = [pq.read_table(tmp_path / "d" / f"sft-{s}.parquet") for s in ("train", "test")]
    assert [t.num_rows for t in tables] == [2, 1]
    assert sorted(r["id"] for t in tables for r in t.to_pylist()) == sorted(r["id"] for r in sft_rows(load_run("r")))
    assert main(["eval", "r", "--models", "embedded", "--limit", "1", "--max-tokens", "4", "--bootstrap", "5"]) == 0
    saved = json.loads((tmp_path / "r" / "eval.json").read_text())
    assert saved["records"] == 1 and saved["answers"][0]["id"] == load_run("r")[0].id
