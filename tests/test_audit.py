"""`charter audit`: which principles explain preference labels. Hand-computed numbers for the pure
pieces, a judge scripted per principle for control flow (resume, failures, refusals), the CLI, the
report's section, and one run on the real embedded model."""
import json
import re

import pytest

from charter.backends.fake import FakeBackend
from charter.cli import main
from charter.errors import ConfigError, InputError, RunError
from charter.rlcai.audit import AuditConfig, audit, load_pairs
from charter.rlcai.audit_stats import disagreements, ensemble, principle_audit, text_table, verdict
from charter.types import Score

from support import OPTION

PRINCIPLES = """principles:
  - id: long
    text: "Which reply is longer and more detailed?"
  - id: short
    text: "Which reply is shorter?"
  - id: first
    text: "Which reply is listed first?"
"""


# ---- pure pieces ----------------------------------------------------------------------------------


def test_icai_metrics_by_hand():
    orders = [(0.9, 0.1)] * 6 + [(0.2, 0.7)] * 2 + [(0.9, 0.9)] * 2  # 6 agree, 2 disagree, 2 flip with order
    p = principle_audit("x", "text", orders, seed=0, samples=200)
    assert p["n"] == 10 and p["agreement"] == pytest.approx(0.7)  # a flip is a tie after averaging: one half
    assert p["consistency"] == pytest.approx(0.8) and p["accuracy"] == pytest.approx(0.75)
    assert p["relevance"] == pytest.approx(0.8) and p["performance"] == pytest.approx(0.4)  # (0.75 - 0.5) * 0.8 * 2
    assert p["mean_p_chosen"] == pytest.approx((6 * 0.9 + 2 * 0.25 + 2 * 0.5) / 10)
    assert p["low"] <= 0.7 <= p["high"] and p == principle_audit("x", "text", orders, seed=0, samples=200)


def test_verdicts():
    base = {"n": 40, "consistency": 0.9, "low": 0.6, "high": 0.8}
    assert verdict(base) == "explains the labels"
    assert verdict({**base, "low": 0.1, "high": 0.4}) == "goes against the labels"
    assert verdict({**base, "low": 0.4, "high": 0.6}) == "no signal (about 50%)"
    assert verdict({**base, "consistency": 0.3}) == "flips with order"
    assert verdict({**base, "consistency": None}) == "no signal (every answer a tie)"
    assert verdict({**base, "n": 3}) == "n = 3: too few to read"
    assert principle_audit("x", "t", [], 0, 10)["verdict"] == "n/a: no pairs"


def test_disagreements_and_ensemble_by_hand():
    by = {"a": [(0.9, 0.1), (0.9, 0.1), (0.1, 0.9), (0.9, 0.1)],  # winners x, x, y, x
          "b": [(0.8, 0.2), (0.2, 0.8), (0.2, 0.8), (0.5, 0.5)]}  # x, y, y, tie
    (d,) = disagreements(by)
    assert d == {"a": "a", "b": "b", "n": 3, "share": pytest.approx(1 / 3)}  # the tie is left out
    assert ensemble(by)[0] == pytest.approx((0.85, 0.15)) and len(ensemble(by)) == 4


def test_pairs_from_hh_rlhf_trl_and_label_rows(tmp_path):
    rows = [{"chosen": "\n\nHuman: Hi there\n\nAssistant: Hello, how can I help?",
             "rejected": "\n\nHuman: Hi there\n\nAssistant: Go away."},
            {"prompt": "Name a colour.", "chosen": "Blue.", "rejected": "No."},
            {"prompt": [{"role": "user", "content": "Q?"}], "chosen": [{"role": "assistant", "content": "a"}],
             "rejected": [{"role": "assistant", "content": "b"}], "score": 0.3},  # soft label for the other answer
            {"prompt": "tie", "chosen": "c", "rejected": "d", "score": 0.5}]
    f = tmp_path / "pairs.jsonl"
    f.write_text("".join(json.dumps(r) + "\n" for r in rows))
    pairs, ties = load_pairs(str(f))
    assert ties == 1 and len(pairs) == 3
    assert pairs[0].prompt == ({"role": "user", "content": "Hi there"},) and pairs[0].chosen == "Hello, how can I help?"
    assert (pairs[1].chosen, pairs[1].rejected) == ("Blue.", "No.") and (pairs[2].chosen, pairs[2].rejected) == ("b", "a")
    assert len({p.id for p in pairs}) == 3 and load_pairs(str(f), limit=1)[0] == pairs[:1]
    f.write_text(json.dumps(rows[3]) + "\n")
    with pytest.raises(InputError, match="no pairs to audit"):
        load_pairs(str(f))


