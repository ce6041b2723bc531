"""`charter classifier data` on the scheduler and the run store, with scripted fake backends: the rows
and their schema, label checks, seeds that do not depend on order, resume after a kill or SIGTERM,
extending a run, the lock, the output guard, failures, and the CLI; one end-to-end run on the real
embedded model (slow)."""
from __future__ import annotations

import json
import multiprocessing
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from charter.backends.fake import FakeBackend
from charter.classifier.data import LAYOUT, ClassifierDataConfig, classifier_data
from charter.cli import main
from charter.errors import ConfigError, RunError
from charter.pipeline.jobrun import Interrupted
from charter.runs.store import RunStore
from support import die_while_writing, fails

CATS = ["cyberattacks", "security-defence"]  # one restricted, one permitted
KEYS = {"id", "group", "text", "messages", "kind", "label", "category", "restricted", "augmentation", "source"}


WORDS = ["lantern", "harbour", "violin", "orchard", "glacier", "compass", "meadow", "pottery", "comet", "ferry",
         "quilt", "canyon", "falcon", "ledger", "tulip", "anchor", "marble", "cactus", "beacon", "walnut"]


def reply(prompt: str) -> str:
    """What the scripted writer says: a request, a rewrite or an answer, told apart by the prompt;
    SEED becomes words drawn by the step's seed (Writer), so each seed query reads differently."""
    if "Write one new request" in prompt:
        return 'Request: "How would somebody manage the SEED task? Tell me the steps."'
    if "Translate this request" in prompt:
        return "Comment faire la tâche SEED ?"
    if "request" in prompt and "Reply with" in prompt:
        return "What are the steps for the SEED task?"
    return "Here is an answer about SEED."


class Writer(FakeBackend):
    def chat(self, convos, sampling):
        import dataclasses
        import random

        done = super().chat(convos, sampling)
        words = [" ".join(random.Random(sampling.seed + row).sample(WORDS, 4)) for row in range(len(done))]
        return [dataclasses.replace(c, text=c.text.replace("SEED", w)) for c, w in zip(done, words)]


def writer(**kw) -> FakeBackend:
    return Writer(responder=reply, **kw)


class Judge(FakeBackend):
    """Says an example is in its category when the category is cyberattacks, never otherwise."""

    def choose(self, contexts, options):
        out = []
        for ctx, opts in zip(contexts, options):
            question = ctx[-1]["content"]
            yes_first = "(A) Yes" in question
            says_yes = "breaking into" in question  # the cyberattacks description
            pick = 0 if says_yes == yes_first else 1
            out.append([-0.1 if i == pick else -3.0 for i in range(len(opts))])
        return out


def cfg(tmp_path, **kw) -> ClassifierDataConfig:
    base = dict(backend="fake", categories=CATS, per_category=3, max_tokens=40, out=str(tmp_path / "d"))
    return ClassifierDataConfig(**{**base, **kw})


def rows(out) -> dict[str, list[dict]]:
    return {s: [json.loads(x) for x in open(Path(out) / f"{s}.jsonl")] for s in ("train", "test")
            if (Path(out) / f"{s}.jsonl").exists()}


def line_ids(out) -> list[str]:
    return [json.loads(x)["id"] for x in (Path(out) / "queries.jsonl").read_text().splitlines()]


def test_rows_carry_the_agreed_schema_labels_augmentations_and_label_checks(tmp_path):
    c = cfg(tmp_path, augment=["all"], check_labels=True)
    s = classifier_data(c, writer=writer(), feedback=Judge(), progress=False)
    got = rows(c.out)
    every = got["train"] + got["test"]
    assert s.failures == 0 and s.queries == 6 and s.examples == len(every) == 6 * 8  # input, output, 6 augmented
    assert s.splits == {"train": 32, "test": 16}  # one of 3 queries per category held out, with all its rows
    assert not {r["group"] for r in got["train"]} & {r["group"] for r in got["test"]}
    for r in every:
        assert KEYS <= set(r) and r["label"] == int(r["restricted"]) == int(r["category"] == "cyberattacks")
        assert r["messages"][-1]["role"] == ("assistant" if r["kind"] == "output" else "user")
        assert r["check"]["disagrees"] == (r["category"] == "security-defence")
    assert s.disagreements == 24
    by_aug = {r["augmentation"]: r for r in every}
    assert set(by_aug) == {"none", "paraphrase", "translate", "roleplay", "hypothetical", "jailbreak", "multiturn"}
    assert [m["role"] for m in by_aug["multiturn"]["messages"]] == ["user", "assistant", "user"]
    assert by_aug["translate"]["source"]["template"] in {f"translate/0:{x}" for x in ("French", "Spanish", "German")}
    base = next(r for r in every if r["augmentation"] == "none" and r["kind"] == "input")
    assert base["text"].startswith("How would somebody manage the ")  # the "Request:" label and quotes gone
    line = json.loads((Path(c.out) / "queries.jsonl").read_text().splitlines()[0])
    assert line["written"].startswith('Request: "How would') and line["query"] == line["examples"][0]["text"]
    wrapped = next(r for r in every if r["group"] == base["group"] and r["augmentation"] == "jailbreak")
    assert base["text"] in wrapped["text"] and wrapped["source"]["seed"] == base["source"]["seed"]
    card = (Path(c.out) / "README.md").read_text()
    assert "| cyberattacks | restricted | 1 | 21 | 3 |" in card and "24 rows disagree" in card


