"""What the review marks are used for: `export --drop-reviewed-worse` (a round marked worse leaves
the export with the later rounds of its chain, recorded in the dataset card) and
`eval-labeler --reviews` (the feedback model and the recorded labels against people's picks)."""
import json
import re
from pathlib import Path

import pytest

from charter.cli import main
from charter.errors import ConfigError
from charter.export import ExportConfig, export_run
from charter.rlcai.human_agreement import wilson
from charter.review.app import Review
from charter.runs.runread import load_run
from support import GEN, Scripted, always_a, fails, longer, policy


@pytest.fixture
def run2(tmp_path, monkeypatch, capsys) -> Path:
    """Three chains of two rounds (fake backend)."""
    monkeypatch.chdir(tmp_path)
    assert main(GEN[:-1] + ["2", "--limit", "3", "--out", "r"]) == 0
    capsys.readouterr()
    return tmp_path / "r"


def mark(review: Review, record: str, k: int, value: str) -> None:
    item = next(i for c in review.chains for i in c.items if (i.record, i.round) == (record, k))
    review.save(item.key, value)


def rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_drop_reviewed_worse_cuts_chains_at_the_round_marked_worse(run2, tmp_path):
    x, y, z = load_run(run2)
    alice, bob = Review(run2, "alice"), Review(run2, "bob")
    mark(alice, x.id, 1, "worse")  # round 1 and the round 2 that revised it go
    mark(bob, y.id, 2, "worse")  # round 2 goes: round 1's revision is y's answer now
    mark(alice, y.id, 1, "better")
    mark(alice, z.id, 2, "better")
    mark(bob, z.id, 1, "worse")
    mark(bob, z.id, 1, "same")  # changed his mind: the last mark counts
    plain = export_run(ExportConfig(run=str(run2), format="sft", out=str(tmp_path / "all" / "sft.jsonl")))
    assert plain.reviewed is None and plain.rows["train"] == 3
    res = export_run(ExportConfig(run=str(run2), format="sft", out=str(tmp_path / "sft" / "sft.jsonl"),
                                  drop_reviewed_worse=True))
    got = {r["id"]: r["messages"][-1]["content"] for r in rows(res.files["train"])}
    assert got == {y.id: y.rounds[0].revision, z.id: z.rounds[1].revision}
    assert res.reviewed == ("dropped 3 rounds: 2 marked worse than the answer before them, 1 after those in their "
                            "chains (reviewers: alice, bob)")
    assert f"| reviews | {res.reviewed} |" in res.card.read_text()
    dpo = export_run(ExportConfig(run=str(run2), format="dpo", out=str(tmp_path / "dpo" / "dpo.jsonl"),
                                  drop_reviewed_worse=True))
    pairs = {r["id"]: (r["chosen"][0]["content"], r["rejected"][0]["content"]) for r in rows(dpo.files["train"])}
    assert pairs == {y.id: (y.rounds[0].revision, y.initial), z.id: (z.rounds[1].revision, z.initial)}


def test_drop_reviewed_worse_ignores_stale_marks_and_needs_reviews(run2, tmp_path, capsys, caplog):
    x = load_run(run2)[0]
    fails(capsys, ["export", str(run2), "--out", str(tmp_path / "a.jsonl"), "--drop-reviewed-worse"],
          r"has no reviews \(RUN/reviews/NAME\.jsonl\); mark its revisions with `charter review RUN` first")
    fails(capsys, ["export", str(run2), "--format", "trace", "--out", str(tmp_path / "t.jsonl"),
                   "--drop-reviewed-worse"],
          r"--drop-reviewed-worse applies to --format sft and dpo")
    mark(Review(run2, "alice"), x.id, 2, "worse")
    path = run2 / "reviews" / "alice.jsonl"
    path.write_text(path.read_text().replace('"digest": "', '"digest": "0'))  # made on other texts
    assert main(["export", str(run2), "--out", str(tmp_path / "b" / "sft.jsonl"), "--drop-reviewed-worse"]) == 0
    assert "dropped 0 rounds" in capsys.readouterr().out
    assert "1 stale marks ignored" in (tmp_path / "b" / "README.md").read_text()
    assert "1 worse marks in" in caplog.text and "changed since" in caplog.text
    assert len(rows(tmp_path / "b" / "sft.jsonl")) == 3


@pytest.fixture
def picked(run, capsys):
    """A run with a label output (3 pairs) under it, the longer answer picked in two pairs and the
    shorter in the third, by one reviewer; the same pair also picked by a second one."""
    from charter.rlcai.labels import LabelConfig, label

    cfg = LabelConfig(backend="fake", limit=3, samples=2, max_tokens=20, out=str(run / "labels.jsonl")).validate()
    label(cfg, policy=policy(), feedback=Scripted(longer), progress=False)
    review, other = Review(run, "alice"), Review(run, "bob")
    for n, pair in enumerate(review.pairs):
        long = max((0, 1), key=lambda i: len(pair.answers[i]))
        want = long if n < 2 else 1 - long
        review.save(pair.key, "a" if want == pair.shown_first else "b")
    first = review.pairs[0]
    other.save(first.key, "a" if max((0, 1), key=lambda i: len(first.answers[i])) == first.shown_first else "b")
    mark(review, review.chains[0].record.id, 1, "better")
    mark(review, review.chains[1].record.id, 1, "worse")
    capsys.readouterr()
    return run


