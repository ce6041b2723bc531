"""The report beside generation: training curves, label statistics, the labeler's calibration,
critiqued vs direct chains side by side, and the small-sample rule for intervals."""
import json
from html.parser import HTMLParser

import pytest

from charter.cli import main
from charter.errors import InputError
from charter.report.chains import side_by_side_section, word_diff
from charter.report.html import load_report_run, render, write_report
from charter.report.labels import label_stats, labels_section
from charter.report.markup import ci
from charter.report.plots import _bounds
from charter.report.training import is_training, read_training, training_section
from charter.stats import too_few

from support import XSS, make_run


class Page(HTMLParser):
    """Per <section id>: the tags (with classes) and the text inside it."""

    def __init__(self, html: str):
        super().__init__()
        self.section, self.tags, self.text = None, {}, {}
        self.feed(html)

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "section":
            self.section = a.get("id")
        if self.section:
            self.tags.setdefault(self.section, []).append((tag, a.get("class") or "", a))

    def handle_endtag(self, tag):
        if tag == "section":
            self.section = None

    def handle_data(self, data):
        if self.section:
            self.text[self.section] = self.text.get(self.section, "") + data

    def count(self, section, tag, cls=None):
        return sum(1 for t, c, _ in self.tags.get(section, []) if t == tag and (cls is None or cls in c.split()))


def trainer_state(folder, steps, extra=None):
    folder.mkdir(parents=True, exist_ok=True)
    history = [{"step": s, "epoch": s / 10, "loss": 2.0 / s, "learning_rate": 1e-4 * (1 - s / 20),
                "grad_norm": 1.5, **(extra or {})} for s in steps]
    (folder / "trainer_state.json").write_text(json.dumps({"global_step": steps[-1], "log_history": history}))


def test_training_curves_from_the_newest_checkpoint(tmp_path):
    out = tmp_path / "sft"
    trainer_state(out / "checkpoints" / "checkpoint-2", [1, 2])
    trainer_state(out / "checkpoints" / "checkpoint-10", list(range(1, 11)), {XSS: 3.0, "note": "text"})
    assert is_training(out) and not is_training(tmp_path)
    log = read_training(out)
    assert log.source.parent.name == "checkpoint-10"
    curves = log.curves()
    assert list(curves)[:3] == ["loss", "learning_rate", "grad_norm"]  # the telling ones first
    assert len(curves["loss"]) == 10 and "note" not in curves and "epoch" not in curves
    page = Page(render([], training=[log]))
    assert page.count("training", "img") == 1 and page.count("training", "tr") == len(curves) + 1
    assert "9.5e-05" in page.text["training"]  # a learning rate keeps its digits
    assert XSS in page.text["training"]  # shown as text: the parser saw no script tag
    assert page.count("training", "script") == 0


def test_the_final_log_wins_over_checkpoints_and_a_damaged_one_is_named(tmp_path):
    out = tmp_path / "pm"
    trainer_state(out / "checkpoints" / "checkpoint-5", [1, 2, 3, 4, 5])
    (out / "train_log.jsonl").write_text("".join(json.dumps({"step": s, "loss": 1.0, "reward": s}) + "\n"
                                                 for s in (1, 2, 3, 4, 5, 6)))
    assert read_training(out).curves()["reward"][-1] == (6.0, 6.0)
    (out / "train_log.jsonl").write_text("{not json\n")
    with pytest.raises(InputError, match="train_log.jsonl"):
        read_training(out)
    assert training_section([]) is None


def transcript(pid, comps):
    return {"id": pid, "prompt": [{"role": "user", "content": "q"}], "answers": ["a", "b", "c"],
            "comparisons": comps, "error": None}


def comparison(per_principle, xy, yx):
    asks = []
    for k, _ in enumerate(per_principle):
        asks += [{"principle": f"p{k}", "order": "xy", "probs": [xy, 1 - xy]},
                 {"principle": f"p{k}", "order": "yx", "probs": [yx, 1 - yx]}]
    return {"samples": [0, 1], "principles": [f"p{k}" for k in range(len(per_principle))],
            "per_principle": per_principle, "score_first": sum(per_principle) / len(per_principle), "asks": asks}


LINES = [transcript("a", [comparison([0.9, 0.8], 0.9, 0.2), comparison([0.9, 0.3], 0.9, 0.9),
                          {"samples": [1, 2], "skipped": "identical answers", "score_first": None}]),
         transcript("b", [comparison([0.2, 0.1], 0.2, 0.7), comparison([0.6, 0.7], 0.6, 0.3)]),
         {"id": "c", "prompt": [], "answers": [], "comparisons": [], "error": "timeout"}]


