"""Issue 22: streaming from prompt file to records file (flat memory), records that scale, the
dry-run projection. bench/scale.py measures the same at 10k-300k prompts."""
import json
import os

import pytest

from charter import idset, store as store_mod
from charter.backends.fake import FakeBackend
from charter.cli import main
from charter.config import GenerateConfig
from charter.cost import run_cost
from charter.errors import InputError
from charter.generate import generate
from charter.pipeline import Settings, run_items
from charter.prompts import iter_prompts, load_prompts
from charter.store import RunStore, iter_run, load_run
from charter.types import Constitution, Principle, PromptItem, Record


def prompt_file(tmp_path, n, tail=""):
    path = tmp_path / "p.jsonl"
    path.write_text("".join(json.dumps({"prompt": f"question {i}?"}) + "\n" for i in range(n)) + tail)
    return path


def cfg(tmp_path, prompts, **kw):
    settings = {"rounds": 1, "max_tokens": 8, **kw}
    return GenerateConfig(backend="fake", model="fake", prompts=str(prompts), helpful_prompts="none",
                          out=str(tmp_path / "run"), **settings)


# ---- prompts are read lazily ---------------------------------------------------------------------


def test_prompts_stream_and_limit_stops_reading(tmp_path):
    path = prompt_file(tmp_path, 5, tail="{not json\n")
    stream = iter_prompts(str(path), "red_team")
    assert next(stream).messages[0]["content"] == "question 0?"  # the bad line is not read yet
    with pytest.raises(InputError, match=r"p.jsonl:6: invalid JSON"):
        list(stream)
    items = load_prompts(str(path), "red_team", limit=5)  # stops before the bad line
    assert [it.id for it in items] == [it.id for it in iter_prompts(str(path), "red_team", limit=5)]
    assert len(items) == 5


def test_parquet_prompts_stream_by_batches_with_the_same_ids(tmp_path, monkeypatch):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from charter import prompts

    rows = [{"prompt": f"question {i}?"} for i in range(10)]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "p.parquet", row_group_size=3)
    monkeypatch.setattr(prompts, "PARQUET_BATCH", 2)
    want = load_prompts(str(prompt_file(tmp_path, 10)), "red_team")
    got = load_prompts(str(tmp_path / "p.parquet"), "red_team")
    assert [it.id for it in got] == [it.id for it in want]


def test_idset_add_discard_contains():
    s = idset.IdSet()
    for i in range(20):
        s.add(f"id-{i}")
    assert len(s) == 20 and "id-7" in s and "id-20" not in s and 7 not in s
    s.discard("id-3")
    assert "id-3" not in s and len(s) == 19
    s.add("id-3")
    assert "id-3" in s and s.has_key(idset.key("id-3"))


# ---- the pipeline takes a stream ------------------------------------------------------------------


def items(n, taken):
    for i in range(n):
        taken.append(i)
        yield PromptItem(f"p{i}", "red_team", ({"role": "user", "content": f"q{i}"},))


@pytest.mark.parametrize("concurrency", [None, 3])
def test_schedulers_take_prompts_as_conversations_finish(concurrency):
    backend = FakeBackend(record_calls=False)
    backend.concurrency = concurrency
    constitution = Constitution("c", (Principle("p", "critique?", "revise!"),))
    taken, ahead = [], []
    settings = Settings(rounds=1, batch_size=2)
    run_items(backend, constitution, settings, items(40, taken), lambda rec: ahead.append(len(taken) - len(ahead)))
    assert len(ahead) == 40 and backend.calls == []
    assert max(ahead) <= (2 * settings.batch_size if concurrency is None else concurrency) + 1


# ---- the run store: done ids without the records, checkpointed opens -------------------------


def test_resume_reads_ids_only_and_a_changed_file_is_checked_again(tmp_path, monkeypatch, fake):
    c = cfg(tmp_path, prompt_file(tmp_path, 6))
    assert generate(c, backend=fake, progress=False).records == 6
    parsed = []
    real = store_mod.parse_record
    monkeypatch.setattr(store_mod, "parse_record", lambda raw: parsed.append(raw) or real(raw))
    again = FakeBackend()
    assert generate(c, backend=again, progress=False).skipped == 6 and again.calls == []
    assert parsed == []  # the store's own lines, covered by its checkpoint: ids only
    records = tmp_path / "run" / "records.jsonl"
    lines = records.read_bytes().splitlines(keepends=True)
    records.write_bytes(b"".join(lines[:2] + [b'{"id": "x", "kind": 1}\n'] + lines[3:]))  # damaged in the middle
    s = generate(c, backend=FakeBackend(), progress=False)
    assert s.records == 1 and s.skipped == 5 and len(parsed) >= 5  # every line checked, the bad one set aside
    assert (tmp_path / "run" / "records.bad.jsonl").read_bytes() == b'{"id": "x", "kind": 1}\n'


def test_record_lines_start_with_the_id_and_end_with_the_error():
    """What the store reads from its own lines without parsing them (store._FAST_ID, the error)."""
    keys = list(Record(id="a", kind="red_team", prompt=[]).to_dict())
    assert keys[0] == "id" and keys[-1] == "error"


