
import pytest

from charter.config import GenerateConfig
from charter.errors import ConfigError
from charter.export import dpo_rows, export, sft_rows
from charter.generate import generate
from charter.store import load_run


@pytest.fixture
def records(tmp_path):
    cfg = GenerateConfig(backend="fake", limit=6, rounds=3, helpful_samples=2, out=str(tmp_path / "run"))
    generate(cfg, progress=False)
    return load_run(tmp_path / "run")


def test_sft_final_and_all_rounds(records):
    final = sft_rows(records)
    red = [r for r in final if r["kind"] == "red_team"]
    assert len(red) == 6 and len(final) == 6 + 12
    by_id = {r.id: r for r in records}
    for row in red:
        assert row["messages"][-1] == {"role": "assistant", "content": by_id[row["id"]].final}
        assert row["messages"][:-1] == by_id[row["id"]].prompt
    all_rounds = [r for r in sft_rows(records, revision="all", upto=2) if r["kind"] == "red_team"]
    assert len(all_rounds) == 12
    upto1 = [r for r in sft_rows(records, upto=1) if r["kind"] == "red_team"]
    assert {r["messages"][-1]["content"] for r in upto1} == {by_id[r["id"]].rounds[0].revision for r in upto1}


def test_helpful_ratio(records):
    rows = sft_rows(records, helpful_ratio=0.25)
    kinds = [r["kind"] for r in rows]
    assert kinds.count("red_team") == 6 and kinds.count("helpful") == 2
    with pytest.raises(ConfigError):
        sft_rows(records, helpful_ratio=1.5)


def test_dpo_direction_chosen_is_the_final_revision_rejected_the_initial_answer(records):
    rows = dpo_rows(records)
    by_id = {r.id: r for r in records}
    red = [r for r in records if r.kind == "red_team"]
    assert len(rows) == len(red) == 6
    for row in rows:
        rec = by_id[row["id"]]
        assert row["prompt"] == rec.prompt
        assert row["chosen"] == [{"role": "assistant", "content": rec.rounds[-1].revision}]
        assert row["rejected"] == [{"role": "assistant", "content": rec.initial}]


def test_dpo_skips_failed_and_unrevised_records(records):
    from dataclasses import replace

    failed = replace(records[0], error="RuntimeError: x", final=None)
    same = replace(records[1], final=records[1].initial)
    assert {r["id"] for r in dpo_rows([failed, same] + records[2:])} == {r.id for r in records[2:] if r.kind == "red_team"}


@pytest.mark.parametrize("fmt", ["sft", "dpo", "trace"])
@pytest.mark.parametrize("suffix", ["jsonl", "parquet"])
def test_exports_load_with_datasets(records, tmp_path, fmt, suffix):
    import datasets

    out = tmp_path / f"{fmt}.{suffix}"
    n = export(records, fmt, out)
    ds = datasets.load_dataset("json" if suffix == "jsonl" else "parquet", data_files=str(out), split="train",
                               cache_dir=str(tmp_path / "hf"))
    assert len(ds) == n > 0
    if fmt == "sft":
        assert ds[0]["messages"][-1]["role"] == "assistant"
    if fmt == "dpo":
        assert set(ds.column_names) >= {"prompt", "chosen", "rejected"}
    if fmt == "trace":
        assert "rounds" in ds.column_names


def test_bad_out_suffix(records, tmp_path):
    with pytest.raises(ConfigError, match=r"\.jsonl or \.parquet"):
        export(records, "sft", tmp_path / "x.csv")


def test_failed_write_leaves_no_half_file(records, tmp_path, monkeypatch):
    import charter.export as ex

    out = tmp_path / "sft.jsonl"
    out.write_text("previous export\n")

    def broken(rows, path, suffix):
        path.write_text("half")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(ex, "_write", broken)
    with pytest.raises(Exception, match="sft.jsonl: cannot write \\(No space left on device\\)"):
        export(records, "sft", out)
    assert out.read_text() == "previous export\n" and sorted(p.name for p in tmp_path.iterdir()) == ["run", "sft.jsonl"]
