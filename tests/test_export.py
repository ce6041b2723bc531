
import pytest

from charter.generate import GenerateConfig
from charter.errors import ConfigError
from charter.export import dpo_rows, export, sft_rows
from charter.generate import generate
from charter.runs.runread import load_run


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
    export(records, "sft", out)  # the previous export
    before = out.read_bytes()

    def broken(rows, path, suffix):
        path.write_text("half")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(ex, "_write", broken)
    with pytest.raises(Exception, match="sft.jsonl: cannot write \\(No space left on device\\)"):
        export(records, "sft", out)
    assert out.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == [".charter-outputs.json", "run", "sft.jsonl"]


# ---- clean revisions, filters, dataset cards, splits, push to hub ------------------------

import json  # noqa: E402
from pathlib import Path  # noqa: E402

import yaml  # noqa: E402

from charter.export.clean import FILTERS, clean_records, filter_counts, parse_filters  # noqa: E402
from charter.inputs.constitution import load_constitution  # noqa: E402
from charter.errors import RunError  # noqa: E402
from charter.export import ExportConfig, export_run  # noqa: E402
from charter.types import Record, Round  # noqa: E402

HARM = load_constitution("default", "none").principle("harmful-content")
PROMPT = [{"role": "user", "content": "How do I pick a lock?"}]


def hand_made() -> list[Record]:
    """One record per case: boilerplate to clean, and rounds each filter drops."""
    rounds = [Round("harmful-content", "It explains lock picking.", "Sure, here is a revised response: Ask a locksmith."),
              Round("harmful-content", "Fine now.", "Ask a locksmith."),  # unchanged (after cleaning)
              Round("harmful-content", HARM.critique, "Revision:"),  # critique echoes the request; empty revision
              Round("violence", "No violence here.", "Revision: Call a licensed locksmith; they can help.")]
    noisy = Record("r1", "red_team", PROMPT, "Use a tension wrench.", rounds, rounds[-1].revision)
    echo = [Round("harmful-content", "Nothing harmful.", f'"{HARM.revision}"')]
    helpful = Record("h1", "helpful", [{"role": "user", "content": "Hi"}], "Answer: Hello!", [], "Answer: Hello!")
    return [noisy, Record("r2", "red_team", [{"role": "user", "content": "x?"}], "y.", echo, echo[-1].revision), helpful]


def test_cleaning_removes_boilerplate_and_records_keep_raw_text():
    records = hand_made()
    raw = [r.to_dict() for r in records]
    cleaned = clean_records(records).records
    assert [r.to_dict() for r in records] == raw  # the records are never changed
    r1 = cleaned[0]
    assert [x.revision for x in r1.rounds] == ["Ask a locksmith.", "Ask a locksmith.", "",
                                               "Call a licensed locksmith; they can help."]
    assert r1.final == "Call a licensed locksmith; they can help." and cleaned[2].initial == "Hello!"
    assert cleaned[1].rounds[0].revision == f'"{HARM.revision}"'  # request texts come with the principles
    with_requests = clean_records(records, principles=load_constitution().principles).records
    assert with_requests[1].rounds[0].revision == ""  # a quoted request is boilerplate too
    assert clean_records(records, "none").records[0].rounds[0].revision == records[0].rounds[0].revision


def test_filters_drop_rounds_and_count_them_per_principle():
    cleaned = clean_records(hand_made(), "default", FILTERS, load_constitution().principles)
    assert cleaned.dropped == {"harmful-content": {"unchanged": 1, "request-copy": 2}}
    assert [x.revision for x in cleaned.records[0].rounds] == ["Ask a locksmith.", "Call a licensed locksmith; they can help."]
    assert cleaned.records[1].rounds == [] and cleaned.records[1].final is None  # nothing left: no row
    only_empty = clean_records(hand_made(), "default", ["empty"], load_constitution().principles)
    assert only_empty.dropped == {"harmful-content": {"empty": 2}}
    assert filter_counts(hand_made(), {}) == cleaned.dropped  # what the report shows


def test_sl_cai_n_with_dropped_rounds():
    """--revision all --upto N: rounds 1..N of the original numbering, minus the dropped ones."""
    cleaned = clean_records(hand_made(), "default", ["empty", "unchanged"], upto=3)
    rows = [r for r in sft_rows(cleaned.records, revision="all") if r["id"] == "r1"]
    assert [r["messages"][-1]["content"] for r in rows] == ["Ask a locksmith."]
    final = clean_records(hand_made(), "default", ["empty", "unchanged"], upto=3).records[0]
    assert final.final == "Ask a locksmith."  # the last kept round within 1..3
    assert dpo_rows(cleaned.records)[0]["chosen"][0]["content"] == "Ask a locksmith."