# ---- a judge scripted per principle ---------------------------------------------------------------


class PerPrinciple(FakeBackend):
    """'long' prefers the longer option, 'short' the shorter, 'first' always (A)."""

    def __init__(self, **kw):
        super().__init__(**kw)
        self.scored = 0

    def score(self, contexts, continuations):
        out = []
        for ctx, cont in zip(contexts, continuations):
            text = ctx if isinstance(ctx, str) else ctx[-1]["content"]
            if self.fail_on and self.fail_on in text:
                raise RuntimeError("scripted failure")
            self.scored += 1
            opts = [t for _, t in OPTION.findall(text)]
            lengths = [len(t) for t in opts]
            best = (lengths.index(max(lengths)) if "longer" in text else
                    lengths.index(min(lengths)) if "shorter" in text else 0)
            letter = re.search(r"\(([A-H])\)", cont).group(1)
            out.append(Score(-0.1 if "ABCDEFGH".index(letter) == best else -2.5, 1))
        return out


@pytest.fixture
def data(tmp_path):
    rows = [{"prompt": f"Question {i}?", "chosen": f"A long and careful answer number {i}.", "rejected": f"No {i}."}
            for i in range(12)]
    f = tmp_path / "pairs.jsonl"
    f.write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "p.yaml").write_text(PRINCIPLES)
    return f


def config(tmp_path, data, **kw):
    return AuditConfig(**{"data": str(data), "backend": "fake", "principles": str(tmp_path / "p.yaml"),
                          "out": str(tmp_path / "audit.json"), "bootstrap": 200, **kw})


def test_each_principle_against_the_labels(tmp_path, data):
    judge = PerPrinciple()
    res = audit(config(tmp_path, data), backend=judge)
    by = {p["id"]: p for p in res.principles}
    assert res.pairs == 12 and res.failed == 0 and judge.scored == 12 * 3 * 2 * 2  # pairs, principles, orders, options
    assert by["long"]["agreement"] == 1.0 and by["long"]["verdict"] == "explains the labels"
    assert by["short"]["agreement"] == 0.0 and by["short"]["verdict"] == "goes against the labels"
    assert by["first"]["agreement"] == 0.5 and by["first"]["consistency"] == 0.0
    assert by["first"]["verdict"] == "flips with order"
    split = {(d["a"], d["b"]): d for d in res.disagreements}
    assert split[("long", "short")]["share"] == 1.0 and split[("long", "first")]["n"] == 0  # 'first' only ties
    assert res.longer_chosen["rate"] == 1.0 and res.all_principles["id"] == "all"
    assert res.bias["consistency"]["n"] == 36 and res.bias["consistency"]["rate"] == pytest.approx(2 / 3)  # 'first' flips
    saved = json.loads((tmp_path / "audit.json").read_text())
    assert saved == json.loads(json.dumps(res.to_dict())) and saved["schema"] == "charter.audit/1"
    text = "\n".join(text_table(saved))
    assert "long vs short: 100% of 12 pairs" in text and "explains the labels" in text and "1 verdict in 8" in text


