"""Streaming from prompt file to records file (flat memory), records that scale, the
dry-run projection. bench/scale.py measures the same at 10k-300k prompts."""
import json
import os

import pytest

from charter.runs import idset

from charter.runs import store as store_mod
from charter.backends.fake import FakeBackend
from charter.cli import main
from charter.generate import GenerateConfig
from charter.pipeline.cost import run_cost
from charter.errors import InputError
from charter.generate import generate
from charter.pipeline.cai import Settings, run_items
from charter.inputs.prompts import iter_prompts, load_prompts
from charter.runs.store import RunStore
from charter.runs.runread import iter_run, load_run
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

    from charter.inputs import prompts

    rows = [{"prompt": f"question {i}?"} for i in range(10)]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "p.parquet", row_group_size=3)
    monkeypatch.setattr(prompts, "PARQUET_BATCH", 2)
    want = load_prompts(str(prompt_file(tmp_path, 10)), "red_team")
    got = load_prompts(str(tmp_path / "p.parquet"), "red_team")
    assert [it.id for it in got] == [it.id for it in want]


@pytest.mark.parametrize("messages", [
    [{"role": "user", "content": "hi"}],
    [{"role": "system", "content": 'a "q" \\ \n\t\x00\x1f é 中 \u2028 😀'}, {"role": "user", "content": ""}],
    [{"role": "user", "content": "x", "name": "extra"}], [{"content": "c", "role": "user"}], []])
def test_prompt_digest_is_the_json_one(messages):
    """Ids must not change: the hand-written encoding equals json.dumps(sort_keys, ensure_ascii=False)."""
    import hashlib

    from charter.inputs.prompts import _digest

    for kind in ("red_team", "helpful"):
        blob = json.dumps([kind, messages], sort_keys=True, ensure_ascii=False)
        assert _digest(kind, messages) == hashlib.sha1(blob.encode()).hexdigest()[:12]


def test_engine_seconds_union_in_flat_memory():
    import random

    from charter.pipeline.cost import Union, busy_seconds

    rng = random.Random(0)
    for _ in range(200):
        spans = [(a, a + rng.uniform(0, 5)) for a in (rng.uniform(0, 100) for _ in range(rng.randint(0, 40)))]
        merged = []
        for a, b in sorted(spans):
            if merged and a <= merged[-1][1]:
                merged[-1][1] = max(merged[-1][1], b)
            else:
                merged.append([a, b])
        assert busy_seconds(spans) == pytest.approx(sum(b - a for a, b in merged))
    union = Union()
    for i in range(1000):  # overlapping spans in finish order, as a run appends them: one interval kept
        union.add(i * 0.5, i * 0.5 + 2)
    assert len(union.starts) == 1 and union.length() == pytest.approx(501.5)


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


# ---- a finished run resumes without reading prompts or records ---------------------------------


def full_path(monkeypatch):
    """Counts the full resume path: the prompt pass (project) and the store's line scan."""
    import importlib

    gen_mod = importlib.import_module("charter.generate")  # `charter.generate` is the function
    calls = {"project": 0, "scan": 0}
    project, scan = gen_mod.project, RunStore._scan
    monkeypatch.setattr(gen_mod, "project", lambda *a, **k: calls.__setitem__("project", calls["project"] + 1) or project(*a, **k))
    monkeypatch.setattr(RunStore, "_scan", lambda self, c: calls.__setitem__("scan", calls["scan"] + 1) or scan(self, c))
    return calls


def meta(tmp_path):
    return json.loads((tmp_path / "run" / "meta.json").read_text())


def test_a_finished_run_is_marked_and_resumes_at_once(tmp_path, monkeypatch, caplog, fake):
    c = cfg(tmp_path, prompt_file(tmp_path, 5))
    assert generate(c, backend=fake, progress=False).records == 5
    assert meta(tmp_path)["complete"]["prompts"] == 5
    calls = full_path(monkeypatch)
    again = FakeBackend()
    with caplog.at_level("INFO", logger="charter.generate"):
        s = generate(c, backend=again, progress=False)
    assert (s.records, s.skipped, again.calls) == (0, 5, []) and calls == {"project": 0, "scan": 0}
    assert "nothing to do: all 5 prompts done" in caplog.text
    assert "0 records written (0 failed), 5 already done" in s.line()