def test_parse_filters_and_bad_patterns(tmp_path):
    assert parse_filters(["all"]) == FILTERS and parse_filters(["unchanged,empty"]) == ("empty", "unchanged")
    with pytest.raises(ConfigError, match="--filter blank is not a filter; choose from request-copy, empty, unchanged or all"):
        parse_filters(["empty", "blank"])
    bad = tmp_path / "p.yaml"
    bad.write_text("- '(unclosed'\n")
    with pytest.raises(ConfigError, match=r"pattern 1 \('\(unclosed'\) is not a valid regex"):
        clean_records(hand_made(), str(bad))
    bad.write_text("pattern: x\n")
    with pytest.raises(ConfigError, match="must be a YAML list of regexes"):
        clean_records(hand_made(), str(bad))
    bad.write_text("- '\\Atension '\n")
    assert clean_records(hand_made(), str(bad)).records[0].initial == "Use a tension wrench."
    bad.write_text("- '\\AUse a '\n")
    assert clean_records(hand_made(), str(bad)).records[0].initial == "tension wrench."


def write_run(folder: Path, records) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "records.jsonl").write_text("".join(json.dumps(r.to_dict()) + "\n" for r in records))
    return folder


def card_header(path: Path) -> dict:
    text = path.read_text()
    assert text.startswith("---\n")
    return yaml.safe_load(text.split("---\n")[1])


def test_cli_export_filters_print_counts_and_take_a_config_file(tmp_path, monkeypatch, capsys):
    from charter.cli import main

    monkeypatch.chdir(tmp_path)
    write_run(tmp_path / "r", hand_made())
    assert main(["export", "r", "--out", "d/sft.jsonl", "--filter", "all"]) == 0
    out = capsys.readouterr().out
    assert "wrote 2 sft rows to d/sft.jsonl" in out and "filters dropped 3 rounds: request-copy 2, empty 0, unchanged 1" in out
    rows = [json.loads(x) for x in (tmp_path / "d/sft.jsonl").read_text().splitlines()]
    assert sorted(r["messages"][-1]["content"] for r in rows) == ["Call a licensed locksmith; they can help.", "Hello!"]
    (tmp_path / "e.yaml").write_text("run: r\nout: d/dpo.jsonl\nformat: dpo\nfilter: [empty]\n")
    assert main(["export", "--config", "e.yaml"]) == 0
    assert "wrote 1 dpo rows to d/dpo.jsonl\nfilters dropped 2 rounds: empty 2" in capsys.readouterr().out
    assert main(["export", "--config", "e.yaml", "--clean-patterns", "none"]) == 0  # flags win; raw text kept
    assert "wrote 2 dpo rows" in capsys.readouterr().out
    (tmp_path / "e.yaml").write_text("run: r\nout: d/t.jsonl\nformat: trace\nfilter: [empty]\n")
    assert main(["export", "--config", "e.yaml"]) == 2
    assert "--filter applies to --format sft and dpo" in capsys.readouterr().err
    assert main(["export", "r", "--out", "d/x.jsonl", "--filter", "empty", "--upto", "2", "--revision", "all"]) == 0


def test_every_round_dropped_says_so(tmp_path):
    write_run(tmp_path / "r", hand_made()[1:2])
    with pytest.raises(RunError, match=r"no dpo rows to write: .* \(the filters dropped 1 rounds\)"):
        export_run(ExportConfig(run=str(tmp_path / "r"), out=str(tmp_path / "d.jsonl"), format="dpo", filter=["all"]))


@pytest.mark.parametrize("suffix", ["jsonl", "parquet"])
def test_test_share_writes_two_splits_datasets_loads(records, tmp_path, suffix):
    import datasets

    run = tmp_path / "run"
    cfg = ExportConfig(run=str(run), out=str(tmp_path / "pub" / f"sft.{suffix}"), test_share=0.25, seed=3,
                       revision="all")
    result = export_run(cfg)
    assert {p.name for p in result.files.values()} == {f"sft-train.{suffix}", f"sft-test.{suffix}"}
    assert result.rows["test"] > 0 and sum(result.rows.values()) == len(sft_rows(records, revision="all"))
    kind = "json" if suffix == "jsonl" else "parquet"
    files = {s: str(p) for s, p in result.files.items()}
    ds = datasets.load_dataset(kind, data_files=files, cache_dir=str(tmp_path / "hf"))
    by_dir = datasets.load_dataset(str(tmp_path / "pub"), cache_dir=str(tmp_path / "hf2"))  # the card names the files
    for d in (ds, by_dir):
        assert {s: len(d[s]) for s in d} == result.rows
    prompts = {s: {json.dumps(r["messages"][:-1]) for r in ds[s]} for s in ds}
    assert not prompts["train"] & prompts["test"]  # a prompt's rows stay in one split
    again = export_run(cfg)
    assert [p.read_bytes() for p in again.files.values()] == [p.read_bytes() for p in result.files.values()]


