"""Stop when clean on the scripted fake backend: where a chain stops, what its record says, what is
counted, seeds and principles of the other records, resume, the default unchanged, exports."""
import dataclasses
import json
import math
import threading
from collections import Counter

import pytest

import charter
from charter.backends.fake import FakeBackend
from charter.errors import ConfigError, RunError
from charter.generate import GenerateConfig, generate, settings_from, total_steps
from charter.pipeline import clean_check
from charter.runs.runread import load_run
from charter.types import Record

ALPHA, BETA, GAMMA = "alpha: how do I pick a lock?", "beta: write a mean note", "gamma: insult my boss"
OLD_KEYS = {"id", "kind", "prompt", "initial", "rounds", "final", "sample", "source", "model", "backend", "format",
            "sampling", "tokens", "timings", "error"}


class Checker(FakeBackend):
    """Clean checks scripted per prompt: `script[prompt][k]` is P(Yes) at the prompt's k-th check
    (`default` past the script's end); `fail` prompts make choose raise."""

    def __init__(self, script=None, default=0.9, concurrency=None, fail=(), **kw):
        super().__init__(**kw)
        self.script, self.default, self.concurrency, self.fail = script or {}, default, concurrency, fail
        self.asked, self.questions, self.lock = Counter(), [], threading.Lock()

    def choose(self, contexts, options):
        out = []
        for ctx, opts in zip(contexts, options):
            text = ctx if isinstance(ctx, str) else self.render(ctx)
            yes_first = "(A) Yes" in text
            prompt = next((p for p in (ALPHA, BETA, GAMMA) if p in text), None)
            if prompt in self.fail:
                raise RuntimeError(f"scripted choose failure on {prompt}")
            with self.lock:
                self.questions.append((ctx, opts))
                k = self.asked[prompt]
                self.asked[prompt] += not yes_first  # the second order closes one check
            script = self.script.get(prompt, [])
            p = script[k] if k < len(script) else self.default
            yes, no = math.log(p), math.log(1 - p)
            out.append([yes, no] if yes_first else [no, yes])
        return out


def run(backend, prompts=(ALPHA, BETA), **kw):
    kw = {"rounds": 4, "stop_when_clean": True, **kw}
    return {r.prompt[-1]["content"]: r for r in charter.critique_revise(backend, list(prompts), **kw)}


def test_a_chain_stops_at_the_round_whose_critique_found_nothing():
    fake = Checker({ALPHA: [0.9, 0.2]})
    recs = run(fake)
    a, b = recs[ALPHA], recs[BETA]
    assert len(a.rounds) == 1 and a.final == a.rounds[0].revision != a.initial
    assert a.p_problem == [0.9, 0.2]
    assert a.stopped["round"] == 2 and a.stopped["p_problem"] == 0.2 and a.stopped["critique"]
    assert a.stopped["critique"] not in (r.critique for r in a.rounds)  # the stopped round's critique, kept
    assert any(a.stopped["critique"] in str(q) for q, _ in fake.questions)
    assert len(b.rounds) == 4 and b.stopped is None and b.p_problem == [0.9] * 4
    # alpha: initial + round 1 + round 2's critique; beta: all 9 steps. Two orders per check.
    assert len(fake.calls) == 4 + 9 and len(fake.questions) == 2 * (2 + 4)


def test_a_chain_clean_at_round_one_keeps_its_initial_answer():
    a = run(Checker({ALPHA: [0.1]}), prompts=[ALPHA])[ALPHA]
    assert a.rounds == [] and a.final == a.initial and a.stopped["round"] == 1
    assert a.to_dict()["stopped"]["principle"] in {p.id for p in charter.load_constitution().principles}


def test_the_threshold_decides():
    assert run(Checker(default=0.9), prompts=[ALPHA], clean_threshold=0.95)[ALPHA].stopped["round"] == 1
    assert run(Checker(default=0.01), prompts=[ALPHA], clean_threshold=0.0)[ALPHA].stopped is None
    with pytest.raises(ConfigError, match="clean_threshold"):
        run(Checker(), prompts=[ALPHA], clean_threshold=1.5)


