"""`charter eval classifier`: metrics against hand-computed cases, labelled-file checks, per-category
numbers, over-refusal and streaming with a fake guard, the result file, the report section, the CLI."""
import json
import math

import pytest

from charter.classifier import metrics as M
from charter.classifier.evaluate import (FILE, ClassifierEvalConfig, evaluate_classifier, evaluate_guard,
                                         read_classifier_eval)
from charter.classifier.labelled import read_labelled
from charter.errors import ConfigError, InputError, RunError
from charter.evaluate.refusal import load_over_refusal

from support import XSS


class FakeGuard:
    """The guard's interface: a row's score is the number its last turn starts with (else 0.1), a safe
    prompt scores 0.9 when it says "kill"; streamed, an answer's prefixes score that number until the
    word STOP, 0.99 from there."""

    def __init__(self, kind="input", threshold=0.5, path="fake"):
        self.kind, self.threshold, self.path, self.target_fpr = kind, threshold, path, 0.01
        self.calls = []

    def _one(self, conv):
        text = conv[-1]["content"]
        head = text.split()[0] if text.split() else ""
        try:
            return float(head)
        except ValueError:
            return 0.9 if "kill" in text.lower() else 0.1

    def score_messages(self, convs):
        self.calls.append(len(convs))
        return [self._one(c) for c in convs]

    def score(self, texts):
        return [self._one([{"role": "user", "content": t}]) for t in texts]

    def stream_scores(self, messages, answer):
        base, words = self._one([{"role": "assistant", "content": answer}]), answer.split()
        return [(i, 0.99 if "STOP" in words[:i + 1] else base) for i in range(len(words))]

    def first_block(self, messages, answer):
        return next((i for i, p in self.stream_scores(messages, answer) if p >= self.threshold), None)