def test_wilson_interval():
    assert wilson(1, 2) == pytest.approx((0.0945, 0.9055), abs=1e-4)
    assert wilson(0, 3)[0] == 0.0 and wilson(3, 3)[1] == 1.0
    assert wilson(0, 0) == (0.0, 1.0)


@pytest.mark.parametrize("judge, model_agrees", [(longer, 3), (always_a, 0)])
def test_eval_labeler_reviews_scores_the_model_and_the_labels_against_the_picks(picked, tmp_path, judge, model_agrees):
    from charter.rlcai.labeler_eval import LabelerEvalConfig, evaluate_labeler

    feedback = Scripted(judge)
    cfg = LabelerEvalConfig(reviews=str(picked), backend="fake", out=str(tmp_path / "lab.json"))
    res = evaluate_labeler(cfg, backend=feedback)
    h = res.human
    assert h["reviewers"] == ["alice", "bob"] and h["pairs"] == 3 and h["stale"] == 0
    assert len(set(feedback.scored)) == 3 * 2  # each picked pair asked once, in both option orders
    # the labels prefer the longer answer: they side with the 3 picks of a longer answer out of 4
    assert {k: h["labels"][k] for k in ("n", "agree")} == {"n": 4, "agree": 3}
    assert (h["labels"]["low"], h["labels"]["high"]) == pytest.approx(wilson(3, 4))
    # a judge that always says (A) has no preference once both orders are averaged: a tie agrees with no one
    assert {k: h["model"][k] for k in ("n", "agree")} == {"n": 4, "agree": model_agrees}
    assert h["revisions"]["revisions"] == {"better": 1, "worse": 1, "same": 0}
    assert json.loads((tmp_path / "lab.json").read_text())["human"] == h
    assert res.n_rows == 0 and res.plot is None  # no FILE: no calibration rows to plot


def test_eval_labeler_reviews_from_the_command_line(picked, tmp_path, capsys):
    out = tmp_path / "lab.json"
    assert main(["eval-labeler", "--reviews", str(picked / "reviews" / "alice.jsonl"), "--backend", "fake",
                 "--out", str(out), "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert re.search(r"human picks \(alice, 3 pairs\): the model agrees on \d of 3 picks .*; the recorded labels on "
                     r"2 of 3 picks \(0\.667, 95% CI 0\.208-0\.939\)\. Revisions marked: better 1, worse 1, same 0",
                     printed), printed
    assert "accuracy" not in printed  # no FILE rows were scored
    mc = tmp_path / "mc.jsonl"
    mc.write_text("".join(json.dumps({"prompt": f"\n\nHuman: {q}\n\nAssistant:", "corrects": ["a long kind answer"],
                                      "incorrects": ["no"]}) + "\n" for q in ("Hi?", "Help?")))
    assert main(["eval-labeler", str(mc), "--reviews", str(picked), "--backend", "fake",
                 "--out", str(tmp_path / "both.json"), "--quiet"]) == 0
    both = json.loads((tmp_path / "both.json").read_text())
    assert both["n_rows"] == 2 and both["human"]["pairs"] == 3


def test_eval_labeler_reviews_settings(picked, tmp_path, capsys):
    fails(capsys, ["eval-labeler", "--backend", "fake", "--out", str(tmp_path / "x.json")],
          r"'file' is required \(pass FILE or set it in the config file\), or --reviews RUN")
    fails(capsys, ["eval-labeler", "--reviews", str(picked), "--pm", str(tmp_path), "--out", str(tmp_path / "x.json")],
          r"--reviews scores a prompted feedback model, not --pm")
    with pytest.raises(ConfigError):
        from charter.rlcai.labeler_eval import LabelerEvalConfig

        LabelerEvalConfig(out=str(tmp_path / "x.json")).validate()


def test_audit_reads_the_pairs_people_picked(picked, tmp_path):
    from charter.rlcai.audit import AuditConfig, audit

    res = audit(AuditConfig(data=str(picked), backend="fake", out=str(tmp_path / "audit.json"), bootstrap=50),
                backend=Scripted(longer))
    # two pairs picked for the longer answer (one by both reviewers), one for the shorter: a judge
    # that prefers length agrees with the people on 2 of 3 under every principle
    assert res.pairs == 3 and res.ties == 0
    assert [p["agreement"] for p in res.principles] == [pytest.approx(2 / 3)] * len(res.principles)
    assert res.longer_chosen["rate"] == pytest.approx(2 / 3)


def test_audit_of_a_run_without_picks_says_how_to_make_some(run2, tmp_path):
    from charter.errors import InputError
    from charter.rlcai.audit import AuditConfig, audit

    (run2 / "reviews").mkdir()
    with pytest.raises(InputError, match="charter review RUN"):
        audit(AuditConfig(data=str(run2), backend="fake", out=str(tmp_path / "audit.json")), backend=Scripted(longer))