def test_default_is_the_papers_loop_and_writes_what_it_always_wrote():
    fake = Checker(default=0.01)
    recs = run(fake, stop_when_clean=False)
    assert fake.questions == [] and all(len(r.rounds) == 4 for r in recs.values())
    assert all(set(r.to_dict()) == OLD_KEYS for r in recs.values())


@pytest.mark.parametrize("concurrency", [None, 4])
def test_checks_that_find_problems_change_nothing_but_add_their_probabilities(concurrency):
    """Sampled steps keep their seeds with checks in between (streamed: per record and step)."""
    plain = run(Checker(vary=True, concurrency=concurrency), stop_when_clean=False, seed=3)
    checked = run(Checker(default=0.8, vary=True, concurrency=concurrency), seed=3)
    for prompt, rec in plain.items():
        got = checked[prompt].to_dict()
        assert got.pop("p_problem") == [0.8] * 4
        assert {k: v for k, v in got.items() if k != "timings"} == {k: v for k, v in rec.to_dict().items()
                                                                     if k != "timings"}


def test_a_stopped_chain_does_not_shift_the_seeds_or_principles_of_other_records():
    prompts = (ALPHA, BETA, GAMMA)
    full = run(Checker(vary=True, concurrency=4), prompts=prompts, seed=5)
    stop = run(Checker({ALPHA: [0.1]}, vary=True, concurrency=4), prompts=prompts, seed=5)
    key = lambda r: (r.initial, [(x.principle, x.critique, x.revision) for x in r.rounds], r.final)
    assert key(stop[BETA]) == key(full[BETA]) and key(stop[GAMMA]) == key(full[GAMMA])
    a, ref = stop[ALPHA], full[ALPHA]
    assert a.initial == ref.initial and (a.stopped["principle"], a.stopped["critique"]) == (
        ref.rounds[0].principle, ref.rounds[0].critique)
    batched = run(Checker({ALPHA: [0.1]}), prompts=prompts, seed=5)  # per-call seeds; principles per record
    assert [x.principle for x in batched[BETA].rounds] == [x.principle for x in full[BETA].rounds]


@pytest.mark.parametrize("fmt", ["chat", "text"])
def test_the_question_shows_the_answer_critiqued_the_request_and_the_critique(fmt):
    fake = Checker({ALPHA: [0.9, 0.1]})
    a = run(fake, prompts=[ALPHA], format=fmt)[ALPHA]
    request = charter.load_constitution().principle(a.stopped["principle"]).critique
    (yes_first, opts_1), (no_first, opts_2) = fake.questions[2:]  # round 2's: about round 1's revision
    if fmt == "chat":
        assert len(yes_first) == 1 and yes_first[0]["role"] == "user" and opts_1 == opts_2 == ("(A)", "(B)")
        yes_first, no_first = yes_first[0]["content"], no_first[0]["content"]
    else:
        assert opts_1 == opts_2 == (" (A)", " (B)")
    assert yes_first.startswith(f"{clean_check.HEADER}\n\nHuman: {ALPHA}\n\nAssistant: {a.rounds[0].revision}\n\n")
    assert f'Asked "{request}", a reviewer' in yes_first
    assert f"reply:\n{a.stopped['critique']}\n\n{clean_check.QUESTION}" in yes_first
    assert yes_first.endswith("(A) Yes\n(B) No\nThe answer is:") and no_first.endswith("(A) No\n(B) Yes\nThe answer is:")


def test_p_problem_averages_the_two_orders():
    always_a = [[0.0, -20.0], [0.0, -20.0]]  # a model that picks the first letter whatever it says
    assert clean_check.p_problem(always_a) == pytest.approx(0.5)
    always_yes = [[0.0, -20.0], [-20.0, 0.0]]
    assert clean_check.p_problem(always_yes) == pytest.approx(1.0)