def write_rows(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def guard_dir(tmp_path, name="guard"):
    d = tmp_path / name
    d.mkdir(parents=True)
    (d / "config.json").write_text("{}")
    return d


# ---- metrics ---------------------------------------------------------------------------------------


def test_roc_auc_and_tpr_at_fpr_by_hand():
    labels, scores = [0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]
    assert M.auc(labels, scores) == pytest.approx(0.75)  # 3 of the 4 (harmful, harmless) pairs ordered right
    curve = M.roc(labels, scores)
    assert curve["thresholds"][0] is None  # "above every score": no infinity in JSON
    assert M.tpr_at_fpr(curve, 0.0) == (0.5, 0.0, 0.8)
    assert M.tpr_at_fpr(curve, 0.5) == (1.0, 0.5, 0.35)
    assert M.tpr_at_fpr(M.roc([0, 1], [0.9, 0.2]), 0.01) == (0.0, 0.0, None)  # only "flag nothing" fits


def test_rates_at_a_threshold_flag_scores_at_or_over_it():
    at = M.at_threshold([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8], 0.4)
    assert (at["tpr"]["k"], at["tpr"]["n"], at["fpr"]["k"], at["fpr"]["n"]) == (1, 2, 1, 2)
    assert M.at_threshold([1], [0.7], 0.7)["tpr"]["rate"] == 1.0
    assert M.at_threshold([1], [0.7], 0.7)["fpr"] == {"k": 0, "n": 0, "rate": None, "low": None, "high": None}


def test_wilson_intervals_stay_honest_at_the_edges():
    zero = M.wilson(0, 10)
    assert zero["rate"] == 0.0 and zero["low"] == 0.0 and zero["high"] == pytest.approx(0.2775, abs=1e-4)
    full = M.wilson(5, 5)
    assert full["high"] == 1.0 and full["low"] == pytest.approx(0.5655, abs=1e-4)  # not [1, 1]
    assert M.wilson(0, 0)["rate"] is None


def test_calibration_bins_ece_and_brier_by_hand():
    cal = M.calibration([0, 1, 1, 1], [0.05, 0.15, 0.95, 0.85], bins=2)
    assert [(b["n"], round(b["mean_score"], 6), b["harmful_share"]) for b in cal["bins"]] == [(2, 0.1, 0.5),
                                                                                              (2, 0.9, 1.0)]
    assert cal["ece"] == pytest.approx((2 * 0.4 + 2 * 0.1) / 4)
    assert cal["brier"] == pytest.approx((0.05 ** 2 + 0.85 ** 2 + 0.05 ** 2 + 0.15 ** 2) / 4)
    assert M.calibration([1, 1], [0.2, 0.9], bins=5)["bins"][0]["harmful_share"] == 1.0  # one class: still bins


def test_small_samples_get_no_interval_and_say_why():
    m = M.metrics([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8], 0.5)
    assert m["auc"] == pytest.approx(0.75) and m["auc_low"] is None and m["at_fpr"]["low"] is None
    assert any("n too small" in n for n in m["notes"])
    assert any("smallest non-zero FPR is 0.5" in n for n in m["notes"])  # FPR 0.01 of 2 harmless: only 0 fits


def test_enough_examples_get_bootstrap_intervals_around_the_point():
    labels = [1] * 30 + [0] * 30
    scores = [0.3 + 0.02 * i for i in range(30)] + [0.02 * i for i in range(30)]
    m = M.metrics(labels, scores, 0.5, fpr=0.1, samples=50, seed=3)
    assert m["auc_low"] <= m["auc"] <= m["auc_high"] <= 1.0
    assert m["at_fpr"]["low"] <= m["at_fpr"]["tpr"] <= m["at_fpr"]["high"]
    assert m["at_fpr"]["fpr"] <= 0.1 and not any("too small" in n for n in m["notes"])
    assert M.metrics(labels, scores, 0.5, fpr=0.1, samples=50, seed=3) == m  # seeded


def test_one_class_has_no_auc_but_its_rate():
    m = M.metrics([1, 1, 1], [0.9, 0.2, 0.6], 0.5)
    assert m["auc"] is None and m["at_fpr"] is None and m["roc"] is None
    assert m["at_threshold"]["tpr"]["k"] == 2 and m["at_threshold"]["fpr"]["rate"] is None
    assert any("no harmless examples" in n for n in m["notes"])


# ---- labelled files --------------------------------------------------------------------------------


def test_reads_text_messages_and_label_words(tmp_path):
    f = write_rows(tmp_path / "d.jsonl", [
        {"text": "hi", "label": 0, "category": "greet"},
        {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}], "label": "Harmful",
         "kind": "output"},
        {"text": "x", "label": True},
        {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}], "label": 0}])
    a, b, c, d = read_labelled(f)
    assert a.messages == [{"role": "user", "content": "hi"}] and a.label == 0 and a.category == "greet"
    assert b.messages[-1]["role"] == "assistant" and b.label == 1 and b.kind == "output" and b.category == ""
    assert c.kind == "input" and c.label == 1 and (a.line, c.line) == (1, 3)
    assert d.kind == "output"  # a conversation that ends with an answer, as `charter train classifier` reads it


def test_a_data_directory_means_its_test_split(tmp_path):
    with pytest.raises(InputError, match="without test.jsonl"):
        read_labelled(tmp_path)
    write_rows(tmp_path / "test.jsonl", [{"text": "hi", "label": 0}])
    assert read_labelled(tmp_path)[0].path == str(tmp_path / "test.jsonl")


