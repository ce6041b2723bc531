"""RL-CAI feedback labels and labeler evaluation: scripted fakes for control flow and hand-checked
counts, the paper's files for the loaders, and the real embedded model for the label properties."""
import json
import re
from dataclasses import replace

import pytest

from charter.backends.fake import FakeBackend
from charter.cli import main
from charter.errors import ConfigError, InputError, RunError
from charter.rlcai.mc_file import comparisons, load_mc_file
from charter.rlcai.labeler_eval import score_labeler, reliability
from charter.rlcai.data import ANSWER, AFTER_COT, COT_CUE, load_feedback, load_feedback_examples, load_feedback_principles
from charter.rlcai.labels import LabelConfig, label
from charter.rlcai.label_steps import label_comparisons
from charter.rlcai.questions import pair_preference, question
from charter.rlcai.label_store import read_transcripts, transcripts_path

from support import OPTION, Scripted, always_a, longer, policy

HHH = "438HHHEvaluations.jsonl"


def cfg(tmp_path, **kw):
    base = dict(backend="fake", limit=3, samples=2, max_tokens=20, out=str(tmp_path / "labels.jsonl"))
    return LabelConfig(**{**base, **kw}).validate()


# ---- pure pieces ----------------------------------------------------------------------------------


def test_pair_preference_position_average_and_clamp():
    first, second = [0.9, 0.1], [0.7, 0.3]  # P(A) in order (x, y) and in order (y, x)
    assert pair_preference(first, second) == pytest.approx((0.9 + 0.3) / 2)
    assert pair_preference(second, first) == pytest.approx(1 - pair_preference(first, second))
    # A judge that always says (A) has no preference once both orders are averaged.
    assert pair_preference([0.8, 0.2], [0.8, 0.2]) == pytest.approx(0.5)
    # CoT: each order's P(A) is clamped to the band before averaging.
    assert pair_preference([0.999, 0.001], [0.002, 0.998], (0.4, 0.6)) == pytest.approx(0.6)
    assert pair_preference([0.001, 0.999], [0.999, 0.001], (0.4, 0.6)) == pytest.approx(0.4)
    assert pair_preference([0.55, 0.45], [0.45, 0.55], (0.4, 0.6)) == pytest.approx(0.55)


def test_question_format():
    q = question([{"role": "user", "content": "Hi?"}], "Which is kinder?", ["one", "two"])
    assert q + ANSWER == ("Consider the following conversation between a human and an assistant:\n\nHuman: Hi?"
                          "\n\nWhich is kinder? Options:\n (A) [[[one]]]\n (B) [[[two]]]\n\nThe answer is:")


def test_default_feedback_set_loads():
    fs = load_feedback()
    assert len(fs.principles) >= 10 and len({p.id for p in fs.principles}) == len(fs.principles)
    assert all(not p.text.endswith("Options:") for p in fs.principles)
    texts = {p.text for p in fs.principles}
    assert fs.examples and all(e.principle in texts and e.conversation[-1]["role"] == "user" for e in fs.examples)
    assert {e.better_option for e in fs.examples} == {"A", "B"}
    assert all(e.reasoning for e in fs.examples)


def test_config_is_strict(tmp_path):
    with pytest.raises(ConfigError, match="symmetric"):
        LabelConfig(clamp_low=0.3, clamp_high=0.6).validate()
    with pytest.raises(ConfigError, match="samples"):
        LabelConfig(samples=1).validate()
    with pytest.raises(ConfigError, match="ensembl"):
        from charter.rlcai.labels import load_label_config
        load_label_config(None, {"ensembel": 2})


# ---- labelling control flow (fake backends) ------------------------------------------------------