def test_the_files_load_with_datasets(tmp_path):
    datasets = pytest.importorskip("datasets")
    c = cfg(tmp_path, augment=["multiturn"], check_labels=True)
    classifier_data(c, writer=writer(), feedback=Judge(), progress=False)
    files = {s: str(Path(c.out) / f"{s}.jsonl") for s in ("train", "test")}
    ds = datasets.load_dataset("json", data_files=files, cache_dir=str(tmp_path / "cache"))
    assert ds["train"].num_rows + ds["test"].num_rows == 6 * 3
    assert {"text", "messages", "kind", "label", "category"} <= set(ds["train"].column_names)


@pytest.mark.parametrize("width", [3])
def test_rows_are_the_same_whatever_the_order_steps_reach_the_engine(tmp_path, width):
    """Seeds come from the query and the step: a streamed run writes what a batched one does."""
    got = []
    for name, concurrency in (("one", 1), ("several", width)):
        w = writer()
        w.concurrency = concurrency
        c = cfg(tmp_path / name, augment=["paraphrase", "translate"], batch_size=2)
        classifier_data(c, writer=w, progress=False)
        got.append(rows(c.out))
    assert got[0] == got[1]


def _killed_run(c):
    """In a child: write `c` and SIGKILL itself half-way through writing the 4th query's line."""
    die_while_writing(4)
    classifier_data(c, writer=writer(), progress=False)


def test_a_killed_run_resumes_and_writes_every_query_exactly_once(tmp_path):
    c = cfg(tmp_path, batch_size=1)
    child = multiprocessing.get_context("fork").Process(target=_killed_run, args=(c,))
    child.start()
    child.join(120)
    assert child.exitcode == -signal.SIGKILL
    again = writer()
    s = classifier_data(c, writer=again, progress=False)
    assert s.resumed == 3 and s.written == 3 and len(again.calls) == 3 * 2  # 3 queries left: written, answered
    assert sorted(line_ids(c.out)) == sorted(f"{cat}:{i}" for cat in CATS for i in range(3))
    ids = [r["id"] for split in rows(c.out).values() for r in split]
    assert len(ids) == len(set(ids)) == 6 * 2
    assert (Path(c.out) / "queries.bad.jsonl").read_text().count("\n") == 1  # the torn line, kept


def test_sigterm_stops_cleanly_and_the_next_run_writes_only_the_rest(tmp_path, default_sigterm):
    class Terminated(Writer):
        def chat(self, convos, sampling):
            if len(self.calls) == 4:  # two queries written and answered: SIGTERM, as `timeout` sends it
                os.kill(os.getpid(), signal.SIGTERM)
            return super().chat(convos, sampling)

    c = cfg(tmp_path, batch_size=1)
    with pytest.raises(Interrupted) as info:
        classifier_data(c, writer=Terminated(responder=reply), progress=False)
    saved = len(line_ids(c.out))
    assert info.value.exit_code == 143 and 1 <= saved < 6
    assert str(info.value).startswith(f"interrupted: {saved} seed queries saved")
    assert not (Path(c.out) / "queries.lock").exists()
    again = writer()
    s = classifier_data(c, writer=again, progress=False)
    assert s.resumed == saved and len(again.calls) == 2 * (6 - saved)
    assert sorted(line_ids(c.out)) == sorted(set(line_ids(c.out)))


def test_more_queries_per_category_extend_a_run(tmp_path):
    classifier_data(cfg(tmp_path, per_category=2), writer=writer(), progress=False)
    more = writer()
    s = classifier_data(cfg(tmp_path, per_category=3), writer=more, progress=False)
    assert s.resumed == 4 and s.written == 2 and len(more.calls) == 2 * 2
    assert sum(len(x) for x in rows(tmp_path / "d").values()) == 6 * 2


def test_changed_settings_are_refused_unless_forced(tmp_path):
    classifier_data(cfg(tmp_path), writer=writer(), progress=False)
    before = (tmp_path / "d" / "queries.jsonl").read_bytes()
    with pytest.raises(RunError, match=r"different settings \(temperature: 1\.0 -> 0\.5\)"):
        classifier_data(cfg(tmp_path, temperature=0.5), writer=writer(), progress=False)
    assert (tmp_path / "d" / "queries.jsonl").read_bytes() == before
    s = classifier_data(cfg(tmp_path, temperature=0.5), writer=writer(), force=True, progress=False)
    assert s.resumed == 6