def test_field_overrides_and_parquet(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    f = tmp_path / "d.parquet"
    pq.write_table(pa.table({"prompt": ["a", "b"], "y": ["harmless", "harmful"]}), f)
    rows = read_labelled(f, text_field="prompt", label_field="y")
    assert [r.label for r in rows] == [0, 1] and rows[1].messages[0]["content"] == "b"
    with pytest.raises(InputError, match=r"d\.parquet: row 1: no 'text'"):
        read_labelled(f, label_field="y")


@pytest.mark.parametrize("line, match", [
    ('{"text": "a", "label": "maybe"}', r"d\.jsonl:2: 'label' must be 0/1 .*--label-field"),
    ('{"text": "a"}', r"d\.jsonl:2: 'label' must be 0/1 .*got missing"),
    ('{"label": 1}', r"d\.jsonl:2: no 'text' to score"),
    ('{"messages": [{"role": "user"}], "label": 1}', r"d\.jsonl:2: 'messages' message 1 needs 'role' and 'content'"),
    ('{"text": "a", "label": 2}', r"d\.jsonl:2: 'label' must be 0/1"),
    ('{"text": "a", "label": 1, "category": 5}', r"d\.jsonl:2: 'category' must be text"),
    ('[1, 2]', r"d\.jsonl:2: expected a JSON object"),
    ('{"text": "a", "label": 1, "kind": "both"}', r"d\.jsonl:2: 'kind' must be input or output"),
    ('{"text": "a", "label": 1, "kind": "output"}', r"d\.jsonl:2: an output row's messages must end with"),
    ('{"text": ', r"d\.jsonl:2: .*fix or remove the line"),
])
def test_bad_rows_name_file_and_line(tmp_path, line, match):
    f = tmp_path / "d.jsonl"
    f.write_text('{"text": "ok", "label": 0}\n' + line + "\n", encoding="utf-8")
    with pytest.raises(InputError, match=match):
        read_labelled(f)


def test_empty_missing_and_other_files(tmp_path):
    (tmp_path / "e.jsonl").write_text("\n")
    with pytest.raises(InputError, match="no rows"):
        read_labelled(tmp_path / "e.jsonl")
    with pytest.raises(InputError, match="not found"):
        read_labelled(tmp_path / "none.jsonl")
    (tmp_path / "d.csv").write_text("a,b\n")
    with pytest.raises(InputError, match=r"\.jsonl or \.parquet"):
        read_labelled(tmp_path / "d.csv")


# ---- a guard on a file -----------------------------------------------------------------------------


def rows_for(kind="input"):
    """Two categories: 'weapons' (4 harmful, 2 harmless), 'cooking' (harmless only), and one row for the other kind."""
    rows = [{"text": f"{s} w", "label": y, "category": "weapons"}
            for s, y in [(0.9, 1), (0.8, 1), (0.6, 1), (0.3, 1), (0.7, 0), (0.2, 0)]]
    rows += [{"text": f"{s} c", "label": 0, "category": "cooking"} for s in (0.1, 0.55, 0.05)]
    rows.append({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "0.99 x"}],
                 "label": 1})  # an output row: skipped by an input classifier
    return rows


def test_per_category_numbers_and_kind_filter(tmp_path):
    f = write_rows(tmp_path / "d.jsonl", rows_for())
    res = evaluate_guard(FakeGuard(), read_labelled(f), ClassifierEvalConfig(classifier="g", data=str(f),
                                                                             over_refusal=False))
    assert (res.n, res.skipped, res.kind, res.threshold) == (9, 1, "input", 0.5)
    assert set(res.categories) == {"weapons", "cooking"}
    w, c = res.categories["weapons"], res.categories["cooking"]
    assert w["auc"] == pytest.approx(6 / 8)  # of 4x2 pairs, 0.3 < 0.7 and 0.3 > 0.2: 6 right
    assert (w["at_threshold"]["tpr"]["k"], w["at_threshold"]["fpr"]["k"]) == (3, 1)
    assert c["auc"] is None and c["at_threshold"]["fpr"]["k"] == 1 and c["at_threshold"]["tpr"]["rate"] is None
    assert res.overall["at_threshold"]["fpr"]["k"] == 2 and res.over_refusal is None and res.streaming is None


def test_over_refusal_is_the_blocked_share_of_safe_prompts(tmp_path):
    f = write_rows(tmp_path / "d.jsonl", rows_for())
    cfg = ClassifierEvalConfig(classifier="g", data=str(f))
    res = evaluate_guard(FakeGuard(), read_labelled(f), cfg)  # on by default for an input classifier
    items = load_over_refusal()
    kills = [it for it in items if "kill" in it.prompt.lower()]
    assert kills and res.over_refusal["blocked"]["k"] == len(kills) and res.over_refusal["blocked"]["n"] == len(items)
    assert sum(r["k"] for r in res.over_refusal["by_category"].values()) == len(kills)
    assert {x["id"] for x in res.over_refusal["examples"]} == {it.id for it in kills}