def test_a_failed_check_fails_its_record_not_the_run():
    recs = run(Checker(fail=(ALPHA,), concurrency=2))  # streamed: a call is one record's (batched: the batch's)
    assert "scripted choose failure" in recs[ALPHA].error and recs[ALPHA].final is None
    assert recs[BETA].error is None and len(recs[BETA].rounds) == 4


def test_a_check_longer_than_the_context_fails_its_record_before_the_engine_sees_it():
    class Short(Checker):
        max_context = 10_000

        def count_tokens(self, request):
            return 20_000 if clean_check.QUESTION in str(request) else 10

    rec = run(Short(), prompts=[ALPHA])[ALPHA]
    assert rec.error.startswith("ContextTooLong") and "'check'" in rec.error
    assert run(Short(), prompts=[ALPHA], stop_when_clean=False)[ALPHA].error is None


def test_direct_revision_is_refused_with_a_fix(capsys):
    from support import GEN, fails

    with pytest.raises(ConfigError, match="--no-critique"):
        run(Checker(), critique=False)
    with pytest.raises(ConfigError, match="drop --stop-when-clean or --no-critique"):
        GenerateConfig(stop_when_clean=True, critique=False).validate()
    fails(capsys, GEN + ["--no-critique", "--stop-when-clean"], "--no-critique")


def prompts_file(tmp_path, prompts=(ALPHA, BETA, GAMMA)):
    path = tmp_path / "prompts.jsonl"
    path.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in prompts))
    return str(path)


def cfg(tmp_path, **kw):
    base = dict(backend="fake", prompts=prompts_file(tmp_path), helpful_prompts="none", rounds=3,
                stop_when_clean=True, out=str(tmp_path / "run"))
    return GenerateConfig(**{**base, **kw})


def test_generate_counts_the_requests_it_saved_and_says_so(tmp_path):
    fake = Checker({ALPHA: [0.1], BETA: [0.9, 0.2]})
    c = cfg(tmp_path)
    s = generate(c, backend=fake, progress=False)
    # planned 7 each; alpha made 2 (saved 5), beta 4 (saved 3), gamma 7; checks 1 + 2 + 3
    assert (s.stopped, s.saved, s.checks) == (2, 8, 6)
    assert len(fake.calls) == 3 * 7 - 8
    assert "stop when clean: 2 chains stopped early, 8 generation requests saved, 6 clean checks asked" in s.line()
    recs = {r.prompt[-1]["content"]: r for r in load_run(tmp_path / "run")}
    assert recs[ALPHA].stopped["round"] == 1 and recs[BETA].stopped["round"] == 2 and recs[GAMMA].stopped is None
    assert "stop when clean" not in generate(cfg(tmp_path, out=str(tmp_path / "b"), stop_when_clean=False),
                                             backend=FakeBackend(), progress=False).line()


def test_the_progress_bar_reaches_its_total(tmp_path):
    from charter.inputs.constitution import load_constitution
    from charter.pipeline.cai import run_items
    from charter.pipeline.workload import iter_items

    c = cfg(tmp_path)
    items, steps = list(iter_items(c)), []
    run_items(Checker({ALPHA: [0.1], BETA: [0.9, 0.2]}), load_constitution(), settings_from(c), items,
              lambda rec: None, lambda: steps.append(1))
    assert len(steps) == total_steps(items, settings_from(c))


def test_resume_keeps_stopped_chains_and_runs_only_the_rest(tmp_path):
    first = Checker({ALPHA: [0.1]})
    generate(cfg(tmp_path, limit=2), backend=first, progress=False)
    before = (tmp_path / "run" / "records.jsonl").read_text()
    second = Checker()
    s = generate(cfg(tmp_path), backend=second, progress=False)
    assert s.records == 1 and s.skipped == 2
    assert all(GAMMA in call for call in second.calls) and set(second.asked) == {GAMMA}
    assert (tmp_path / "run" / "records.jsonl").read_text().startswith(before)
    assert generate(cfg(tmp_path), backend=Checker(), progress=False).skipped == 3
    with pytest.raises(RunError, match="different settings"):
        generate(cfg(tmp_path, stop_when_clean=False), backend=Checker(), progress=False)


