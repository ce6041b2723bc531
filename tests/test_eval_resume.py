"""`charter eval` on the scheduler: finished requests saved as they come (a killed eval resumes
without asking them again), streaming and batched engines give one result, and the typed result
round-trips eval.json through its one reader."""
import json
import os
import socket

import pytest

from charter.backends.fake import FakeBackend
from charter.errors import InputError, RunError
from charter.evaluate.result import EvalResult, read_eval
from charter.evaluate.suite import EvalConfig, evaluate_records
from charter.types import Record, Round, Score


def record(i, kind="red_team"):
    rounds = [Round("harm", "crit", f"revision {k} of {i}" + " good" * k) for k in (1, 2)] if kind == "red_team" else []
    return Record(id=f"r{i}", kind=kind, prompt=[{"role": "user", "content": f"request {i}"}],
                  initial=f"initial answer {i}", rounds=rounds, final=rounds[-1].revision if rounds else None)


RECORDS = [record(i) for i in range(4)] + [record(8, "helpful"), record(9, "helpful")]


class Counting(FakeBackend):
    """Counts every request (answers, scored continuations, choices); raises KeyboardInterrupt
    once `die_after` requests have been answered (a kill mid-eval); `concurrency` picks the driver."""

    def __init__(self, model, concurrency=None, die_after=None):
        good = "good" in model
        super().__init__(model, responder=lambda p: "good good answer" if good else "I'm sorry, I can't.")
        self.concurrency, self.die_after, self.asked = concurrency, die_after, []

    def _count(self, items):
        if self.die_after is not None and len(self.asked) + len(items) > self.die_after:
            raise KeyboardInterrupt
        self.asked += [str(x) for x in items]

    def chat(self, convos, sampling):
        self._count(convos)
        return super().chat(convos, sampling)

    def score(self, contexts, continuations):
        self._count(continuations)
        return [Score(-float(len(c) + len(str(x)) % 5), 1) for x, c in zip(contexts, continuations)]

    def choose(self, contexts, options):
        self._count(contexts)
        return [[-1.0 - str(c).count("good") * (i == 0) for i in range(len(o))] for c, o in zip(contexts, options)]


def opener(made, engines=None):
    """Opens Counting backends into `made` (spec -> backend); `engines`: spec (or "all") -> its options."""
    engines = engines or {}

    def factory(spec):
        made[spec] = Counting(spec, **engines.get(spec, engines.get("all", {})))
        return made[spec]
    return factory


def run(out, made=None, models=("good", "bad"), judge="judge", engines=None, **settings):
    cfg = EvalConfig(run=str(out), models=list(models), judge=judge, bootstrap=10, judge_evasive=True,
                     over_refusal=True, over_refusal_limit=5, **settings)
    return evaluate_records(cfg, RECORDS, [], factory=opener({} if made is None else made, engines), log=lambda m: None)


def comparable(result: EvalResult) -> dict:
    """The result without what names the output folder or the time."""
    d = result.to_dict()
    d.pop("created"), d.pop("run")
    d["revisions"] = [{k: v for k, v in r.items() if k not in ("run", "label")} for r in d.get("revisions", [])]
    return d


def test_a_killed_eval_resumes_without_asking_again(tmp_path):
    whole = {}
    reference = run(tmp_path / "whole", whole)
    asked = {spec: len(b.asked) for spec, b in whole.items()}
    made = {}
    with pytest.raises(KeyboardInterrupt):  # killed in the judge's stage, after 7 of its requests
        run(tmp_path / "killed", made, engines={"judge": {"concurrency": 1, "die_after": 7}})
    assert len(made["judge"].asked) == 7
    again = {}
    result = run(tmp_path / "killed", again)
    assert set(again) == {"judge"}  # the models' work was all saved: neither is even loaded
    assert len(again["judge"].asked) == asked["judge"] - 7  # the judge is asked only what it had not answered
    assert comparable(result) == comparable(reference)
    done = {}
    assert comparable(run(tmp_path / "killed", done)) == comparable(reference) and done == {}  # finished: no model


def test_a_kill_inside_a_models_stage_keeps_its_finished_answers(tmp_path):
    whole, made, again = {}, {}, {}
    run(tmp_path / "whole", whole, judge=None)
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path, made, judge=None, engines={"bad": {"concurrency": 1, "die_after": 7}})
    answered = len(made["bad"].asked)
    assert 0 < answered <= 7
    run(tmp_path, again, judge=None)
    assert set(again) == {"bad"}  # "good" finished before the kill
    assert len(again["bad"].asked) == len(whole["bad"].asked) - answered