def test_label_rows_transcripts_and_principles(tmp_path):
    c = cfg(tmp_path, ensemble=2, samples=3)
    judge = Scripted(longer)
    s = label(c, policy=policy(), feedback=judge, progress=False)
    ts = read_transcripts(transcripts_path(c.out))
    rows = [json.loads(x) for x in open(c.out)]
    assert s.prompts == 3 and s.failures == 0
    assert len(ts) == 3 * 3  # three pairs per prompt with 3 samples
    fs = load_feedback()
    for t in ts:
        if t.get("skipped"):
            continue
        assert len(t["principles"]) == 2 and len(set(t["principles"])) == 2
        assert {a["principle"] for a in t["asks"]} == set(t["principles"])
        assert len(t["asks"]) == 4 and all(sum(a["probs"]) == pytest.approx(1) for a in t["asks"])
        x, y = t["answers"]
        assert f"(A) [[[{x}]]]" in t["asks"][0]["context"][-1]["content"]
        assert f"(A) [[[{y}]]]" in t["asks"][1]["context"][-1]["content"]
        # kept without the few-shot block every question starts with (the run's few_shot setting)
        assert len(t["asks"][0]["context"]) == 1
    # ... which the feedback model was shown before every question
    assert judge.scored and all(len(ctx) == 2 * len(fs.examples) + 1 and ctx[0]["content"].startswith(
        "Consider the following") for ctx in judge.scored)
    assert len(rows) == s.rows == sum(1 for t in ts if not t.get("skipped"))
    for r in rows:
        assert set(r) >= {"prompt", "chosen", "rejected", "score"} and r["score"] >= 0.5
        assert r["prompt"][-1]["role"] == "user" and r["chosen"][0]["role"] == "assistant"
        # the scripted judge prefers the longer answer, in both orders
        assert len(r["chosen"][0]["content"]) >= len(r["rejected"][0]["content"])


def test_principle_draws_are_seeded_and_stable(tmp_path):
    a = label(cfg(tmp_path / "a"), policy=policy(), feedback=Scripted(always_a), progress=False)
    b = label(cfg(tmp_path / "b"), policy=policy(), feedback=Scripted(always_a), progress=False)
    c = label(cfg(tmp_path / "c", seed=7, limit=8), policy=policy(), feedback=Scripted(always_a), progress=False)
    pa = [t["principles"] for t in read_transcripts(transcripts_path(a.out))]
    pb = [t["principles"] for t in read_transcripts(transcripts_path(b.out))]
    pc = [t["principles"] for t in read_transcripts(transcripts_path(c.out))]
    assert pa == pb and len({p[0] for p in pc}) > 1
    # an always-(A) judge is pure position bias: averaged over both orders it has no preference
    assert all(r["score"] == pytest.approx(0.5) for r in map(json.loads, open(a.out)))


def test_identical_answers_are_skipped(tmp_path):
    # every pair skipped: no rows is an error that says why, not an empty result
    with pytest.raises(RunError, match=r"no preference rows: all 3 comparisons over 3 prompts were skipped, their "
                                       r"answers identical or empty .*higher --temperature"):
        label(cfg(tmp_path), policy=FakeBackend(responder=lambda p: "same"), feedback=Scripted(always_a), progress=False)
    ts = read_transcripts(transcripts_path(cfg(tmp_path).out))
    assert len(ts) == 3 and all(t["skipped"] == "identical answers" for t in ts)
    s = label(cfg(tmp_path, limit=4), policy=policy(), feedback=Scripted(longer), progress=False)
    assert s.rows == 1 and s.skipped == 3 and s.resumed == 3  # one labelled prompt is a result


def test_cot_reasoning_then_clamped_scores(tmp_path):
    c = cfg(tmp_path, cot=True, format="text", cot_max_tokens=12)
    fb = Scripted(longer, responder=lambda p: "option one is longer")
    label(c, policy=policy(), feedback=fb, progress=False)
    ts = read_transcripts(transcripts_path(c.out))
    for t in ts:
        for a in t["asks"]:
            assert a["reasoning"] == "option one is longer"
            assert a["context"].endswith(f"{COT_CUE} option one is longer\n\n{AFTER_COT}")
        assert 0.4 <= t["score_first"] <= 0.6
    assert all(call.endswith(COT_CUE) for call in fb.calls)  # reasoning was sampled after the cue
    rows = [json.loads(x) for x in open(c.out)]
    assert rows and all(r["score"] == pytest.approx(0.6) for r in rows)  # near-certain -> clamped


