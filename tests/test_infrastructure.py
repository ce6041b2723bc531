"""The one-of-each infrastructure: JSONL I/O, the transcript parser/renderer, the feedback question,
the bootstrap and the plotting set-up."""
import json
import os

import pytest

from charter import plotting, stats

from charter import jsonl

from charter.inputs import transcripts
from charter.errors import InputError, RunError

# ---- JSONL ---------------------------------------------------------------------------------------


def test_atomic_write_replaces_whole_and_cleans_up_on_failure(tmp_path):
    path = tmp_path / "sub" / "x.json"
    jsonl.write_json(path, {"a": "é"})
    assert json.loads(path.read_text(encoding="utf-8")) == {"a": "é"}

    def broken(tmp):
        tmp.write_text("half")
        raise OSError(28, "No space left on device")

    with pytest.raises(RunError, match=r"x.json: cannot write \(No space left on device\)"):
        jsonl.atomic_write(path, broken)
    assert json.loads(path.read_text()) == {"a": "é"} and os.listdir(path.parent) == ["x.json"]


def test_atomic_write_never_follows_a_link_at_the_temporary_path(tmp_path, monkeypatch):
    victim = tmp_path / "victim"
    victim.write_text("mine")
    monkeypatch.setattr(jsonl.secrets, "token_hex", lambda n: "feed")
    (tmp_path / ".out.txt.feed.tmp").symlink_to(victim)
    with pytest.raises(RunError, match="cannot write"):
        jsonl.atomic_write(tmp_path / "out.txt", "new")
    assert victim.read_text() == "mine" and not (tmp_path / "out.txt").exists()


def test_append_and_read_skip_a_torn_tail(tmp_path):
    path = tmp_path / "rows.jsonl"
    jsonl.append_jsonl(path, [{"n": 1}, {"n": 2}])
    with path.open("a") as fh:
        fh.write('{"n": 3')  # killed mid-write
    assert list(jsonl.read_jsonl(path)) == [(1, {"n": 1}), (2, {"n": 2})]


def test_damaged_line_is_a_file_line_error_or_skipped(tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_text('{"n": 1}\n{"n": \n{"n": 3}\n')
    with pytest.raises(InputError, match=r"rows.jsonl:2: damaged line \(invalid JSON"):
        list(jsonl.read_jsonl(path))
    assert [n for n, _ in jsonl.read_jsonl(path, skip_damaged=True)] == [1, 3]


def test_set_aside_moves_damaged_lines_and_the_torn_tail(tmp_path):
    path, aside = tmp_path / "rows.jsonl", tmp_path / "rows.bad.jsonl"
    path.write_bytes(b'{"n": 1}\n\xff\n{"n": 3}\n{"n": 4')
    bad = jsonl.set_aside(path, aside)
    assert [(n, why) for n, _, why in bad] == [(2, "byte 0xff at column 1 is not UTF-8"), (4, "torn write")]
    assert path.read_bytes() == b'{"n": 1}\n{"n": 3}\n' and aside.read_bytes() == b'\xff\n{"n": 4\n'
    assert jsonl.set_aside(path, aside) == []


# ---- transcripts ---------------------------------------------------------------------------------


def test_transcript_splits_on_markers_only_and_round_trips():
    text = "\n\nHuman: Ratio: 3: 1?\n\nAssistant: Yes: it is.\n\nHuman: Why:\nsay"
    msgs = transcripts.parse(text)
    assert msgs == [{"role": "user", "content": "Ratio: 3: 1?"}, {"role": "assistant", "content": "Yes: it is."},
                    {"role": "user", "content": "Why:\nsay"}]
    assert transcripts.render(msgs) == text and transcripts.parse_prompt(text + "\n\nAssistant: x") == msgs
    assert transcripts.parse("H: hi\n\nA: yo", transcripts.SHORT)[1] == {"role": "assistant", "content": "yo"}
    assert transcripts.parse("H: hi\n\nA: yo") == []  # short tags only where asked for
    assert transcripts.looks_like(text) and not transcripts.looks_like("Note: Human: and Assistant: words")


# ---- the feedback question -----------------------------------------------------------------------


def test_one_question_two_layouts():
    from charter.evaluate.evasive import judge_evasive_context
    from charter.evaluate.judge import judge_context
    from charter.rlcai.questions import question

    convo = [{"role": "user", "content": "Hi?"}]
    head = "Consider the following conversation between a human and an assistant:\n\nHuman: Hi?\n\nWhich?"
    assert question(convo, "Which?", ["a", "b"]) == head + " Options:\n (A) [[[a]]]\n (B) [[[b]]]"
    assert judge_context(convo, "Which?", "a", "b")[0]["content"] == head + "\nOptions:\n(A) a\n(B) b\nThe answer is:"
    evasive = judge_evasive_context(convo, "No.")[0]["content"]
    assert "\n\nHuman: Hi?\n\nAssistant: No.\n\n" in evasive and "User:" not in evasive


# ---- bootstrap -----------------------------------------------------------------------------------


def test_bootstrap_is_seeded_and_its_interval_interpolates():
    xs = [1.0, 2.0, 3.0, 10.0]
    draws = stats.bootstrap([xs], stats.mean, 100, seed=3)
    assert draws == stats.bootstrap([xs], stats.mean, 100, seed=3) != stats.bootstrap([xs], stats.mean, 100, seed=4)
    assert stats.quantile([0.0, 1.0, 2.0], 0.25) == 0.5 and stats.interval([], 7.0) == (7.0, 7.0)
    assert stats.bootstrap([xs, []], lambda a, b: 0.0) == []
    b = stats.bootstrap_mean(xs, 100, seed=3)
    assert (b["low"], b["high"]) == stats.interval(draws, 4.0)


def test_elo_and_pm_intervals_share_the_method():
    from charter.evaluate.elo import bootstrap_elo, fit_elo

    comps = [("a", "b", 0.8), ("a", "b", 0.6), ("b", "a", 0.3)]
    boot = bootstrap_elo(comps, samples=50, seed=1)
    fits = stats.bootstrap([comps], lambda c: fit_elo(c, ["a", "b"], 0.5, iters=500, tol=1e-8), 50, 1)
    assert (boot["a"]["low"], boot["a"]["high"]) == stats.interval([f["a"] for f in fits], boot["a"]["elo"])


# ---- plotting ------------------------------------------------------------------------------------


def test_plot_saved_atomically(tmp_path):
    fig, ax = plotting.subplots(figsize=(2, 2))
    ax.plot([0, 1], [0, 1])
    out = plotting.save(fig, tmp_path / "p.png", dpi=50)
    assert out.read_bytes()[:4] == b"\x89PNG" and os.listdir(tmp_path) == ["p.png"]


def test_without_matplotlib_plots_are_skipped(tmp_path, monkeypatch):
    from charter.train.rl import plot_rl

    monkeypatch.setattr(plotting, "available", lambda: False)
    assert plotting.subplots() is None and plot_rl([{"step": 1, "reward": 0.1}], tmp_path / "rl.png") is None