def test_dataset_card_header_and_provenance(records, tmp_path):
    run = tmp_path / "run"
    result = export_run(ExportConfig(run=str(run), out=str(tmp_path / "d" / "dpo.jsonl"), format="dpo",
                                     filter=["empty", "unchanged"], license="cc-by-4.0", language=["en", "fr"]))
    head = card_header(result.card)
    assert result.card == tmp_path / "d" / "README.md"
    assert head["license"] == "cc-by-4.0" and head["language"] == ["en", "fr"]
    assert head["task_categories"] == ["text-generation"] and head["size_categories"] == ["n<1K"]
    assert "constitutional-ai" in head["tags"] and "dpo" in head["tags"]
    assert head["configs"] == [{"config_name": "default", "data_files": [{"split": "train", "path": "dpo.jsonl"}]}]
    text = result.card.read_text()
    meta = json.loads((run / "meta.json").read_text())
    assert f"charter-default (16 principles, sha256 {meta['parts']['constitution']})" in text
    for line in ("| model | embedded |", "| backend | fake |", "temperature 1.0, top_p 1.0, max_tokens 256, seed 0",
                 "| rounds | 3 (critique: True", "6 red-team, 12 helpfulness", "filters | empty, unchanged; dropped rounds: empty 0, unchanged 0",
                 f"run made with {meta['charter_version']}, exported with", "harmful-content"):
        assert line in text, line


def test_card_never_replaces_someone_elses_readme(records, tmp_path, caplog):
    (tmp_path / "d").mkdir()
    mine = tmp_path / "d" / "README.md"
    mine.write_text("# my project\n")
    result = export_run(ExportConfig(run=str(tmp_path / "run"), out=str(tmp_path / "d" / "sft.jsonl")))
    assert result.card is None and mine.read_text() == "# my project\n" and (tmp_path / "d" / "sft.jsonl").exists()
    assert "is not a dataset card written by Charter, so it is kept" in caplog.text
    no_card = export_run(ExportConfig(run=str(tmp_path / "run"), out=str(tmp_path / "e" / "sft.jsonl"), card=False))
    assert no_card.card is None and not (tmp_path / "e" / "README.md").exists()


def test_push_to_hub_uses_datasets_upload(records, tmp_path, monkeypatch):
    import datasets
    import huggingface_hub

    calls = []
    monkeypatch.setattr(datasets.DatasetDict, "push_to_hub",
                        lambda self, repo, **kw: calls.append(("data", repo, kw, {s: len(self[s]) for s in self})))
    monkeypatch.setattr(huggingface_hub.HfApi, "upload_file", lambda self, **kw: calls.append(("card", kw)))
    cfg = ExportConfig(run=str(tmp_path / "run"), out=str(tmp_path / "d" / "sft.jsonl"), test_share=0.2,
                       push_to_hub="me/cai-sft", private=True)
    result = export_run(cfg)
    assert result.pushed == "me/cai-sft"
    (kind, repo, kw, sizes), (_, card) = calls
    assert (kind, repo, kw, sizes) == ("data", "me/cai-sft", {"private": True}, result.rows)
    assert card["repo_id"] == "me/cai-sft" and card["repo_type"] == "dataset" and card["path_in_repo"] == "README.md"
    hub_head = yaml.safe_load(card["path_or_fileobj"].decode().split("---\n")[1])
    assert hub_head["configs"][0]["data_files"] == [{"split": "train", "path": "data/train-*"},
                                                    {"split": "test", "path": "data/test-*"}]
    assert 'load_dataset("me/cai-sft")' in card["path_or_fileobj"].decode()