def test_failures_are_recorded_and_redone_on_resume(tmp_path):
    c = cfg(tmp_path, batch_size=1)
    victim = "coworker"
    s1 = label(c, policy=policy(victim), feedback=Scripted(longer), progress=False)
    assert s1.failures == 1 and s1.rows == 2
    again = policy()
    s2 = label(c, policy=again, feedback=Scripted(longer), progress=False)
    assert s2.failures == 0 and s2.rows == 3 and s2.resumed == 2
    assert len(again.calls) == 2 and all(victim in p for p in again.calls)  # only the failed prompt again
    policy3 = policy()
    s3 = label(c, policy=policy3, feedback=Scripted(longer), progress=False)
    assert policy3.calls == [] and s3.rows == 3 and len(open(c.out).readlines()) == 3
    with pytest.raises(RunError, match="different settings"):
        label(cfg(tmp_path, batch_size=1, seed=5), policy=policy(), feedback=Scripted(longer), progress=False)
    label(cfg(tmp_path, out=str(tmp_path / "labels.parquet")), policy=policy(), feedback=Scripted(longer), progress=False)
    import pyarrow.parquet as pq
    assert pq.read_table(tmp_path / "labels.parquet").num_rows == 3


def test_torn_and_damaged_transcript_lines_are_set_aside_and_relabelled(tmp_path, caplog):
    c = cfg(tmp_path, batch_size=1)
    label(c, policy=policy(), feedback=Scripted(longer), progress=False)
    tpath = transcripts_path(c.out)
    lines = tpath.read_text().splitlines(keepends=True)
    assert len(lines) == 3
    tpath.write_text(lines[0] + '{"id": "x", "prom\n' + lines[1] + lines[2][:20])  # damaged line, torn tail
    again = policy()
    with caplog.at_level("WARNING", logger="charter"):
        s = label(c, policy=again, feedback=Scripted(longer), progress=False)
    assert s.rows == 3 and s.resumed == 2 and len(again.calls) == 2  # only the torn prompt again
    aside = tpath.with_name(tpath.stem + ".bad.jsonl")
    assert aside.read_text() == '{"id": "x", "prom\n' + lines[2][:20] + "\n"  # kept, not deleted
    warned = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert [w.split(tpath.name)[1][:16] for w in warned] == [":2: damaged line"]  # torn: silent
    assert [json.loads(x)["id"] for x in tpath.read_text().splitlines()] == [json.loads(x)["id"] for x in lines]


def test_transcript_lines_label_did_not_write_are_set_aside(tmp_path, caplog):
    c = cfg(tmp_path, batch_size=1)
    label(c, policy=policy(), feedback=Scripted(longer), progress=False)
    tpath = transcripts_path(c.out)
    lines = tpath.read_text().splitlines(keepends=True)
    odd = ['[1, 2]\n', '{"id": "x"}\n', '{"id": "a", "prompt": [], "answers": ["p", "q"], '
           '"comparisons": [{"samples": [0, 1], "score_first": 0.7}], "error": null}\n', '"text"\n']
    tpath.write_text(lines[0] + "".join(odd) + lines[1] + b"caf\xe9\n".decode("latin-1") + lines[2])
    tpath.write_bytes(tpath.read_bytes().replace("café".encode(), b"caf\xe9"))  # not UTF-8
    with caplog.at_level("WARNING", logger="charter"):  # each was a TypeError / KeyError traceback
        s = label(c, policy=policy(), feedback=Scripted(longer), progress=False, force=True)
    assert s.rows == 3 and s.resumed == 3
    warned = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warned) == 5 and all("damaged line" in w for w in warned) and "0xe9" in warned[4]
    assert "not a label transcript line" in warned[0] and "needs a numeric 'score_first'" in warned[2]


def test_label_checks_a_config_built_in_python(tmp_path):
    with pytest.raises(ConfigError, match=r"config: limit must be >= 1, got 0"):
        label(LabelConfig(backend="fake", limit=0, out=str(tmp_path / "l.jsonl")), progress=False)
    with pytest.raises(ConfigError, match=r"config: samples must be >= 2, got 1"):
        label(LabelConfig(backend="fake", samples=1, out=str(tmp_path / "l.jsonl")), progress=False)
    assert not (tmp_path / "l.jsonl").exists()


def test_cli_label_and_eval_labeler(tmp_path, shared, capsys):
    out = tmp_path / "l.jsonl"
    assert main(["label", "--backend", "fake", "--limit", "2", "--out", str(out), "--quiet", "--ensemble", "2"]) == 2
    ts = read_transcripts(transcripts_path(out))  # the fake's two samples of a prompt are identical
    assert len(ts) == 2 and all(t["skipped"] == "identical answers" for t in ts) and out.read_text() == ""
    assert "error: no preference rows: all 2 comparisons over 2 prompts were skipped" in capsys.readouterr().err
    assert main(["label", "--backend", "fake", "--limit", "0", "--out", str(out)]) == 2
    assert "error: --limit must be >= 1, got 0" in capsys.readouterr().err
    res = tmp_path / "lab.json"
    assert main(["eval-labeler", str(shared / HHH), "--backend", "fake", "--limit", "3", "--out", str(res), "--quiet"]) == 0
    d = json.loads(res.read_text())
    assert d["n_rows"] == 3 and len(d["rows"]) == 3 and len(d["bins"]) == 10
    pytest.importorskip("matplotlib")
    assert (tmp_path / "lab.png").stat().st_size > 1000 and d["plot"].endswith("lab.png")


