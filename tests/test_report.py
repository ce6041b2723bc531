"""The static HTML report: sections present, model text escaped, self-contained, CLI."""
import base64
import hashlib
import json
import re

import pytest

from charter.backends.fake import FakeBackend
from charter.cli import main
from charter.evaluate.suite import EvalConfig, evaluate_records as evaluate
from charter.report import assets
from charter.report.html import load_report_run, render, write_report
from charter.runs.runread import load_run


from support import XSS, REFRESH, poison_eval, make_run, timed

def test_report_sections_and_escaping(tmp_path):
    run = load_report_run(make_run(tmp_path))
    page = render([run])
    for section in ("summary", "principles", "lengths", "failures", "evaluation", "chains"):
        assert f'<section id="{section}">' in page
    assert page.count("<script") == 1  # only the report's own script
    assert XSS not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "<img src=x" not in page and "&lt;img src=x onerror=alert(2)&gt;" in page
    assert "&quot;hi&quot; &amp; &lt;b&gt;bold&lt;/b&gt;" in page
    assert page.count('class="chain"') == len(run.records) == 8
    assert "scripted failure" in page and "Elo" in page and "revision preferred" in page


def test_report_is_self_contained(tmp_path):
    page = render([load_report_run(make_run(tmp_path))])
    assert not re.search(r"""(?:src|href)=["']?(?:https?:)?//""", page)  # nothing fetched from anywhere
    assert len(re.findall(r'src="data:image/png;base64,', page)) >= 4  # principles, lengths, Elo, curves
    digest = base64.b64encode(hashlib.sha256(assets.JS.encode()).digest()).decode()
    assert f"script-src 'sha256-{digest}'" in page  # CSP: only this exact script may run


def test_report_without_eval_and_two_runs(tmp_path):
    a = make_run(tmp_path, "crit", with_eval=False)
    b = make_run(tmp_path, "nocrit", critique=False, with_eval=False)
    page = render([load_report_run(a), load_report_run(b)])
    assert "No eval.json" in page and '<select id="run">' in page
    assert 'data-run="crit"' in page and 'data-run="nocrit"' in page


def test_report_cli(tmp_path, capsys):
    run = make_run(tmp_path, with_eval=False)
    assert main(["report", str(run)]) == 0
    assert "report.html" in capsys.readouterr().out and (run / "report.html").exists()
    assert write_report([run], tmp_path / "x" / "r.html").exists()
    assert main(["report", str(tmp_path / "nowhere")]) == 2


def test_report_names_a_damaged_eval_json(tmp_path, capsys):
    run = make_run(tmp_path, with_eval=False)
    (run / "eval.json").write_text('{"judge": ', encoding="utf-8")
    assert main(["report", str(run)]) == 2
    err = capsys.readouterr().err
    assert f"{run / 'eval.json'}: cannot be read" in err and "charter eval" in err and "Traceback" not in err
    (run / "eval.json").write_text("[1, 2]", encoding="utf-8")
    assert main(["report", str(run)]) == 2 and "not an evaluation" in capsys.readouterr().err
    assert not (run / "report.html").exists()


def test_every_value_of_eval_json_is_escaped(tmp_path):
    page = render([load_report_run(poison_eval(make_run(tmp_path)))])
    assert REFRESH not in page and "<form" not in page and '<input name="q"' not in page
    assert page.count("&lt;meta http-equiv=&quot;refresh&quot;") > 10  # shown as text, everywhere


# ---- what a run cost; over-refusal in the report ---------------------------------------------------


