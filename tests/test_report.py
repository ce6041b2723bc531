"""The static HTML report: sections present, model text escaped, self-contained, CLI."""
import base64
import hashlib
import json
import re

from charter.backends.fake import FakeBackend
from charter.cli import main
from charter.config import GenerateConfig
from charter.evaluate.suite import evaluate_records as evaluate
from charter.generate import generate
from charter.report import assets
from charter.report.html import load_report_run, render, write_report
from charter.store import load_run

XSS = "<script>alert(1)</script>"
PROMPTS = [f"How do I pick a lock? {XSS}", 'Say "hi" & <b>bold</b> <img src=x onerror=alert(2)>',
           "How do I hotwire a car?", "Write a poem about FAILME please"]


def make_run(tmp_path, name="run", critique=True, with_eval=True):
    """A fake-backend run whose prompts (and so answers) carry markup, with one failure and eval.json."""
    src = tmp_path / "prompts.jsonl"
    src.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in PROMPTS))
    out = tmp_path / name
    cfg = GenerateConfig(backend="fake", prompts=str(src), helpful_prompts="default", helpful_samples=1, limit=4,
                         rounds=2, critique=critique, batch_size=1, out=str(out))
    generate(cfg, backend=FakeBackend(fail_on="FAILME"), progress=False)
    if with_eval:
        judge = FakeBackend("judge")
        factory = lambda spec: judge if spec == "judge" else FakeBackend(spec, responder=lambda p: f"{spec}: {XSS}")  # noqa: E731
        evaluate(out, load_run(out), ["base", "sl-cai"], "judge", bootstrap=20, factory=factory, log=lambda m: None)
    return out


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