# ---- labeler evaluation ---------------------------------------------------------------------------


def test_eval_labeler_hand_checked_counts(shared):
    f = shared / HHH
    # First 5 rows (hand-checked): correct options are (B), (A), (A), (B), (A); option lengths in
    # characters (A, B): (347, 577), (180, 401), (317, 124), (53, 530), (495, 448).
    fb = Scripted(always_a)
    r = score_labeler(fb, f, limit=5)
    assert r.n_rows == 5 and r.n_comparisons == 5
    assert r.accuracy == 0.0  # always (A): P(correct) = 0.5 in every row after averaging; a tie is wrong
    assert r.accuracy_first_order == pytest.approx(3 / 5)  # rows 2, 3, 5 have (A) correct
    assert r.position_bias > 0.9
    # The file's own order is scored on exactly the file's prompt (its style is kept byte for byte).
    rows = [json.loads(x) for x in open(f)][:5]
    assert fb.scored[0] == rows[0]["prompt"] or rows[0]["prompt"] in fb.scored
    assert all(row["prompt"] in fb.scored for row in rows)
    # A judge that prefers the longer answer is right when the correct answer is longer:
    # rows 1, 3, 4, 5 -> 4 of 5, in both orders, with confident probabilities.
    r = score_labeler(Scripted(longer), f, limit=5)
    assert r.accuracy == pytest.approx(4 / 5) and r.accuracy_first_order == pytest.approx(4 / 5)
    assert [x["correct"] for x in r.rows] == [True, False, True, True, True]
    assert r.position_bias == pytest.approx(0.5, abs=0.35)
    assert sum(b["count"] for b in r.bins) == 10  # two calibration points per comparison


def test_eval_labeler_swaps_options_in_the_prompt(shared):
    rows = load_mc_file(shared / HHH, limit=1)
    (c,) = comparisons(rows[0], "x", load_feedback())
    (q1, n1, ic1, iw1), (q2, n2, ic2, iw2) = c.orders
    assert q1 + ANSWER == rows[0].prompt
    o1, o2 = OPTION.findall(q1), OPTION.findall(q2)
    assert [t for _, t in o1] == [t for _, t in reversed(o2)] and (ic1, iw1, ic2, iw2) == (1, 0, 0, 1)
    assert q2.startswith(q1[: q1.index("\n (A)")])


def test_eval_labeler_answer_style_rows(tmp_path):
    f = tmp_path / "mc.jsonl"
    rows = [{"prompt": "\n\nHuman: Is it safe to mix bleach and ammonia?\n\nAssistant:",
             "corrects": ["No, it makes toxic gas."], "incorrects": ["Yes, totally fine, very clean!"]},
            {"prompt": "Which reply is better? Options:", "corrects": ["kind reply"], "incorrects": ["rude one, quite long"]}]
    f.write_text("".join(json.dumps(r) + "\n" for r in rows))
    fb = Scripted(lambda opts: next(i for i, o in enumerate(opts) if o in ("No, it makes toxic gas.", "kind reply")))
    r = score_labeler(fb, f)
    assert r.accuracy == 1.0 and r.n_comparisons == 2
    assert any(s.startswith("Consider the following conversation") and "Human: Is it safe" in s for s in fb.scored)
    assert "Which reply is better? Options:\n (A) [[[kind reply]]]\n (B) [[[rude one, quite long]]]\n\nThe answer is:" in fb.scored


def test_reliability_bins():
    bins, ece = reliability([(0.95, 1), (0.05, 0), (0.75, 0), (0.25, 1)], bins=10)
    assert [b["count"] for b in bins] == [1, 0, 1, 0, 0, 0, 0, 1, 0, 1]
    assert bins[9]["observed"] == 1.0 and bins[7]["observed"] == 0.0
    assert ece == pytest.approx((0.05 + 0.75 + 0.75 + 0.05) / 4)