def test_label_statistics():
    s = label_stats("labels.jsonl", LINES)
    assert (s.prompts, s.failed, s.skipped, len(s.scores)) == (3, 1, 1, 4)
    assert (s.orders, s.consistent) == (8, 6)  # the second comparison's orders both pick the first shown
    assert (s.ensembles, s.unanimous) == (4, 3)
    assert s.spread == pytest.approx([0.1, 0.6, 0.1, 0.1])


def write_labels(tmp_path, lines):
    out = tmp_path / "labels.jsonl"
    out.write_text("")
    (tmp_path / "labels.transcripts.jsonl").write_text("".join(json.dumps(t) + "\n" for t in lines))
    return out


def test_label_section_in_the_page_and_the_labelers_calibration(tmp_path, capsys):
    labels = write_labels(tmp_path, [{**t, "id": f"{t['id']}{k}"} for k in range(2) for t in LINES])
    labeler = tmp_path / "labeler.json"
    bins = [{"low": b / 10, "high": (b + 1) / 10, "count": 4, "mean_predicted": b / 10 + 0.05, "observed": b / 10}
            for b in range(10)]
    labeler.write_text(json.dumps({"model": XSS, "accuracy": 0.75, "accuracy_first_order": 0.7, "n_rows": 20,
                                   "ece": 0.05, "brier": 0.2, "bins": bins, "rows": []}))
    run = make_run(tmp_path, with_eval=False)
    assert main(["report", str(run), "--labels", str(labels), str(labeler), "--out", str(tmp_path / "r.html")]) == 0
    page = Page((tmp_path / "r.html").read_text())
    assert page.count("labels", "img") == 2  # the score histogram and the reliability diagram
    text = page.text["labels"]
    assert "75% (12 of 16)" in text and "75% (6 of 8)" in text  # position consistency; ensemble agreement
    assert "expected calibration error" in text and "0.050" in text and XSS in text
    assert ("a", "", {"href": "#bias"}) in page.tags["labels"]  # the hook to the Judge biases section


def test_a_handful_of_labels_is_not_read_as_a_share(tmp_path):
    html = labels_section([label_stats("l", LINES[:1])], [("few.json", {"n_rows": 3, "accuracy": 1.0, "bins": []})])
    assert "n = 4: too few for an interval" in html  # 4 order pairs, 2 of them consistent: not "50%"
    assert "n = 3: too few for an interval" in html and "100%" not in html


def test_critiqued_and_direct_chains_side_by_side(tmp_path):
    crit = load_report_run(make_run(tmp_path, "crit", with_eval=False))
    direct = load_report_run(make_run(tmp_path, "nocrit", critique=False, with_eval=False))
    page = Page(render([crit, direct]))
    shared = {r.id for r in crit.records if r.error is None} & {r.id for r in direct.records if r.error is None}
    assert shared and page.count("sides", "details", "pair") == len(shared)
    assert page.count("sides", "div", "sides") == len(shared)  # two columns per prompt
    assert page.count("sides", "ins") > 0 and page.count("sides", "del") > 0
    assert page.count("sides", "script") == 0 and page.count("chains", "details", "chain") == 16
    assert side_by_side_section([crit]) is None  # one run: nothing to set beside it


def test_word_diff_marks_changes_and_escapes_them():
    html = word_diff("I can not help <b>", "I can help <script>x</script>")
    assert html == "I can <del>not </del>help <del>&lt;b&gt;</del><ins>&lt;script&gt;x&lt;/script&gt;</ins>"
    assert word_diff(None, "new") == "<ins>new</ins>"


def test_the_small_sample_rule():
    assert too_few(3) == "n = 3: too few for an interval" and too_few(5) is None and too_few(None) is None
    assert ci({"n": 3, "low": -7201.0, "high": 12.0}, "low", "high", "+.0f") == "n = 3: too few for an interval"
    assert ci({"n": 40, "low": -1.0, "high": 2.0}, "low", "high", "+.0f") == "[-1, +2]"
    assert ci({"n_critique": 2, "n_direct": 9, "low": 0, "high": 1}, "low", "high", ".1f").startswith("n = 2")
    rows = [{"n": 3, "mean": 1.0, "low": -7201.0, "high": 12.0}, {"n": 50, "mean": 1.0, "low": 0.5, "high": 1.5}]
    assert _bounds(rows, "mean") == ([1.0, 0.5], [1.0, 1.5])  # the plots draw no band from 3 points