def test_the_mark_is_ignored_when_a_prompt_file_changes(tmp_path, monkeypatch, fake):
    path = prompt_file(tmp_path, 4)
    generate(cfg(tmp_path, path), backend=fake, progress=False)
    calls = full_path(monkeypatch)
    st = os.stat(path)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))  # touched: the same content, re-read
    assert generate(cfg(tmp_path, path), backend=FakeBackend(), progress=False).skipped == 4
    assert calls == {"project": 1, "scan": 1}
    with path.open("a") as fh:  # a new prompt: run, not skipped
        fh.write(json.dumps({"prompt": "one more?"}) + "\n")
    s = generate(cfg(tmp_path, path), backend=FakeBackend(), progress=False)
    assert (s.records, s.skipped) == (1, 4)
    assert generate(cfg(tmp_path, path), backend=FakeBackend(), progress=False).skipped == 5
    assert calls == {"project": 2, "scan": 2}  # marked again after each full pass


@pytest.mark.parametrize("change", ["append-failed", "edit", "force", "limit"])
def test_the_mark_is_ignored_when_the_records_or_settings_change(tmp_path, monkeypatch, fake, change):
    c = cfg(tmp_path, prompt_file(tmp_path, 4))
    generate(c, backend=fake, progress=False)
    records = tmp_path / "run" / "records.jsonl"
    first = json.loads(records.read_text().splitlines()[0])
    calls, force = full_path(monkeypatch), change == "force"
    if change == "append-failed":  # another writer failed the first prompt: it must be retried
        with records.open("a") as fh:
            fh.write(json.dumps({**first, "final": None, "error": "boom"}) + "\n")
    elif change == "edit":  # the same size, one byte changed
        data = records.read_bytes()
        at = data.index(first["final"].encode())
        records.write_bytes(data[:at] + b"X" + data[at + 1:])
    elif change == "limit":
        c = cfg(tmp_path, c.prompts, limit=2)
    s = generate(c, backend=FakeBackend(), force=force, progress=False)
    assert calls["project"] == 1 and calls["scan"] >= 1  # an edit under the checkpoint: a second, full check
    assert (s.records, s.skipped) == ((1, 3) if change == "append-failed" else (0, 2) if change == "limit" else (0, 4))


def test_a_run_with_a_failed_record_is_not_marked(tmp_path, monkeypatch):
    c = cfg(tmp_path, prompt_file(tmp_path, 3), batch_size=1)  # the failure fails one record, not a batch
    s = generate(c, backend=FakeBackend(fail_on="question 1?"), progress=False)
    assert s.failures == 1 and "complete" not in meta(tmp_path)
    calls = full_path(monkeypatch)
    s = generate(c, backend=FakeBackend(), progress=False)
    assert (s.records, s.failures, s.skipped) == (1, 0, 2) and calls == {"project": 1, "scan": 1}
    assert meta(tmp_path)["complete"]["prompts"] == 3


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


def test_dry_run_reads_the_checkpointed_records_by_id(tmp_path, monkeypatch, fake):
    from charter.generate import settings_from
    from charter.pipeline.workload import dry_run

    c = cfg(tmp_path, prompt_file(tmp_path, 4), limit=3)
    generate(c, backend=fake, progress=False)
    monkeypatch.setattr(store_mod, "parse_record", lambda raw: pytest.fail("a checkpointed line parsed"))
    c = cfg(tmp_path, c.prompts)
    assert (dry_run(c, settings_from(c)).skipped, dry_run(c, settings_from(c)).prompts) == (3, 1)


def test_cost_line_is_cached_until_the_records_change(tmp_path, monkeypatch, fake):
    from charter.pipeline import cost
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
    assert main(base) == 0  # marked complete: neither prompts nor records read again
    out = capsys.readouterr()
    assert "0 records written (0 failed), 2 already done" in out.out and "nothing to do: all 2 prompts done" in out.err
    recs = load_run(tmp_path / "run")
    assert len(recs) == 2 and all(r.error is None and r.final for r in recs)


def test_projection_is_logged_only_while_requests_remain(caplog):
    """A run done before the rate is measured says nothing; one under way projects the rest from
    the steps after the first (which includes the engine's start)."""
    import logging

    from charter.pipeline.workload import RateLog

    with caplog.at_level(logging.INFO, logger="charter.pipeline.workload"):
        done = RateLog(3, after=10.0)
        for _ in range(3):
            done.step()
        assert "projection" not in caplog.text
        going = RateLog(3, after=0.0)
        going.step()  # the first step also waited for the engine to start: the rate counts from it
        assert "projection" not in caplog.text
        going.step()
    assert caplog.text.count("projection: 2 of 3 requests done") == 1