def test_run_cost_from_records():
    from charter.pipeline.cost import busy_seconds, run_cost

    assert busy_seconds([(0, 10), (5, 12), (20, 25), (21, 22)]) == 17
    # two overlapping records, a gap (a resumed session), a helpfulness prompt sampled twice (one prompt)
    recs = [timed(0, 0, 10, "a"), timed(1, 5, 12, "b"), timed(2, 100, 104, "c", kind="helpful"),
            timed(3, 101, 105, "c", kind="helpful")]
    c = run_cost(recs, gpus=2, device="cuda")
    assert (c.records, c.prompts, c.tokens_in, c.tokens_out, c.engine_seconds) == (4, 3, 400, 40, 17.0)
    assert c.tokens_per_second == pytest.approx(40 / 17) and c.projected_seconds(300) == pytest.approx(1700)
    assert c.projected_gpu_hours(300) == pytest.approx(1700 * 2 / 3600)
    line = c.line(300)
    assert "400 tokens in, 40 out, 17.0 engine s (2.4 tok/s out); 300 prompts of this shape: ~28 min" in line
    assert "0.94 GPU-hours on 2 GPU(s)" in line
    from charter.types import Record

    old = run_cost([Record(id="x", kind="red_team", prompt=[], tokens={"prompt": 5, "completion": 1})])
    assert old.engine_seconds is None and old.projected_seconds(10) is None and "no timings" in old.line()
    assert c.to_dict()["projections"][0] == {"prompts": 1000, "seconds": pytest.approx(17 / 3 * 1000),
                                             "gpu_hours": pytest.approx(17 / 3 * 1000 * 2 / 3600)}


def test_generate_prints_the_cost(tmp_path, capsys):
    assert main(["generate", "--backend", "fake", "--limit", "2", "--rounds", "1", "--quiet",
                 "--out", str(tmp_path / "r")]) == 0
    out = capsys.readouterr().out
    assert re.search(r"cost: [\d,]+ tokens in, [\d,]+ out, [\d.]+ engine s .*10,000 prompts of this shape", out)


def test_report_cost_and_over_refusal_sections_escaped(tmp_path):
    from charter.report.digest import digest
    from charter.report.html import cost_section

    out = make_run(tmp_path, with_eval=False)
    factory = lambda spec: FakeBackend("judge") if spec == "judge" else FakeBackend(  # noqa: E731
        spec, responder=lambda p: f"I'm sorry. {XSS}" if spec == "base" else f"{spec}: {XSS}")
    evaluate(EvalConfig(run=str(out), models=["base", "sl-cai"], judge="judge", bootstrap=5, over_refusal=True,
                        over_refusal_limit=8), load_run(out), factory=factory, log=lambda m: None)
    page = render([load_report_run(out)])
    assert '<section id="cost">' in page and "tokens/s out" in page and "182,831" in page
    assert 'alt="refusal rate on safe prompts vs harmlessness Elo"' in page and "Refused safe prompts (8" in page
    assert XSS not in page
    ev = json.loads((out / "eval.json").read_text())
    ev["over_refusal"]["models"] = {k + XSS: v for k, v in ev["over_refusal"]["models"].items()}
    ev["over_refusal"]["points"] = [{**p, "model": p["model"] + XSS} for p in ev["over_refusal"]["points"]]
    (out / "eval.json").write_text(json.dumps(ev))
    page = render([load_report_run(out)])
    assert XSS not in page and f"base{XSS}".replace("<", "&lt;").replace(">", "&gt;") in page
    run = load_report_run(out)
    for r in run.records:
        r.timings = {}  # records made before timings were kept
    run.digest = digest(run.records, run.config)  # the report's numbers, from these records
    assert "<td>–</td>" in cost_section([run])


@pytest.mark.slow
def test_cost_of_a_real_run_on_the_embedded_model(tmp_path, capsys):
    """A real (tiny) run: the summary prints its cost, and the report's cost section agrees with run_cost."""
    from charter.pipeline.cost import run_cost

    out = tmp_path / "r"
    assert main(["generate", "--backend", "transformers", "--model", "embedded", "--limit", "2", "--rounds", "1",
                 "--helpful-prompts", "none", "--max-tokens", "8", "--quiet", "--out", str(out)]) == 0
    assert "prompts of this shape" in capsys.readouterr().out
    c = run_cost(load_run(out))
    assert c.prompts == 2 and c.tokens_in > c.tokens_out > 0 and c.engine_seconds > 0 and c.tokens_per_second > 0
    assert c.projected_seconds(2000) == pytest.approx(1000 * c.engine_seconds)
    assert f"{c.engine_seconds:.1f}" in render([load_report_run(out)])
