"""A judge's position, length and self-preference bias (charter.rlcai.bias): hand-computed numbers
on small rows, the adapters of label, eval-labeler and eval, and their place in each result."""
import json
import math

import pytest

from charter.evaluate.judge import Verdict, verdict_bias
from charter.rlcai.bias import Compared, describe, judge_bias, pearson, ranks, share, spearman, text_lines
from charter.rlcai.bias_rows import label_compared, labeler_compared
from charter.rlcai.labeler_eval import score_labeler

from support import Scripted, always_a, longer

HHH = "438HHHEvaluations.jsonl"
P = 1 / (1 + math.exp(-2.4))  # what Scripted gives its preferred option: e^-0.1 / (e^-0.1 + e^-2.5)


def flipped(c: Compared) -> Compared:
    """The same comparison with x and y named the other way round."""
    return Compared(tuple((yx, xy) for xy, yx in c.orders), c.len_y, c.len_x, c.source_y, c.source_x)


# ---- pure pieces ----------------------------------------------------------------------------------


def test_wilson_interval_and_too_few_to_read():
    notes = {}
    s = share(8, 10, "x", notes)
    assert s["rate"] == 0.8 and s["low"] == pytest.approx(0.4902, abs=1e-4) and s["high"] == pytest.approx(0.9433, abs=1e-4)
    assert notes == {}
    s = share(2, 3, "y", notes)
    assert s == {"n": 3, "rate": pytest.approx(2 / 3), "low": None, "high": None}
    assert notes == {"y": "n = 3: too few to read"}
    assert share(0, 0, "z", notes)["rate"] is None