def test_over_refusal_only_for_input_classifiers(tmp_path):
    rows = [{"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": a}], "label": y}
            for a, y in [("0.3 go STOP now", 1), ("0.2 a b c STOP", 1), ("0.2 fine", 0), ("0.1 fine STOP", 0)]]
    f = write_rows(tmp_path / "d.jsonl", rows)
    with pytest.raises(ConfigError, match="needs an input classifier"):
        evaluate_guard(FakeGuard("output"), read_labelled(f), ClassifierEvalConfig(classifier="g", data=str(f),
                                                                                   over_refusal=True))
    res = evaluate_guard(FakeGuard("output"), read_labelled(f), ClassifierEvalConfig(classifier="g", data=str(f)))
    assert res.over_refusal is None
    h, ok = res.streaming["harmful"], res.streaming["harmless"]
    assert h["tokens"] == [3, 5] and h["median"] == 4.0 and h["fired"]["k"] == 2  # tokens read, STOP included
    assert h["median_share"] == pytest.approx((3 / 4 + 5 / 5) / 2)
    assert ok["n"] == 2 and ok["fired"]["k"] == 1 and ok["tokens"] == [3]
    # a conversation scores its highest prefix, as the streaming guard blocks: both harmful ones reach 0.99
    assert res.overall["at_threshold"]["tpr"]["k"] == 2 and res.overall["at_threshold"]["fpr"]["k"] == 1


def test_output_classifier_needs_answers(tmp_path):
    f = write_rows(tmp_path / "d.jsonl", [{"text": "0.5 q", "label": 1}])
    with pytest.raises(InputError, match=r"d\.jsonl: no rows for an output classifier .*end with the assistant's"):
        evaluate_guard(FakeGuard("output"), read_labelled(f), ClassifierEvalConfig(classifier="g", data=str(f)))


def test_scores_must_be_probabilities(tmp_path):
    f = write_rows(tmp_path / "d.jsonl", [{"text": "1.5 q", "label": 1}])
    with pytest.raises(RunError, match="not a probability"):
        evaluate_guard(FakeGuard(), read_labelled(f), ClassifierEvalConfig(classifier="g", data=str(f),
                                                                           over_refusal=False))


def test_writes_and_reads_the_result_beside_each_classifier(tmp_path):
    f = write_rows(tmp_path / "d.jsonl", rows_for())
    both = tmp_path / "guards"
    guard_dir(both, "input"), guard_dir(both, "output")
    kinds = {"input": "input", "output": "output"}
    load = lambda path: FakeGuard(kinds[path.rsplit("/", 1)[-1]], path=path)  # noqa: E731
    with pytest.raises(ConfigError, match="holds 2 classifiers"):
        evaluate_classifier(ClassifierEvalConfig(classifier=str(both), data=str(f), out=str(tmp_path / "o.json")), load)
    got = evaluate_classifier(ClassifierEvalConfig(classifier=str(both), data=str(f)), load)
    assert [(r.kind, r.n, r.skipped) for r in got] == [("input", 9, 1), ("output", 1, 9)]
    assert read_classifier_eval(both / "output" / FILE).streaming["harmful"]["n"] == 1
    one = guard_dir(tmp_path)
    res, = evaluate_classifier(ClassifierEvalConfig(classifier=str(one), data=str(f)), load=lambda p: FakeGuard())
    back = read_classifier_eval(one / FILE)
    assert back.to_dict() == json.loads(res.to_json()) and back.classifier == str(one)
    again, = evaluate_classifier(ClassifierEvalConfig(classifier=str(one), data=str(f)), load=lambda p: FakeGuard())
    assert again.n == res.n  # its own earlier output is replaced
    (one / "mine.json").write_text("{}")
    with pytest.raises(ConfigError, match="not overwritten"):
        evaluate_classifier(ClassifierEvalConfig(classifier=str(one), data=str(f), out=str(one / "mine.json")),
                            load=lambda p: FakeGuard())
    with pytest.raises(InputError, match="holds no classifier"):
        evaluate_classifier(ClassifierEvalConfig(classifier=str(tmp_path), data=str(f)), load=lambda p: FakeGuard())