@pytest.mark.parametrize("concurrency", [1, 4])
def test_streaming_and_batched_engines_give_one_result(tmp_path, concurrency):
    batched = run(tmp_path / "batched")
    streamed = run(tmp_path / "streamed", engines={"all": {"concurrency": concurrency}})
    assert comparable(streamed) == comparable(batched)


def test_adding_a_model_keeps_the_others_work_and_other_sampling_starts_over(tmp_path, caplog):
    run(tmp_path, models=("good", "bad"), judge=None)
    more = {}
    run(tmp_path, more, models=("good", "bad", "good too"), judge=None)
    assert set(more) == {"good too"}
    hotter = {}
    run(tmp_path, hotter, models=("good", "bad"), judge=None, temperature=1.0)
    assert set(hotter) == {"good", "bad"} and "starting over" in caplog.text
    lines = (tmp_path / "eval.json.parts" / "parts.jsonl").read_text().splitlines()
    assert len(lines) == len({json.loads(x)["id"] for x in lines})  # the old parts went


def test_failed_requests_fail_the_eval_and_are_the_only_ones_retried(tmp_path):
    made = {}

    def flaky(spec):
        made[spec] = Counting(spec, concurrency=2)  # streamed: a failure fails its own request only
        made[spec].fail_on = "request 2" if spec == "bad" else None
        return made[spec]

    cfg = EvalConfig(run=str(tmp_path), models=["good", "bad"], bootstrap=5)
    with pytest.raises(RunError, match=r"1 of \d+ evaluation requests failed .*request 2.*run the same command again"):
        evaluate_records(cfg, RECORDS, [], factory=flaky, log=lambda m: None)
    again = {}
    evaluate_records(cfg, RECORDS, [], factory=opener(again), log=lambda m: None)
    assert set(again) == {"bad"} and len(again["bad"].asked) == 1 and "request 2" in again["bad"].asked[0]


def test_a_second_eval_on_the_same_output_is_refused_while_one_runs(tmp_path):
    parts = tmp_path / "eval.json.parts"
    parts.mkdir()
    holder = {"pid": os.getppid(), "host": socket.gethostname(), "started": "now"}  # a live process
    (parts / "run.lock").write_text(json.dumps(holder))
    with pytest.raises(RunError, match="is in use by process"):
        run(tmp_path)


def test_the_typed_result_round_trips_eval_json(tmp_path):
    result = run(tmp_path)
    assert read_eval(tmp_path / "eval.json") == result
    assert result.elo["harmless"]["comparisons"] == 4 and result.over_refusal["n"] == 5
    saved = json.loads((tmp_path / "eval.json").read_text())
    for broken, message in [({**saved, "records": "4"}, "records should be an integer"),
                            ({**saved, "elo": {"harmless": {"players": {}}}}, r"elo.harmless.comparisons is missing"),
                            ({**saved, "extra": 1}, "unknown key 'extra'"),
                            ({k: v for k, v in saved.items() if k != "schema"}, "not an evaluation made by")]:
        (tmp_path / "bad.json").write_text(json.dumps(broken))
        with pytest.raises(InputError, match=message):
            read_eval(tmp_path / "bad.json")


def test_a_resumed_eval_reads_the_pm_scores_back_and_a_changed_pm_scores_again(tmp_path, monkeypatch):
    from charter.evaluate import suite

    calls = []
    monkeypatch.setattr(suite, "score_with_pm",
                        lambda pm, runs, bootstrap, seed: calls.append(pm) or {"mean": float(len(calls))})
    pm = tmp_path / "pm"
    pm.mkdir()
    (pm / "model.safetensors").write_text("v1")
    cfg = EvalConfig(run=str(tmp_path / "run"), pm=str(pm), out=str(tmp_path / "eval.json"))
    first = evaluate_records(cfg, RECORDS, extra_runs=[], factory=opener({}))
    again = evaluate_records(cfg, RECORDS, extra_runs=[], factory=opener({}))
    assert len(calls) == 1 and first.pm == again.pm == {"mean": 1.0}
    (pm / "model.safetensors").write_text("v2, retrained")  # another PM in the same directory
    assert evaluate_records(cfg, RECORDS, extra_runs=[], factory=opener({})).pm == {"mean": 2.0}