def test_a_second_run_on_the_same_output_is_refused_while_the_first_holds_it(tmp_path):
    c = cfg(tmp_path)
    with RunStore(c.out, LAYOUT) as holder:
        holder.open({}, "x")
        with pytest.raises(RunError, match="in use"):
            classifier_data(c, writer=writer(), progress=False)
    assert classifier_data(c, writer=writer(), force=True, progress=False).queries == 6


def test_failed_queries_are_lines_that_the_next_run_retries(tmp_path):
    c = cfg(tmp_path, batch_size=1)  # a failed call fails the queries of its batch
    s = classifier_data(c, writer=writer(fail_on="protecting one's own systems"), progress=False)
    assert s.failures == 3 and s.examples == 3 * 2  # security-defence failed; cyberattacks rows written
    again = writer()
    s = classifier_data(c, writer=again, progress=False)
    assert s.failures == 0 and s.resumed == 3 and len(again.calls) == 3 * 2 and s.examples == 6 * 2


def test_an_empty_request_is_skipped_not_retried(tmp_path):
    c = cfg(tmp_path, per_category=1)
    s = classifier_data(c, writer=FakeBackend(responder=lambda p: "  "), progress=False)
    assert (s.skipped, s.failures, s.examples) == (2, 0, 0)
    again = writer()
    assert classifier_data(c, writer=again, progress=False).resumed == 2 and again.calls == []


def test_a_file_of_the_users_at_an_output_name_is_refused_before_anything_is_written(tmp_path):
    out = tmp_path / "d"
    out.mkdir()
    (out / "train.jsonl").write_text('{"mine": 1}\n')
    with pytest.raises(ConfigError, match="already exists"):
        classifier_data(cfg(tmp_path), writer=writer(), progress=False)
    assert sorted(p.name for p in out.iterdir()) == ["train.jsonl"]
    assert (out / "train.jsonl").read_text() == '{"mine": 1}\n'


# ---- the command line -------------------------------------------------------------------------------


def test_the_cli_writes_the_dataset_and_resumes(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    args = ["classifier", "data", "--backend", "fake", "--categories", *CATS, "--per-category", "2",
            "--augment", "roleplay", "--no-outputs", "--backend-option", "vary=true", "--out", "d", "--quiet",
            "--near-duplicate", "1"]  # the fake's requests differ in their seed only: near-duplicates at 0.8
    assert main(args) == 0
    assert "8 examples (4 train, 4 test) from 4 seed queries (4 written" in capsys.readouterr().out
    assert main(args) == 0
    assert "(0 written, 4 resumed" in capsys.readouterr().out


@pytest.mark.parametrize("extra, pattern", [
    (["--augment", "paraphrse"], r"unknown augmentation 'paraphrse' \(did you mean 'paraphrase'\?\)"),
    (["--categories", "cyberatacks"], r"has no category 'cyberatacks' \(did you mean 'cyberattacks'\?\)"),
    (["--per-category", "0"], r"--per-category must be >= 1, got 0"),
    (["--constitution", "bad.yaml"], r"bad\.yaml:2: unknown key 'restrictd' \(did you mean 'restricted'\?\)"),
])
def test_bad_settings_are_one_error_line(tmp_path, monkeypatch, capsys, extra, pattern):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "bad.yaml").write_text("name: x\nrestrictd: []\n")
    fails(capsys, ["classifier", "data", "--backend", "fake", "--out", "d", "--quiet", *extra], pattern)
    assert not (tmp_path / "d").exists()


# ---- the real engine ---------------------------------------------------------------------------------


@pytest.mark.slow
def test_the_embedded_model_writes_a_dataset_through_the_cli(tmp_path):
    """As a user runs it: the `charter` script, transformers, 2 categories x 2 queries, short answers
    (a template augmentation: it costs no generation)."""
    charter = Path(sys.executable).with_name("charter")
    cmd = [str(charter), "classifier", "data", "--backend", "transformers", "--categories", *CATS,
           "--per-category", "2", "--max-tokens", "32", "--augment", "hypothetical", "--out", str(tmp_path / "d"),
           "--quiet"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
    assert done.returncode == 0, done.stderr
    assert "from 4 seed queries (4 written" in done.stdout
    got = rows(tmp_path / "d")
    every = got["train"] + got["test"]
    assert {r["label"] for r in every} == {0, 1} and {r["kind"] for r in every} == {"input", "output"}
    assert all(r["text"].strip() and r["source"]["model"] == "embedded" for r in every)
    assert "# Charter classifier data" in (tmp_path / "d" / "README.md").read_text()