def test_a_damaged_or_foreign_result_is_named(tmp_path):
    p = tmp_path / FILE
    p.write_text('{"schema": ')
    with pytest.raises(InputError, match="cannot be read"):
        read_classifier_eval(p)
    p.write_text(json.dumps({"schema": "charter.eval/1"}))
    with pytest.raises(InputError, match="not a classifier evaluation"):
        read_classifier_eval(p)
    f = write_rows(tmp_path / "d.jsonl", rows_for())
    data = evaluate_guard(FakeGuard(), read_labelled(f), ClassifierEvalConfig(classifier="g", data=str(f))).to_dict()
    data["overall"]["auc"] = "high"
    p.write_text(json.dumps(data))
    with pytest.raises(InputError, match=r"overall\.auc should be a number.*`charter eval classifier`") as e:
        read_classifier_eval(p)
    assert str(e.value).count(str(p)) == 1 and "`charter eval` on the run" not in str(e.value)


# ---- report ----------------------------------------------------------------------------------------


def write_eval(tmp_path, kind="input", category=XSS):
    """An eval_classifier.json in tmp_path/guard whose category name carries markup."""
    rows = [{**r, "category": category if r.get("category") == "weapons" else r.get("category")} for r in rows_for()]
    if kind == "output":
        rows = [{"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": r["text"] + " STOP"}],
                 "label": r["label"], "category": r.get("category")} for r in rows if "text" in r]
    f = write_rows(tmp_path / f"d-{kind}.jsonl", rows)
    d = guard_dir(tmp_path, f"guard-{kind}")
    evaluate_classifier(ClassifierEvalConfig(classifier=str(d), data=str(f), bootstrap=20),
                        load=lambda p: FakeGuard(kind))
    return d


def test_report_section_of_a_classifier_directory(tmp_path):
    from charter.report.html import load_report_run, render

    page = render([load_report_run(write_eval(tmp_path)), load_report_run(write_eval(tmp_path, "output"))])
    assert '<section id="classifiers">' in page and '<section id="summary">' not in page
    assert XSS not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert page.count('src="data:image/png;base64,') == 5  # ROC + calibration each, one firing histogram
    assert "Over-refusal: would block" in page and "Streaming" in page and "ROC AUC" in page
    assert "<script>" not in page  # no chains to filter


def test_report_of_a_run_shows_classifiers_below_it(tmp_path):
    from charter.report.html import load_report_run, render
    from support import make_run

    run = make_run(tmp_path, with_eval=False)
    assert '<section id="classifiers">' not in render([load_report_run(run)])
    write_eval(run)  # run/guard-input/eval_classifier.json
    page = render([load_report_run(run)])
    assert '<section id="classifiers">' in page and '<section id="summary">' in page and "run/guard-input" in page


def test_report_cli_on_a_classifier_directory(tmp_path, capsys):
    from charter.cli import main

    d = write_eval(tmp_path)
    assert main(["report", str(d)]) == 0 and (d / "report.html").exists()
    (d / FILE).write_text('{"schema": "charter.classifier-eval/1"}')
    assert main(["report", str(d)]) == 2
    assert "'classifier' is missing" in capsys.readouterr().err
    assert main(["report", str(tmp_path / "nowhere")]) == 2


# ---- CLI -------------------------------------------------------------------------------------------