def test_an_evaluation_with_few_records_shows_no_interval(tmp_path):
    run = load_report_run(make_run(tmp_path))  # 4 red-team prompts: every Elo rests on a handful
    page = Page(render([run]))
    assert "too few for an interval" in page.text["evaluation"]


def test_report_cli_takes_training_folders(tmp_path, capsys):
    run = make_run(tmp_path, with_eval=False)
    trainer_state(tmp_path / "ckpt", [1, 2, 3])
    assert main(["report", str(run), "--train", str(tmp_path / "ckpt")]) == 0
    assert Page((run / "report.html").read_text()).count("training", "img") == 1
    page = Page(write_report([run, tmp_path / "ckpt"], tmp_path / "r2.html").read_text())
    assert page.count("training", "img") == 1  # found among the paths too


def test_a_train_folder_without_a_log_is_named(tmp_path, capsys):
    run = make_run(tmp_path, with_eval=False)
    (tmp_path / "empty").mkdir()
    assert main(["report", str(run), "--train", str(tmp_path / "empty")]) == 2
    assert "train_log.jsonl" in capsys.readouterr().err


def test_every_interval_plot_draws_with_a_handful_of_points():
    from charter.report import plots

    few = {"n": 2, "mean": 0.1, "low": -7201.0, "high": 12.0}
    runs = [{"label": "crit", "by_revision": [{**few, "revision": 0, "evasive": 0.0}],
             "per_principle": [{**few, "principle": "harm"}]}]
    drawn = [plots.pm_revision_plot(runs), plots.principle_effect_plot(runs[0]["per_principle"]),
             plots.critique_plot({"critique": "a", "direct": "b", "by_revision": [
                 {"revision": 0, "critique": 0.1, "direct": 0.0, "diff": 0.1, "low": -9.0, "high": 9.0,
                  "n_critique": 2, "n_direct": 2}]}),
             plots.elo_plot({"harmless": {"comparisons": 3,
                                          "players": {"a": {"elo": 0.0, "low": -900.0, "high": 9.0}}}}),
             plots.revision_plot([{"label": "crit", "curves": {"harmless": {"rounds": [
                 {"round": 1, "n": 2, "p_revision": 0.5, "elo": 3.0, "elo_low": -700.0, "elo_high": 50.0}]}}}])]
    assert all(len(png) > 1000 for png in drawn)


# ---- the real embedded model ---------------------------------------------------------------------


@pytest.mark.slow
def test_report_of_the_whole_loop_on_the_embedded_model(tmp_path, capsys):
    """generate (critiqued and direct) -> train sft -> label -> one report with every section."""
    tiny = ["--backend", "transformers", "--model", "embedded", "--limit", "2", "--rounds", "1",
            "--helpful-prompts", "none", "--max-tokens", "16", "--quiet"]
    crit, direct, sft, labels = (tmp_path / n for n in ("crit", "direct", "sft", "labels.jsonl"))
    assert main(["generate", *tiny, "--out", str(crit)]) == 0
    assert main(["generate", *tiny, "--no-critique", "--out", str(direct)]) == 0
    cfg = tmp_path / "sft.yaml"
    cfg.write_text("trainer:\n  max_length: 96\n  per_device_train_batch_size: 1\n  logging_steps: 1\n"
                   "  gradient_checkpointing: false\n")
    assert main(["train", "sft", "--config", str(cfg), "--data", str(crit), "--out", str(sft), "--max-steps", "2",
                 "--quiet"]) == 0
    assert main(["label", "--backend", "transformers", "--limit", "2", "--max-tokens", "16", "--out", str(labels),
                 "--quiet"]) == 0
    out = tmp_path / "r.html"
    assert main(["report", str(crit), str(direct), "--train", str(sft), "--labels", str(labels),
                 "--out", str(out)]) == 0
    page = Page(out.read_text())
    assert page.count("training", "img") == 1 and "loss" in page.text["training"]
    assert page.count("labels", "img") == 1 and "position consistency" in page.text["labels"]
    assert page.count("sides", "details", "pair") == 2 and page.count("sides", "div", "sides") == 2
    assert "critiqued: crit" in page.text["sides"] and "direct (no critique): direct" in page.text["sides"]