def test_failed_pairs_are_judged_again_on_resume(tmp_path, data):
    # one question a call: a failed call fails the pairs whose questions it carried
    res = audit(config(tmp_path, data, batch_size=1), backend=PerPrinciple(fail_on="number 3."))
    assert res.failed == 1 and res.pairs == 11
    again = PerPrinciple()
    res = audit(config(tmp_path, data), backend=again)
    assert res.failed == 0 and res.pairs == 12 and again.scored == 1 * 3 * 2 * 2  # only the failed pair
    done = PerPrinciple()
    assert audit(config(tmp_path, data, bootstrap=50, seed=3), backend=done).pairs == 12 and done.scored == 0
    copy = tmp_path / "copy.jsonl"  # the same pairs from another file: answers are kept by the pair's content
    copy.write_text(data.read_text())
    assert audit(config(tmp_path, copy), backend=done).pairs == 12 and done.scored == 0


def test_other_principles_are_refused_then_overwritten(tmp_path, data):
    audit(config(tmp_path, data), backend=PerPrinciple())
    (tmp_path / "p.yaml").write_text(PRINCIPLES.replace("listed first", "listed at the top"))
    with pytest.raises(RunError, match="different settings"):
        audit(config(tmp_path, data), backend=PerPrinciple())
    judge = PerPrinciple()
    assert audit(config(tmp_path, data), backend=judge, overwrite=True).pairs == 12 and judge.scored == 144


def test_config_and_output_checks(tmp_path, data):
    with pytest.raises(ConfigError, match="out must end in .json"):
        AuditConfig(data=str(data), out=str(tmp_path / "a.txt")).validate()
    with pytest.raises(ConfigError, match="data"):
        AuditConfig(out=str(tmp_path / "a.json")).validate()
    with pytest.raises(ConfigError, match="inputs"):
        same = tmp_path / "pairs.json"
        same.write_text(data.read_text())
        audit(config(tmp_path, same, out=str(same)), backend=PerPrinciple())


def test_cli_prints_the_table_and_writes_json(tmp_path, data, capsys):
    out = tmp_path / "cli.json"
    assert main(["audit", str(data), "--backend", "fake", "--principles", str(tmp_path / "p.yaml"), "--out", str(out),
                 "--limit", "4", "--bootstrap", "20", "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "4 pairs judged by embedded" in printed and "n = 4: too few to read" in printed
    assert json.loads(out.read_text())["pairs"] == 4
    assert main(["audit", "--backend", "fake"]) == 2
    assert "data" in capsys.readouterr().err


def test_report_draws_the_audit_and_its_bias(tmp_path, data):
    from charter.report.html import write_report

    audit(config(tmp_path, data), backend=PerPrinciple())
    d = json.loads((tmp_path / "audit.json").read_text())
    d["principles"][0]["id"] = "<script>x</script>"
    hostile = tmp_path / "hostile.json"
    hostile.write_text(json.dumps(d))
    page = write_report([str(tmp_path / "audit.json"), str(hostile)], tmp_path / "r.html").read_text()
    assert "Constitution audit" in page and "Judge biases" in page and "explains the labels" in page
    assert "<script>x</script>" not in page and "&lt;script&gt;x&lt;/script&gt;" in page
    d["principles"] = "broken"
    hostile.write_text(json.dumps(d))
    with pytest.raises(InputError, match="not an audit"):
        write_report([str(hostile)], tmp_path / "r2.html")


# ---- the real embedded model ---------------------------------------------------------------------


@pytest.mark.slow
def test_audit_on_the_embedded_model(tmp_path, data, capsys):
    out = tmp_path / "real.json"
    assert main(["audit", str(data), "--backend", "transformers", "--principles", str(tmp_path / "p.yaml"),
                 "--limit", "3", "--out", str(out), "--quiet"]) == 0
    printed = capsys.readouterr().out
    saved = json.loads(out.read_text())
    assert saved["pairs"] == 3 and len(saved["principles"]) == 3
    assert all(0 < p["mean_p_chosen"] < 1 for p in saved["principles"]) and "n = 3: too few to read" in printed
    assert main(["report", str(out), "--out", str(tmp_path / "r.html")]) == 0
    assert "Constitution audit" in (tmp_path / "r.html").read_text()