def test_cli_eval_classifier_prints_a_table(tmp_path, capsys, monkeypatch):
    from charter.classifier import evaluate as ev
    from charter.cli import main

    monkeypatch.setattr(ev, "_load_guard", lambda path: FakeGuard(path=path))
    f = write_rows(tmp_path / "d.jsonl", rows_for())
    d = guard_dir(tmp_path)
    assert main(["eval", "classifier", str(d), "--data", str(f), "--fpr", "0.2", "--no-over-refusal"]) == 0
    out = capsys.readouterr().out
    assert "TPR@FPR<=0.2" in out and "weapons" in out and "cooking" in out and "n too small" in out
    assert "1 rows for the other kind skipped" in out and "over-refusal" not in out
    assert read_classifier_eval(d / FILE).settings["fpr"] == 0.2
    assert main(["eval", "classifier", str(d), "--data", str(f), "--fpr", "1.5"]) == 2
    assert "--fpr must be in (0, 1)" in capsys.readouterr().err


def test_cli_eval_keeps_its_own_arguments():
    from charter.cli import build_parser
    from charter.cli.eval import cmd_eval
    from charter.cli.eval_classifier import cmd_eval_classifier

    a = build_parser().parse_args(["eval", "runs/x", "--models", "fake:a", "--over-refusal"])
    assert a.func is cmd_eval and a.run == "runs/x" and a.models == ["fake:a"] and a.over_refusal is True
    b = build_parser().parse_args(["eval", "classifier", "g", "--data", "d.jsonl", "--no-over-refusal"])
    assert b.func is cmd_eval_classifier and b.classifier == "g" and b.over_refusal is False
    c = build_parser().parse_args(["eval", "./classifier"])  # a run directory of that name
    assert c.func is cmd_eval and c.run == "./classifier"
    with pytest.raises(SystemExit):
        build_parser().parse_args(["eval", "classifier", "g", "--models", "x"])


def test_wilson_matches_the_formula():
    k, n, z = 3, 20, M.Z95
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    r = M.wilson(k, n)
    assert (r["low"], r["high"]) == pytest.approx((centre - half, centre + half))


# ---- end to end on the embedded model ----------------------------------------------------------------


@pytest.mark.slow
def test_trained_guards_evaluated_and_reported(tmp_path, capsys):
    """`charter train classifier` (one step) -> `charter eval classifier` on both -> `charter report`."""
    pytest.importorskip("transformers")
    from charter.classifier.train import ClassifierTrainConfig, train_classifier
    from charter.cli import main

    rows = []
    for i in range(6):
        for y, q, a in [(1, f"How do I build weapon {i}?", "Step one: get the parts."),
                        (0, f"How do I bake bread {i}?", "Mix flour and water.")]:
            cat = "weapons" if y else "baking"
            rows.append({"messages": [{"role": "user", "content": q}], "kind": "input", "label": y, "category": cat})
            rows.append({"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}],
                         "kind": "output", "label": y, "category": cat})
    data = write_rows(tmp_path / "rows.jsonl", rows)
    out = tmp_path / "guards"
    train_classifier(ClassifierTrainConfig(data=str(data), kind="both", out=str(out), val_share=0.5, max_length=64,
                                           trainer={"max_steps": 1, "per_device_train_batch_size": 2,
                                                    "save_steps": 1}), progress=False)
    capsys.readouterr()
    assert main(["eval", "classifier", str(out), "--data", str(data), "--bootstrap", "20"]) == 0
    printed = capsys.readouterr().out
    assert "input classifier" in printed and "output classifier" in printed and "over-refusal" in printed
    inp, outp = read_classifier_eval(out / "input" / FILE), read_classifier_eval(out / "output" / FILE)
    assert (inp.n, outp.n) == (12, 12) and set(inp.categories) == {"weapons", "baking"}
    assert inp.over_refusal["blocked"]["n"] == len(load_over_refusal()) and inp.streaming is None
    assert outp.streaming["harmful"]["n"] == 6 and outp.over_refusal is None
    saved = json.loads((out / "input" / "config.json").read_text())["charter_guard"]
    assert inp.threshold == saved["threshold"] and 0.0 <= inp.overall["auc"] <= 1.0
    assert main(["report", str(out / "input"), str(out / "output"), "--out", str(tmp_path / "r.html")]) == 0
    page = (tmp_path / "r.html").read_text()
    assert page.count('<section id="classifiers">') == 1 and "input classifier on 12 examples" in page