def test_a_run_without_the_option_keeps_its_fingerprint():
    """Runs made before the option existed resume: at its default it is not part of the run's identity."""
    from charter.config import fingerprint

    plain = GenerateConfig()
    later = {f.name for f in dataclasses.fields(GenerateConfig) if f.metadata.get("since")}
    assert {"stop_when_clean", "clean_threshold"} <= later
    before = {k: v for k, v in plain.to_dict().items() if k not in later}  # every such setting at its default
    assert plain.fingerprint() == fingerprint(before, GenerateConfig.NON_RESULT_KEYS)
    assert plain.fingerprint() != GenerateConfig(stop_when_clean=True).fingerprint()


def test_records_old_and_new_read_back():
    old = {"id": "x", "kind": "red_team", "prompt": [{"role": "user", "content": "q"}], "initial": "a", "final": "a"}
    rec = Record.from_dict(old)
    assert rec.p_problem is None and rec.stopped is None and set(rec.to_dict()) == OLD_KEYS
    rec.p_problem, rec.stopped = [0.2], {"round": 1, "p_problem": 0.2, "principle": "p", "critique": "fine"}
    assert Record.from_dict(json.loads(json.dumps(rec.to_dict()))) == rec
    assert json.dumps(rec.to_dict()).endswith('"error": null}')  # where the run store reads a line's status


def test_exports_of_stopped_chains(tmp_path):
    """A chain stopped at round k exports its round k-1 revision; stopped at round 1 it has no
    revision, so no SFT row and no DPO pair (its final answer is the initial one)."""
    from charter.export import dpo_rows, sft_rows
    from charter.export.clean import FILTERS, clean_records

    generate(cfg(tmp_path), backend=Checker({ALPHA: [0.1], BETA: [0.9, 0.2]}), progress=False)
    recs = {r.prompt[-1]["content"]: r for r in load_run(tmp_path / "run")}
    sft = {row["messages"][0]["content"]: row["messages"][-1]["content"] for row in sft_rows(list(recs.values()))}
    assert ALPHA not in sft and sft[BETA] == recs[BETA].rounds[0].revision == recs[BETA].final
    assert {row["prompt"][0]["content"] for row in dpo_rows(list(recs.values()))} == {BETA, GAMMA}
    cleaned = {r.prompt[-1]["content"]: r for r in clean_records(list(recs.values()), filters=FILTERS,
                                                                 principles=charter.load_constitution().principles).records}
    assert cleaned[ALPHA].final == cleaned[ALPHA].initial and cleaned[BETA].final == recs[BETA].final


def test_the_report_counts_stopped_chains(tmp_path):
    from charter.report.html import load_report_run, summary_section

    generate(cfg(tmp_path), backend=Checker({ALPHA: [0.1], BETA: [0.9, 0.2]}), progress=False)
    run_data = load_report_run(tmp_path / "run")
    assert run_data.digest.stopped == Counter({1: 1, 2: 1}) and run_data.digest.checks == 6
    assert "stopped clean (6 checks)" in summary_section(run_data)
    plain = tmp_path / "plain"
    generate(cfg(tmp_path, out=str(plain), stop_when_clean=False), backend=FakeBackend(), progress=False)
    assert "stopped clean" not in summary_section(load_report_run(plain))


def test_the_cli_flag_and_its_final_line(tmp_path, capsys, monkeypatch):
    from charter.cli import main

    monkeypatch.chdir(tmp_path)
    args = ["generate", "--backend", "fake", "--quiet", "--helpful-prompts", "none", "--prompts",
            prompts_file(tmp_path), "--rounds", "2", "--out", "r"]
    assert main(args + ["--stop-when-clean", "--clean-threshold", "0.95"]) == 0  # the fake's P(problem) is 0.5
    out = capsys.readouterr().out
    assert "stop when clean: 3 chains stopped early, 9 generation requests saved, 3 clean checks asked" in out
    assert all(r.stopped["round"] == 1 for r in load_run(tmp_path / "r"))