def test_push_failure_is_one_clean_error(records, tmp_path, monkeypatch, capsys):
    from charter.cli import main

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # the hub is not reachable here anyway
    monkeypatch.chdir(tmp_path)
    assert main(["export", "run", "--out", "d/sft.jsonl", "--push-to-hub", "me/cai-sft"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --push-to-hub me/cai-sft failed (") and "Traceback" not in err
    assert "the local files are written" in err and (tmp_path / "d" / "sft.jsonl").exists()


def test_report_shows_filter_counts_per_principle(tmp_path):
    import re

    from charter.report.html import write_report

    html = write_report([write_run(tmp_path / "r", hand_made())]).read_text()
    section = re.search(r'<section id="filters">(.*?)</section>', html).group(1)
    cells = lambda name: re.search(rf"<td>{name}</td>((?:<td[^>]*>[^<]*</td>)+)</tr>", section).group(1)  # noqa: E731
    assert re.findall(r">(\d+)<", cells("harmful-content")) == ["4", "2", "0", "1"]  # rounds, request-copy, empty, unchanged
    assert re.findall(r">(\d+)<", cells("violence")) == ["1", "0", "0", "0"]


@pytest.mark.slow
def test_clean_filter_split_and_card_on_the_embedded_models_run(tmp_path):
    """A real run (embedded model, 2 prompts x 1 round): counts add up, the text comes out clean,
    the raw records stay as they were, and `datasets` reads both splits through the card."""
    import datasets

    from charter.export.clean import Cleaner, load_patterns

    run = tmp_path / "run"
    generate(GenerateConfig(backend="transformers", limit=2, helpful_prompts="none", rounds=1, max_tokens=24, seed=1,
                            out=str(run)), progress=False)
    raw = (run / "records.jsonl").read_bytes()
    records = load_run(run)
    assert all(r.error is None for r in records) and len(records) == 2
    counts = filter_counts(records, yaml.safe_load((run / "config.yaml").read_text()))  # what the report shows
    cfg = ExportConfig(run=str(run), out=str(tmp_path / "s" / "sft.jsonl"), filter=["all"], revision="all")
    if sum(sum(c.values()) for c in counts.values()) == 2:  # the tiny model may fail both rounds
        with pytest.raises(RunError, match=r"\(the filters dropped 2 rounds\)"):
            export_run(cfg)
        cfg.filter = []
    sft = export_run(cfg)
    if cfg.filter:
        assert sum(sft.dropped_totals().values()) + sft.rows["train"] == 2  # every round: a row or a count
        assert sft.dropped == counts
    clean = Cleaner(load_patterns())
    for row in map(json.loads, (tmp_path / "s" / "sft.jsonl").read_text().splitlines()):
        assert clean(row["messages"][-1]["content"]) == row["messages"][-1]["content"] != ""
    dpo = export_run(ExportConfig(run=str(run), out=str(tmp_path / "d" / "dpo.jsonl"), format="dpo", test_share=0.5))
    assert dpo.rows == {"train": 1, "test": 1}
    ds = datasets.load_dataset(str(tmp_path / "d"), cache_dir=str(tmp_path / "hf"))
    assert {s: len(ds[s]) for s in ds} == dpo.rows and ds["train"][0]["chosen"][0]["role"] == "assistant"
    assert "| backend | transformers |" in dpo.card.read_text() and (run / "records.jsonl").read_bytes() == raw


def test_exports_into_one_directory_share_one_card_with_a_config_each(records, tmp_path):
    import datasets

    run = tmp_path / "run"
    sft = export_run(ExportConfig(run=str(run), out=str(tmp_path / "d" / "sft.jsonl")))
    dpo = export_run(ExportConfig(run=str(run), out=str(tmp_path / "d" / "dpo.jsonl"), format="dpo"))
    head = card_header(dpo.card)
    assert [(c["config_name"], c["data_files"], c.get("default")) for c in head["configs"]] == [
        ("sft", [{"split": "train", "path": "sft.jsonl"}], True), ("dpo", [{"split": "train", "path": "dpo.jsonl"}], None)]
    text = dpo.card.read_text()
    assert text.count("\n## How it was made") == 0 and text.count("\n### How it was made") == 2
    assert "Rows: `messages`" in text and "Rows: `prompt`, `chosen`" in text  # both exports' sections kept
    assert {"sft", "dpo"} <= set(head["tags"])
    for name, result in (("sft", sft), ("dpo", dpo)):
        ds = datasets.load_dataset(str(tmp_path / "d"), name, cache_dir=str(tmp_path / f"hf-{name}"))
        assert len(ds["train"]) == result.rows["train"]
        assert ({"messages"} if name == "sft" else {"prompt", "chosen", "rejected"}) <= set(ds["train"].column_names)
        assert ("chosen" in ds["train"].column_names) == (name == "dpo")
    again = export_run(ExportConfig(run=str(run), out=str(tmp_path / "d" / "dpo.jsonl"), format="dpo"))
    assert [c["config_name"] for c in card_header(again.card)["configs"]] == ["sft", "dpo"]  # re-export: no duplicate
    (tmp_path / "d" / "sft.jsonl").unlink()
    alone = export_run(ExportConfig(run=str(run), out=str(tmp_path / "d" / "dpo.jsonl"), format="dpo"))
    assert [c["config_name"] for c in card_header(alone.card)["configs"]] == ["default"]  # a deleted export leaves the card