def test_lines_after_the_checkpoint_are_checked(tmp_path):
    """A killed run never saved its last checkpoint: what it appended since is checked line by line."""
    store = RunStore(tmp_path / "r")
    store.open({"rounds": 1}, "f")
    store.append(Record(id="a", kind="red_team", prompt=[]))
    store.close()
    store = RunStore(tmp_path / "r")
    store.open({"rounds": 1}, "f")
    store.append(Record(id="b", kind="red_team", prompt=[], error="boom"))
    with (tmp_path / "r" / "records.jsonl").open("ab") as fh:
        fh.write(b'{"id": "c", "kind": "red_team", "prompt": [], "error": null}\n{"id": "d"')  # no close: killed
    again = RunStore(tmp_path / "r")
    assert again.set_aside_damaged({"bytes": 1, "crc": 0}) == [4]  # a stale checkpoint: all checked
    assert "a" in again.done and "c" in again.done and "b" not in again.done


def test_set_aside_does_not_rewrite_a_sound_file(tmp_path):
    from charter.jsonl import set_aside

    path = tmp_path / "rows.jsonl"
    path.write_text('{"n": 1}\n{"n": 2}\n')
    before = os.stat(path)
    assert set_aside(path, tmp_path / "bad.jsonl") == []
    assert os.stat(path).st_ino == before.st_ino and not (tmp_path / "bad.jsonl").exists()


def test_iter_run_streams_in_load_order_with_the_last_line_of_an_id(tmp_path):
    path = tmp_path / "records.jsonl"
    rows = [Record(id="a", kind="red_team", prompt=[], error="x"), Record(id="b", kind="red_team", prompt=[]),
            Record(id="a", kind="red_team", prompt=[], final="ok")]
    path.write_text("".join(json.dumps(r.to_dict()) + "\n" for r in rows))
    got = list(iter_run(path))
    assert [(r.id, r.final, r.error) for r in got] == [("a", "ok", None), ("b", None, None)]
    assert got == load_run(path)
    assert run_cost(iter(got)) == run_cost(got)


# ---- dry run, cost cache, report sample ---------------------------------------------------------------


def test_dry_run_counts_and_writes_nothing(tmp_path, capsys, fake):
    path = prompt_file(tmp_path, 4)
    args = ["generate", "--backend", "fake", "--model", "fake", "--prompts", str(path), "--helpful-prompts", "none",
            "--rounds", "2", "--max-tokens", "10", "--out", str(tmp_path / "run"), "--dry-run"]
    assert main(args) == 0
    assert "4 prompts to run: 20 requests, at most 200 generated tokens" in capsys.readouterr().out
    assert not (tmp_path / "run").exists()
    generate(cfg(tmp_path, path, limit=3, rounds=2, max_tokens=10), backend=fake, progress=False)
    assert main(args) == 0
    assert "1 prompts to run (3 already done): 5 requests" in capsys.readouterr().out


def test_cost_line_is_cached_until_the_records_change(tmp_path, monkeypatch, fake):
    from charter import cost
    from charter.cli.generate import cost_line

    c = cfg(tmp_path, prompt_file(tmp_path, 3))
    generate(c, backend=fake, progress=False)
    first = cost_line(c)
    monkeypatch.setattr(cost, "run_cost", lambda *a, **k: pytest.fail("records read again"))
    generate(c, backend=FakeBackend(), progress=False)  # nothing to do: the records are unchanged
    assert cost_line(c) == first


def test_report_shows_a_sample_of_chains_and_says_how_to_see_all(tmp_path, monkeypatch, fake):
    from charter.report import digest
    from charter.report.html import load_report_run, render

    generate(cfg(tmp_path, prompt_file(tmp_path, 8)), backend=fake, progress=False)
    monkeypatch.setattr(digest, "CHAINS", 3)
    run = load_report_run(tmp_path / "run")
    page = render([run])
    assert page.count('<details class="chain"') == 3 and "the first 3 of 8" in page
    assert "--format trace" in page and run.digest.records == 8 and run.digest.cost.records == 8


@pytest.mark.slow
def test_streamed_run_resumes_on_the_embedded_model(tmp_path, capsys):
    """The real model: prompts streamed from a file, a dry run, then a run and its resume."""
    path = prompt_file(tmp_path, 2)
    base = ["generate", "--backend", "transformers", "--prompts", str(path), "--helpful-prompts", "none",
            "--rounds", "1", "--max-tokens", "8", "--out", str(tmp_path / "run"), "--quiet"]
    assert main(base + ["--dry-run"]) == 0
    assert "2 prompts to run: 6 requests, at most 48 generated tokens" in capsys.readouterr().out
    assert main(base) == 0
    assert "2 records written (0 failed)" in capsys.readouterr().out
    assert main(base) == 0
    assert "0 records written (0 failed), 2 already done" in capsys.readouterr().out
    recs = load_run(tmp_path / "run")
    assert len(recs) == 2 and all(r.error is None and r.final for r in recs)