def test_correlations_by_hand():
    assert pearson([1, 2, 3], [2, 4, 6]) == pytest.approx(1.0)
    assert pearson([1, 2, 3], [1, 0, 1]) == pytest.approx(0.0)
    assert pearson([1, 1, 1], [1, 2, 3]) is None  # no spread: no correlation
    assert ranks([3, 1, 1, 2]) == [4.0, 1.5, 1.5, 3.0]
    assert spearman([1, 2, 3, 4], [1, 4, 9, 16]) == pytest.approx(1.0)
    assert spearman([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)


def test_three_comparisons_by_hand():
    rows = [Compared(((0.8, 0.3),), 100, 50),  # x wins in both orders; x is longer
            Compared(((0.7, 0.6),), 10, 40),  # the first-shown wins in both orders: a flip; x (shorter) wins 0.55
            Compared(((0.5, 0.2),), 30, 30)]  # a tie, then x wins: not the same winner; equal lengths
    b = judge_bias(rows)
    assert b["comparisons"] == 3 and b["verdicts"] == 6
    assert b["consistency"]["n"] == 3 and b["consistency"]["rate"] == pytest.approx(1 / 3)
    assert b["first_wins"]["n"] == 5 and b["first_wins"]["rate"] == pytest.approx(3 / 5)  # 0.8, 0.7, 0.6 of 5 (0.5 is a tie)
    assert b["mean_p_first"] == pytest.approx(3.1 / 6)
    assert b["longer_wins"]["n"] == 2 and b["longer_wins"]["rate"] == pytest.approx(1 / 2)
    assert b["length_pearson"] is None and b["consistency"]["low"] is None
    assert b["notes"] == {"consistency": "n = 3: too few to read", "first_wins": "n = 5: too few to read",
                          "longer_wins": "n = 2: too few to read", "length_correlation": "n = 3: too few to read",
                          "self_preference": "n/a: the judge's model is not known"}
    shown = dict((m, v) for m, v, _ in describe(b))
    assert shown["same winner in both orders"] == "n = 3: too few to read"
    assert shown["judge prefers its own answers"] == "n/a: the judge's model is not known"


def test_length_correlation_does_not_depend_on_which_answer_is_x():
    rows = [Compared(((0.5 + 0.02 * d, 0.5 - 0.02 * d),), 50 + d, 50) for d in range(-10, 11) if d]
    b = judge_bias(rows)
    assert b["length_pearson"] == pytest.approx(1.0) and b["length_spearman"] == pytest.approx(1.0)
    assert b["longer_wins"]["rate"] == 1.0 and b["longer_wins"]["n"] == 20 and b["consistency"]["rate"] == 1.0
    turned = judge_bias([flipped(r) if i % 2 else r for i, r in enumerate(rows)])
    assert turned == b
    noisy = judge_bias(rows + [Compared(((0.2, 0.8),), 90, 10)])  # a far longer answer that loses, badly
    assert noisy["length_pearson"] < 0 < noisy["length_spearman"] < 1  # Pearson follows the outlier, ranks do not


def test_self_preference_where_the_judge_is_a_source():
    own = [Compared(((0.9, 0.2),), 10, 10, "judge", "other") for _ in range(8)]
    own += [Compared(((0.1, 0.8),), 10, 10, "judge", "other") for _ in range(2)]
    own += [Compared(((0.9, 0.2),), 10, 10, "other", "third")]  # no answer of its own: not counted
    b = judge_bias(own, judge="judge")
    assert b["self_preference"]["n"] == 10 and b["self_preference"]["rate"] == pytest.approx(0.8)
    assert "self_preference" not in b["notes"]
    both = judge_bias([Compared(((0.9, 0.2),), 10, 10, "policy", "policy")], judge="policy")
    assert both["notes"]["self_preference"] == "n/a: both answers are the judge's own"
    other = judge_bias([Compared(((0.9, 0.2),), 10, 10, "policy", "policy")], judge="feedback")
    assert other["notes"]["self_preference"] == "n/a: no answer is the judge's own"


def test_a_judge_of_ties_says_so():
    b = judge_bias([Compared(((0.5, None),), 10, 12, "judge", "other")] * 3, judge="judge")
    assert b["first_wins"]["n"] == 0 and b["notes"]["first_wins"] == "n/a: every verdict is a tie"
    assert b["notes"]["self_preference"] == "n/a: each comparison with its own answer is a tie"
    assert b["notes"]["longer_wins"] == "n/a: no decided pair of unequal lengths"


def test_text_lines_show_the_published_numbers_beside():
    rows = [Compared(((0.8, 0.3),), 100, 50)] * 12
    lines = text_lines(judge_bias(rows), "feedback model bias")
    assert lines[0] == "feedback model bias (12 comparisons, 24 single-order verdicts):"
    text = "\n".join(lines)
    assert "100% [76%, 100%] of 12" in text and "about 2 in 3" in text and "1 verdict in 8 flips" in text


# ---- the adapters -------------------------------------------------------------------------------


def test_label_line_gives_one_row_per_labelled_comparison():
    ask = lambda p, order, probs: {"principle": p, "order": order, "probs": probs}  # noqa: E731
    t = {"id": "q", "prompt": [], "answers": ["short", "a longer one", "short"], "error": None, "comparisons": [
        {"samples": [0, 1], "score_first": 0.3, "asks": [ask("a", "xy", [0.2, 0.6]), ask("a", "yx", [0.6, 0.2]),
                                                         ask("b", "xy", [0.5, 0.5]), ask("b", "yx", [0.9, 0.1])]},
        {"samples": [0, 2], "skipped": "identical answers", "score_first": None}]}
    (c,) = label_compared(t, "policy")
    assert c.orders == (pytest.approx((0.25, 0.75)), pytest.approx((0.5, 0.9)))
    assert (c.len_x, c.len_y, c.source_x, c.source_y) == (5, 12, "policy", "policy")
    assert list(label_compared({**t, "error": "boom"})) == []


def test_eval_labeler_bias_by_hand(shared):
    # First 5 HHH rows: the correct answer is the longer one in rows 1, 3, 4, 5 (see test_rlcai_labels).
    r = score_labeler(Scripted(longer), shared / HHH, limit=5)
    b = r.bias
    assert b["comparisons"] == 5 and b["verdicts"] == 10
    assert b["consistency"]["rate"] == 1.0 and b["longer_wins"]["rate"] == 1.0 and b["longer_wins"]["n"] == 5
    assert b["first_wins"]["n"] == 10 and b["first_wins"]["rate"] == 0.5  # the longer one is first in one order
    assert b["first_wins"]["low"] == pytest.approx(0.2366, abs=1e-4)
    r = score_labeler(Scripted(always_a), shared / HHH, limit=5)
    b = r.bias
    assert b["consistency"]["rate"] == 0.0 and b["first_wins"]["rate"] == 1.0
    assert b["mean_p_first"] == pytest.approx(P)
    assert b["notes"]["longer_wins"] == "n/a: no decided pair of unequal lengths"  # P(x better) is exactly 0.5 each time
    assert json.loads(json.dumps(r.to_dict()))["bias"] == b


def test_labeler_rows_read_answer_lengths_from_the_options(shared):
    from charter.rlcai.data import load_feedback
    from charter.rlcai.mc_file import comparisons, load_mc_file

    rows = load_mc_file(shared / HHH, limit=2)
    comps = [comparisons(r, "x", load_feedback()) for r in rows]
    results = [{"comparisons": [{"p_correct_by_order": [0.7, 0.6]}]} for _ in rows]
    got = list(labeler_compared(rows, comps, results))
    assert [(c.len_x, c.len_y) for c in got] == [(577, 347), (180, 401)]
    # row 1: correct (B) is second in the file's order, first in the swapped one; row 2 the other way
    assert got[0].orders == (pytest.approx((0.6, 0.3)),) and got[1].orders == (pytest.approx((0.7, 0.4)),)


def test_eval_verdicts_give_position_length_and_self_preference():
    answers = {f"p{i}": {"judge": "a much longer answer", "base": "short"} for i in range(12)}
    vs = [Verdict(f"p{i}", "helpful", "judge", "base", 0.8, i % 2 == 1, 0.8 if i % 2 == 0 else 0.2)
          for i in range(12)]
    b = verdict_bias(vs, answers, "judge")
    assert b["consistency"]["n"] == 0 and b["notes"]["consistency"] == "n/a: each comparison was asked in one order only"
    assert b["first_wins"]["rate"] == 0.5 and b["first_wins"]["n"] == 12
    assert b["self_preference"]["rate"] == 1.0 and b["self_preference"]["n"] == 12
    assert b["longer_wins"]["rate"] == 1.0
    assert verdict_bias(vs, answers, "someone")["notes"]["self_preference"] == \
        "n/a: no answer is the judge's own"


# ---- in each command's result -------------------------------------------------------------------


def test_label_summary_and_meta_carry_the_bias(tmp_path, capsys):
    from charter.rlcai.labels import LabelConfig, label

    from support import policy

    cfg = LabelConfig(backend="fake", limit=4, samples=3, max_tokens=20, out=str(tmp_path / "labels.jsonl")).validate()
    s = label(cfg, policy=policy(), feedback=Scripted(longer), progress=False)
    b = s.bias
    assert b["comparisons"] == s.rows == 12 and b["verdicts"] == 24
    assert b["consistency"]["rate"] == 1.0 and b["first_wins"]["rate"] == 0.5
    assert b["notes"]["self_preference"] == "n/a: both answers are the judge's own"
    meta = json.loads((tmp_path / "labels.meta.json").read_text())
    assert meta["complete"]["summary"]["bias"] == b
    again = label(cfg, policy=policy(), feedback=Scripted(longer), progress=False)  # finished: read from the mark
    assert again.resumed == 4 and again.bias == b


def test_eval_json_holds_the_judge_bias(tmp_path):
    from charter.evaluate.result import read_eval
    from support import evaluate, record

    evaluate(tmp_path, [record(i) for i in range(3)], ["good", "bad"], "judge", bootstrap=5)
    ev = read_eval(tmp_path / "eval.json")
    assert ev.bias["comparisons"] == 6 and ev.bias["judge"] == "judge"  # 3 prompts, 2 questions
    assert ev.bias["notes"]["consistency"] == "n/a: each comparison was asked in one order only"
    assert ev.bias["notes"]["self_preference"] == "n/a: no answer is the judge's own"
    evaluate(tmp_path / "own", [record(i) for i in range(3)], ["judge", "bad"], "judge", bootstrap=5)
    own = read_eval(tmp_path / "own" / "eval.json").bias
    assert own["self_preference"]["n"] == 6 and "self_preference" in own["notes"]  # n = 6: too few to read


def test_report_draws_the_eval_judge_bias_and_the_label_run(tmp_path):
    from charter.report.html import write_report
    from charter.rlcai.labels import LabelConfig, label

    from support import make_run, policy

    run = make_run(tmp_path)
    out = tmp_path / "labels.jsonl"
    label(LabelConfig(backend="fake", limit=4, samples=3, max_tokens=20, out=str(out)).validate(), policy=policy(),
          feedback=Scripted(longer), progress=False)
    page = write_report([str(run), str(out)], tmp_path / "r.html").read_text()
    assert "Judge biases" in page and "run: eval judge judge" in page and "labels.jsonl (label run)" in page
    assert "n/a: each comparison was asked in one order only" in page and "about 2 in 3" in page


def test_cli_prints_the_labeler_bias(tmp_path, shared, capsys):
    from charter.cli import main

    out = tmp_path / "lab.json"
    assert main(["eval-labeler", str(shared / HHH), "--backend", "fake", "--limit", "3", "--out", str(out),
                 "--plot", "none", "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "labeler bias (3 comparisons, 6 single-order verdicts):" in printed and "n = 3: too few to read" in printed
    assert json.loads(out.read_text())["bias"]["comparisons"] == 3


# ---- the real embedded model ---------------------------------------------------------------------


@pytest.mark.slow
def test_label_and_eval_labeler_show_their_bias_on_the_embedded_model(tmp_path, shared, capsys):
    from charter.cli import main

    out, lab, page = tmp_path / "labels.jsonl", tmp_path / "lab.json", tmp_path / "r.html"
    assert main(["label", "--backend", "transformers", "--limit", "2", "--max-tokens", "16", "--out", str(out),
                 "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "feedback model bias (2 comparisons, 4 single-order verdicts):" in printed
    assert "n = 2: too few to read" in printed and "about 2 in 3" in printed
    assert main(["eval-labeler", str(shared / HHH), "--backend", "transformers", "--limit", "3", "--out", str(lab),
                 "--plot", "none", "--quiet"]) == 0
    assert "labeler bias (3 comparisons, 6 single-order verdicts):" in capsys.readouterr().out
    b = json.loads(lab.read_text())["bias"]
    assert 0 < b["mean_p_first"] < 1 and b["consistency"]["n"] <= 3
    assert main(["report", str(out), str(lab), "--out", str(page)]) == 0
    html = page.read_text()
    assert "Judge biases" in html and "labels.jsonl (label run)" in html and "lab.json (eval-labeler)" in html