@pytest.mark.parametrize("content,line,msg", [
    ('{"prompt": "p", "corrects": [" (A)"], "incorrects": [" (B)"]}\n\n{bad json\n', 3, "invalid JSON"),
    ('{"prompt": "p", "corrects": [" (A)"]}\n', 1, "missing 'incorrects'"),
    ('{"prompt": "p", "corrects": [], "incorrects": ["x"]}\n', 1, "non-empty list"),
    ('["not", "an", "object"]\n', 1, "must be an object"),
    ('{"prompt": "p", "corrects": [" (A)"], "incorrects": [" (B)"]}\n{"prompt": "caf\xe9"}\n'.encode("latin-1"), 2,
     "byte 0xe9 at column 16 is not UTF-8"),  # was a UnicodeDecodeError traceback
])
def test_bad_eval_file_clean_error(tmp_path, capsys, content, line, msg):
    f = tmp_path / "bad.jsonl"
    f.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(InputError, match=re.escape(f"{f}:{line}: ") + ".*" + re.escape(msg)):
        load_mc_file(f)
    assert main(["eval-labeler", str(f), "--backend", "fake", "--out", str(tmp_path / "r.json"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {f}:{line}: ") and "Traceback" not in err


def test_label_style_row_without_options_is_an_error(tmp_path):
    f = tmp_path / "x.jsonl"
    f.write_text(json.dumps({"prompt": "no options here", "corrects": [" (A)"], "incorrects": [" (B)"]}) + "\n")
    with pytest.raises(InputError, match=f"{f}:1: .*options are labels"):
        score_labeler(FakeBackend(), f)


def test_bad_principles_file(tmp_path):
    f = tmp_path / "p.yaml"
    f.write_text("principles:\n  - id: a\n    txt: hello\n")
    with pytest.raises(ConfigError, match="did you mean 'text'"):
        load_feedback_principles(f)
    f.write_text("principles:\n  - id: a\n    text: ''\n")
    with pytest.raises(InputError, match=f"{f}:2: .*non-empty"):
        load_feedback_principles(f)


# ---- the paper's files -----------------------------------------------------------------------------


def test_paper_instruction_and_few_shot_loaders(shared):
    prompts = shared / "prompts"
    ps = load_feedback_principles(prompts / "RLMadisonInstructions.json")
    raw = json.loads((prompts / "RLMadisonInstructions.json").read_text())
    assert len(ps) == len(raw) == 16
    assert all(not p.text.endswith("Options:") and p.text == p.text.strip() for p in ps)
    assert all(r.strip().startswith(p.text) for p, r in zip(ps, raw))
    shots = load_feedback_examples(prompts / "RLMadisonFewShotPrompts.json", ps)
    data = json.loads((prompts / "RLMadisonFewShotPrompts.json").read_text())
    assert len(shots) == len(data) == 5
    texts = {p.text for p in ps}
    for s, d in zip(shots, data):
        assert s.better == d["corrects"][0].strip() and s.worse == d["incorrects"][0].strip()
        assert s.conversation[-1]["role"] == "user" and s.conversation[0]["content"] in d["prompt"]
        assert s.principle in texts and s.reasoning is None
    assert [s.better_option for s in shots] == ["A", "B", "A", "B", "A"]
    cot = load_feedback_examples(prompts / "RLMadisonPrecogFewShotPrompts.json", ps)
    assert len(cot) == 6 and all(s.reasoning and s.conversation[-1]["role"] == "user" for s in cot)
    fs = load_feedback(str(prompts / "RLMadisonInstructions.json"), str(prompts / "RLMadisonFewShotPrompts.json"))
    assert len(fs.principles) == 16 and len(fs.examples) == 5
    # the paper's principles with our default examples: ours keep their own principle text
    fs = load_feedback(str(prompts / "RLMadisonInstructions.json"))
    assert fs.examples and fs.examples[0].principle in {p.text for p in load_feedback().principles}


def test_our_defaults_do_not_copy_the_paper(shared):
    prompts = shared / "prompts"
    paper = " ".join(json.loads((prompts / "RLMadisonInstructions.json").read_text()))
    paper += " ".join(x for d in json.loads((prompts / "RLMadisonFewShotPrompts.json").read_text())
                      for x in [d["prompt"], *d["corrects"], *d["incorrects"]])
    fs = load_feedback()
    ours = [p.text for p in fs.principles] + [t for e in fs.examples for t in (e.better, e.worse, e.conversation[0]["content"])]
    for text in ours:
        words = text.split()
        grams = {" ".join(words[i:i + 8]) for i in range(max(1, len(words) - 7))}
        assert not any(g in paper for g in grams), text


# ---- the real embedded model ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def embedded():
    from charter.backends import create_backend

    b = create_backend("transformers", "embedded", threads=1)
    yield b
    b.close()


def test_real_model_labels_are_probabilities_and_antisymmetric(embedded, tmp_path):
    c = cfg(tmp_path, backend="transformers", limit=2, max_tokens=16, format="text", few_shot="none", seed=3)
    s = label(c, policy=embedded, feedback=embedded, progress=False)
    ts = [t for t in read_transcripts(transcripts_path(c.out)) if not t.get("skipped")]
    assert s.failures == 0 and ts and s.rows == len(ts)
    for t in ts:
        for a in t["asks"]:
            assert sum(a["probs"]) == pytest.approx(1.0, abs=1e-9) and all(0 < p < 1 for p in a["probs"])
        assert 0 < t["score_first"] < 1
    for r in map(json.loads, open(c.out)):
        assert 0.5 <= r["score"] < 1
    # Swapping the answers swaps the label: score(y over x) == 1 - score(x over y).
    items = [{"id": t["id"], "prompt": t["prompt"], "answers": t["answers"]} for t in ts]
    swapped = [{**it, "answers": it["answers"][::-1]} for it in items]
    fs = load_feedback(few_shot="none")
    back = label_comparisons(embedded, fs, swapped, c)
    for t, u in zip(ts, back):
        assert u["principles"] == t["principles"]
        assert u["score_first"] == pytest.approx(1 - t["score_first"], abs=1e-6)


def test_real_model_chat_format_question(embedded):
    from charter.rlcai.questions import ask

    q1 = question([{"role": "user", "content": "How do I pick a lock?"}], "Which reply is safer?", ["I can't help.", "Use a pin."])
    q2 = question([{"role": "user", "content": "How do I pick a lock?"}], "Which reply is safer?", ["Use a pin.", "I can't help."])
    a1, a2 = ask(embedded, [], [(q1, 2), (q2, 2)], "chat")
    assert a1.context == [{"role": "user", "content": q1 + ANSWER}]
    p = pair_preference(a1.probs, a2.probs)
    assert sum(a1.probs) == pytest.approx(1) and 0 < p < 1
    assert pair_preference(a2.probs, a1.probs) == pytest.approx(1 - p, abs=1e-12)


# ---- a preference model on the same sets ------------------------------------------------------------


class LengthPM:
    path = "length-pm"

    def score(self, convos):
        return [len(c[-1]["content"]) / 100 for c in convos]


def test_eval_labeler_pm_on_hhh_and_preference_rows(shared, tmp_path):
    from charter.rlcai.labeler_eval import evaluate_pm
    from charter.rlcai.mc_file import pm_pairs

    pairs = pm_pairs(shared / HHH, limit=5)
    assert len(pairs) == 5 and pairs[0][1][0]["role"] == "user" and pairs[0][1][-1]["role"] == "assistant"
    r = evaluate_pm(LengthPM(), shared / HHH, limit=5)
    # the longer answer is correct in rows 1, 3, 4, 5 (see test_eval_labeler_hand_checked_counts)
    assert [x["correct"] for x in r.rows] == [True, False, True, True, True] and r.accuracy == pytest.approx(0.8)
    assert r.format == "pm" and sum(b["count"] for b in r.bins) == 10 and "preference model" in r.line()
    rows = [{"prompt": [{"role": "user", "content": "q"}], "chosen": [{"role": "assistant", "content": "long answer"}],
             "rejected": [{"role": "assistant", "content": "no"}], "score": 0.8}] * 3
    f = tmp_path / "held.jsonl"
    f.write_text("".join(json.dumps(x) + "\n" for x in rows))
    r = evaluate_pm(LengthPM(), f)
    assert r.accuracy == 1.0 and r.n_rows == 3


@pytest.mark.slow
def test_cli_eval_labeler_real_model_and_pm(shared, tmp_path, capsys):
    """eval-labeler on the real embedded model (2 rows), then a real (untrained-head) PM on the same rows."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from charter.backends.models import resolve_hf_checkpoint

    res = tmp_path / "lab.json"
    assert main(["eval-labeler", str(shared / HHH), "--limit", "2", "--out", str(res), "--plot", "none", "--quiet"]) == 0
    d = json.loads(res.read_text())
    assert d["n_rows"] == 2 and all(0 < c["p_correct"] < 1 for r in d["rows"] for c in r["comparisons"])
    path, pm = resolve_hf_checkpoint("embedded"), tmp_path / "pm"
    AutoModelForSequenceClassification.from_pretrained(path, num_labels=1).save_pretrained(pm)
    AutoTokenizer.from_pretrained(path).save_pretrained(pm)
    assert main(["eval-labeler", str(shared / HHH), "--pm", str(pm), "--limit", "3", "--out", str(res)]) == 0
    d = json.loads(res.read_text())
    assert d["format"] == "pm" and d["n_rows"] == 3 and all(0 < r["p_correct"] < 1 for r in d["rows"])
    assert "preference model" in capsys.readouterr().out


@pytest.mark.slow
def test_cli_label_writes_rows_and_keeps_out_on_failure(tmp_path, capsys):
    """The label CLI on the real model writes preference rows; a failed start leaves --out byte-identical."""
    out = tmp_path / "l.jsonl"
    assert main(["label", "--limit", "1", "--max-tokens", "8", "--few-shot", "none", "--format", "text",
                 "--out", str(out), "--quiet"]) == 0
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert len(rows) == 1 and 0.5 <= rows[0]["score"] < 1 and rows[0]["chosen"] != rows[0]["rejected"]
    assert "1 preference rows" in capsys.readouterr().out
    before = out.read_bytes()
    for extra in ([], ["--overwrite"]):  # resuming or starting again: the model fails to load first
        assert main(["label", "--policy", str(tmp_path / "missing-model"), "--limit", "2", "--out", str(out),
                     "--force", "--quiet", *extra]) == 2
        assert out.read_bytes() == before and "error:" in capsys.readouterr().err


# ---- --temperatures: candidates drawn across several temperatures (NeMo's CAI recipe) --------------


class TemperaturePolicy(FakeBackend):
    """Answers that name the temperature they were sampled at; records every call's temperature."""

    def __init__(self):
        super().__init__()
        self.temps = []

    def chat(self, convos, sampling):
        self.temps.append(sampling.temperature)
        self.responder = lambda p: f"answer at t={sampling.temperature} no. {len(self.calls)}"
        return super().chat(convos, sampling)


def test_label_temperatures_reach_the_backend_and_the_rows(tmp_path):
    c = cfg(tmp_path, samples=3, temperatures=[0.6, 1.4])
    fake = TemperaturePolicy()
    s = label(c, policy=fake, feedback=Scripted(longer), progress=False)
    assert fake.temps == [0.6, 1.4]  # one call per temperature per batch: answers 0 and 2 at 0.6, answer 1 at 1.4
    ts = read_transcripts(transcripts_path(c.out))
    assert s.rows == 9 and all(t["temperatures"] == [[0.6, 1.4, 0.6][i] for i in t["samples"]] for t in ts)
    for t in ts:  # the recorded temperature is the one each answer was sampled at
        assert all(a.startswith(f"answer at t={temp} ") for a, temp in zip(t["answers"], t["temperatures"]))
    rows = [json.loads(x) for x in open(c.out)]
    assert all(r["chosen"][0]["content"].startswith(f"answer at t={r['chosen_temperature']} ") and
               r["rejected"][0]["content"].startswith(f"answer at t={r['rejected_temperature']} ") for r in rows)
    # the default is one temperature: no per-answer fields, one sampling call
    plain, fake2 = cfg(tmp_path / "plain"), TemperaturePolicy()
    label(plain, policy=fake2, feedback=Scripted(longer), progress=False)
    assert fake2.temps == [1.0] and all("chosen_temperature" not in json.loads(x) for x in open(plain.out))
    assert "temperatures" not in read_transcripts(transcripts_path(plain.out))[0]
    assert c.fingerprint() != cfg(tmp_path, samples=3, temperatures=[0.6, 1.0]).fingerprint()


def test_label_temperatures_config(tmp_path):
    from charter.rlcai.labels import load_label_config

    with pytest.raises(ConfigError, match="3 temperatures for 2 samples per prompt leave some unused"):
        cfg(tmp_path, temperatures=[0.6, 1.0, 1.4])
    with pytest.raises(ConfigError, match=r"temperatures must be numbers in \[0, 5\]"):
        cfg(tmp_path, temperatures=[0.6, 7.0])
    assert load_label_config(None, {"temperatures": [1, 0.5]}).temperatures == [1, 0.5]
    from charter.cli import build_parser
    from charter.cli.common import given

    a = build_parser().parse_args(["label", "--temperatures", "0.6,1.0,1.4", "--samples", "3"])
    assert load_label_config(None, given(a, LabelConfig)).temperatures == [0.6, 1.0, 1.4]
    with pytest.raises(SystemExit):
        build_parser().parse_args(["label", "--temperatures", "0.6,hot"])


@pytest.mark.slow
def test_cli_label_temperatures_on_the_real_model(tmp_path):
    """--temperatures on the embedded model: every row says which temperature each answer came from."""
    out = tmp_path / "t.jsonl"
    assert main(["label", "--limit", "1", "--samples", "3", "--temperatures", "0.3,1.4", "--max-tokens", "8",
                 "--few-shot", "none", "--format", "text", "--out", str(out), "--quiet"]) == 0
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    ts = read_transcripts(transcripts_path(out))
    assert rows and all({r["chosen_temperature"], r["rejected_temperature"]} <= {0.3, 1.4} for r in rows)
    assert all(t["temperatures"] == [[0.3, 1.4, 0.3][i] for i in t["samples"]] for t in ts)
    print("chosen temperatures:", [r["chosen_temperature"] for r in rows])


# Written by the code from before --temperatures (f4a03db) for the config below: a run it started must resume.
FINGERPRINT_BEFORE_TEMPERATURES = "c65a2b4e75b7d36b"


def old_format(tmp_path, c, fingerprint):
    """The run `c` as an older Charter left it: one transcript line per comparison, no meta file,
    no record of its outputs."""
    tpath = transcripts_path(c.out)
    lines = [{**t, "fingerprint": fingerprint} for t in read_transcripts(tpath)]
    tpath.write_text("".join(json.dumps(t) + "\n" for t in lines))
    for name in ("labels.meta.json", "labels.config.yaml", ".charter-outputs.json"):
        (tmp_path / name).unlink()
    return tpath, lines


def test_a_run_from_before_temperatures_resumes_without_force(tmp_path, monkeypatch):
    """An older Charter's label run (one line per comparison, no meta) is converted and resumed."""
    monkeypatch.chdir(tmp_path)  # the config holds relative paths, as the one fingerprinted then
    (tmp_path / "p.yaml").write_text("principles:\n  - id: kind\n    text: Which response is kinder?\n")
    c = LabelConfig(backend="fake", limit=3, samples=2, max_tokens=20, principles="p.yaml", few_shot="none",
                    out="labels.jsonl").validate()
    label(c, policy=policy(), feedback=Scripted(longer), progress=False)
    rows = (tmp_path / "labels.jsonl").read_text()
    tpath, lines = old_format(tmp_path, c, FINGERPRINT_BEFORE_TEMPERATURES)
    again = policy()
    s = label(c, policy=again, feedback=Scripted(longer), progress=False)
    assert s.resumed == 3 and s.rows == 3 and again.calls == []
    assert (tmp_path / "labels.jsonl").read_text() == rows
    assert tpath.with_name("labels.transcripts.v1.jsonl").read_text().count("\n") == len(lines)  # kept
    assert [t["id"] for t in read_transcripts(tpath)] == [t["id"] for t in lines]
    with pytest.raises(RunError, match="different settings"):  # a run that sets them is a different run
        label(replace(c, temperatures=[0.6, 1.4]), policy=policy(), feedback=Scripted(longer), progress=False)


def test_an_older_run_with_other_settings_is_refused_and_left_as_it_was(tmp_path):
    c = cfg(tmp_path)
    label(c, policy=policy(), feedback=Scripted(longer), progress=False)
    tpath, _ = old_format(tmp_path, c, "0123456789abcdef")
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    with pytest.raises(RunError, match="made by an older Charter with different settings; use a new --out, pass "
                                       "--overwrite to label again from the start, or --force"):
        label(c, policy=policy(), feedback=Scripted(longer), progress=False)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before
    s = label(c, policy=policy(), feedback=Scripted(longer), progress=False, force=True)
    assert s.resumed == 3 and s.rows == 3
