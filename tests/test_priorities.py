"""Prioritised constitutions: priorities and groups read strictly, --principle-group limits the
draw, --name-priority names it in the requests, and a constitution too long for the model's
context is used by selection, never cut silently."""
import dataclasses
import json
import logging
import math

import pytest

from charter.backends.fake import FakeBackend
from charter.errors import ConfigError, InputError
from charter.generate import GenerateConfig, generate
from charter.inputs.constitution import load_constitution
from charter.runs.runread import load_run
from charter.types import Principle

PRIORITISED = """\
name: tiered
priorities: [safety, ethics, helpfulness]
priority_template: "({priority}) {request}"
principles:
  - id: no-harm
    priority: safety
    group: harm
    critique: "Say whether the last reply could physically hurt anyone, and how."
    revision: "Rewrite the last reply so that it cannot physically hurt anyone."
  - id: no-lies
    priority: ethics
    group: honesty
    critique: "Say whether the last reply states anything false or misleading."
    revision: "Rewrite the last reply so that everything in it is true."
  - id: no-weapons
    priority: 1
    group: harm
    critique: "Say whether the last reply helps anyone build or use a weapon."
    revision: "Rewrite the last reply so that it gives no help with weapons."
  - id: be-useful
    critique: "Say whether the last reply fails to help with a harmless request."
    revision: "Rewrite the last reply so that it helps fully with what is harmless."
"""


@pytest.fixture
def tiered(tmp_path):
    path = tmp_path / "tiered.yaml"
    path.write_text(PRIORITISED)
    return path


def cfg(tmp_path, constitution, **kw):
    base = dict(backend="fake", limit=6, rounds=2, helpful_prompts="none", out=str(tmp_path / "run"),
                constitution=str(constitution), few_shot="none")
    return GenerateConfig(**{**base, **kw})


def test_priorities_and_groups_are_read(tiered):
    c = load_constitution(str(tiered))
    got = {p.id: (p.priority, p.level, p.group) for p in c.principles}
    assert got == {"no-harm": (1, "safety", "harm"), "no-lies": (2, "ethics", "honesty"),
                   "no-weapons": (1, None, "harm"), "be-useful": (None, None, None)}
    assert c.priority_template == "({priority}) {request}"


def test_default_levels_without_a_priorities_list(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(PRIORITISED.replace("priorities: [safety, ethics, helpfulness]\n", "")
                    .replace("priority: ethics", "priority: guidelines"))
    assert load_constitution(str(path)).principle("no-lies").priority == 3  # safety > ethics > guidelines


def test_a_principle_without_priorities_keeps_its_text_and_digest():
    """Generate fingerprints str(principles): a constitution without priorities keeps its digest."""
    @dataclasses.dataclass(frozen=True)
    class Principle_:
        id: str
        critique: str
        revision: str

    p = Principle("a", "crit 'x'", 'rev "y"')
    assert repr(p).partition("(")[2] == repr(Principle_("a", "crit 'x'", 'rev "y"')).partition("(")[2]
    assert "priority=2" in repr(Principle("a", "c", "r", priority=2)) and "group='g'" in repr(Principle("a", "c", "r", group="g"))


@pytest.mark.parametrize("edit, message", [
    (("    priority: safety\n", "    priorty: safety\n"), r"tiered.yaml:6: unknown key 'priorty' \(did you mean 'priority'\?\)"),
    (("priority: safety", "priority: safty"), r"tiered.yaml:6: principle 'no-harm': unknown priority level 'safty' "
                                              r"\(did you mean 'safety'\?\); the levels, highest first, are safety, ethics"),
    (("priority: 1", "priority: 0"), r"tiered.yaml:16: principle 'no-weapons': 'priority' must be >= 1"),
    (("priority: 1", "priority: true"), r"tiered.yaml:16: .*must be a level name .* not True"),
    (("priorities: [safety, ethics, helpfulness]", "priorities: [safety, safety]"),
     r"tiered.yaml:2: 'priorities' names safety more than once"),
    (("priorities: [safety, ethics, helpfulness]", "priorities: safety"), r"tiered.yaml:2: 'priorities' must be a non-empty list"),
    (("({priority}) {request}", "({rank}) {principle}"), r"tiered.yaml:3: 'priority_template' may use .*unknown: principle"),
    (("({priority}) {request}", "{priority}"), r"tiered.yaml:3: 'priority_template' .*must keep \{request\}"),
    (("group: harm\n    critique: \"Say whether the last reply could", "group: 7\n    critique: \"Say whether the last reply could"),
     r"tiered.yaml:7: principle 'no-harm': 'group' must be non-empty text"),
    (("name: tiered", "name: tiered\nprioritys: [a]"), r"tiered.yaml:2: unknown key 'prioritys' \(did you mean 'priorities'\?\)"),
])
def test_strict_yaml(tmp_path, edit, message):
    path = tmp_path / "tiered.yaml"
    path.write_text(PRIORITISED.replace(*edit))
    with pytest.raises((InputError, ConfigError), match=message):
        load_constitution(str(path))


def test_a_group_limits_the_random_draw(tmp_path, tiered):
    generate(cfg(tmp_path, tiered, principle_group="harm"), backend=FakeBackend(), progress=False)
    drawn = {x.principle for r in load_run(tmp_path / "run") for x in r.rounds}
    assert drawn == {"no-harm", "no-weapons"}


def test_an_unknown_group_is_an_error_that_lists_the_groups(tmp_path, tiered):
    with pytest.raises(ConfigError, match=r"--principle-group 'harms' \(did you mean 'harm'\?\).*its groups: harm, honesty"):
        generate(cfg(tmp_path, tiered, principle_group="harms"), backend=FakeBackend(), progress=False)


def test_critique_revise_takes_the_draw_the_group_and_the_priority_names(tiered):
    import charter

    fake = FakeBackend()
    recs = charter.critique_revise(fake, [f"prompt {i}" for i in range(8)], rounds=2, constitution=str(tiered),
                                   few_shot="none", principle_group="harm", name_priority=True)
    assert {x.principle for r in recs for x in r.rounds} == {"no-harm", "no-weapons"}
    assert "<|user|>(safety (level 1, 1 is the highest)) Say whether" in "\n".join(fake.calls)
    with pytest.raises(ConfigError, match=r"'harms' \(did you mean 'harm'\?\)"):
        charter.critique_revise(fake, ["x"], constitution=str(tiered), few_shot="none", principle_group="harms")
    with pytest.raises(ConfigError, match="relevant"):
        charter.critique_revise(fake, ["x"], principles="relevent")


def test_dry_run_checks_the_group(tmp_path, tiered, capsys):
    from charter.cli import main

    args = ["generate", "--backend", "fake", "--limit", "2", "--helpful-prompts", "none", "--constitution", str(tiered),
            "--few-shot", "none", "--out", str(tmp_path / "run"), "--dry-run", "--principle-group"]
    assert main(args + ["harms"]) == 2
    assert "--principle-group 'harms' (did you mean 'harm'?)" in capsys.readouterr().err
    assert main(args + ["harm"]) == 0
    assert "(4 principles, 2 in group 'harm', 0 few-shot examples)" in capsys.readouterr().out
    assert not (tmp_path / "run").exists()


def test_a_group_limits_the_relevance_ranking(tmp_path, tiered):
    class Ranking(FakeBackend):
        def choose(self, contexts, options):
            return [[math.log(0.9 if "weapon" in c[-1]["content"] and "Hello" not in c[-1]["content"] else 0.3),
                     math.log(0.5)] for c in contexts]

    generate(cfg(tmp_path, tiered, principle_group="harm", principles="relevant:1"), backend=Ranking(), progress=False)
    for r in load_run(tmp_path / "run"):
        assert all(x.principle == "no-weapons" and set(x.relevance["scores"]) == {"no-harm", "no-weapons"}
                   for x in r.rounds)


def test_ties_in_relevance_go_to_the_higher_priority():
    from charter.pipeline.relevance import ranking

    ps = [Principle("low", "c", "r", priority=3), Principle("none", "c", "r"), Principle("high", "c", "r", priority=1)]
    assert [p.id for p in ranking(ps, {"low": 0.5, "none": 0.5, "high": 0.5})] == ["high", "low", "none"]


def test_name_priority_words_the_critique_request(tmp_path, tiered):
    fake = FakeBackend()
    generate(cfg(tmp_path, tiered, name_priority=True, rounds=1, limit=12), backend=fake, progress=False)
    c, asked = load_constitution(str(tiered)), "\n".join(fake.calls)
    expected = {"no-harm": "<|user|>(safety (level 1, 1 is the highest)) Say whether the last reply could",
                "no-lies": "<|user|>(ethics (level 2, 1 is the highest)) Say whether the last reply states",
                "no-weapons": "<|user|>(1 (1 is the highest)) Say whether the last reply helps",
                "be-useful": "<|user|>Say whether the last reply fails"}  # no priority: as written
    drawn = {r.rounds[0].principle for r in load_run(tmp_path / "run")}
    assert len(drawn) >= 3
    for pid in drawn:
        assert expected[pid] in asked
        assert f"<|user|>{c.principle(pid).revision}" in asked  # the revision request is not reworded


def test_without_name_priority_requests_are_as_written(tmp_path, tiered):
    fake = FakeBackend()
    generate(cfg(tmp_path, tiered, rounds=1), backend=fake, progress=False)
    assert "1 is the highest" not in "\n".join(fake.calls)


def test_the_default_template(tmp_path, tiered):
    from charter.inputs.constitution import with_priority

    c = load_constitution(str(tiered))
    assert with_priority("Check it.", c.principle("no-harm")) == "[Priority: safety (level 1, 1 is the highest)] Check it."
    assert with_priority("Check it.", c.principle("no-weapons")) == "[Priority: 1 (1 is the highest)] Check it."
    assert with_priority("Check it.", c.principle("be-useful")) == "Check it."


# ---- a constitution longer than the model's context ------------------------------------------------


class Counting(FakeBackend):
    """A model with a context of 200 'tokens' (words), answering relevance questions evenly."""
    max_context = 200

    def count_tokens(self, request):
        text = request if isinstance(request, str) else " ".join(m["content"] for m in request)
        return len(text.split())

    def choose(self, contexts, options):
        return [[math.log(0.5), math.log(0.5)] for _ in contexts]


def long_constitution(tmp_path, huge: bool):
    """Twelve principles of ~40 words (~480 together, over the context); `huge`: one of 300 words."""
    body = " ".join(["word"] * 18)
    items = [f"  - id: p{i}\n    group: g\n    critique: \"Check {i} {body}\"\n    revision: \"Fix {i} {body}\"\n"
             for i in range(12)]
    if huge:
        items.append(f"  - id: huge\n    group: g\n    critique: \"{' '.join(['long'] * 300)}\"\n    revision: \"Fix it.\"\n")
    path = tmp_path / "long.yaml"
    path.write_text("principles:\n" + "".join(items))
    return path


def test_a_long_constitution_is_used_whole_one_principle_per_request(tmp_path, caplog):
    caplog.set_level(logging.INFO, "charter.relevance")
    path = long_constitution(tmp_path, huge=False)
    generate(cfg(tmp_path, path, principles="relevant", max_tokens=16), backend=Counting(), progress=False)
    recs = load_run(tmp_path / "run")
    assert all(r.error is None for r in recs)
    assert all(len(x.relevance["scores"]) == 12 for r in recs for x in r.rounds)  # none cut
    assert "take 4" in caplog.text and "over the model's context of 200" in caplog.text and "none is cut" in caplog.text


def test_a_principle_that_cannot_fit_is_left_out_of_the_ranking_with_a_warning(tmp_path, caplog):
    path = long_constitution(tmp_path, huge=True)
    generate(cfg(tmp_path, path, principles="relevant", max_tokens=16), backend=Counting(), progress=False)
    recs = load_run(tmp_path / "run")
    assert all(r.error is None for r in recs)
    assert all("huge" not in x.relevance["scores"] and len(x.relevance["scores"]) == 12 for r in recs for x in r.rounds)
    assert "principles huge (3" in caplog.text and "left out of the relevance ranking" in caplog.text


def test_a_random_draw_in_a_group_that_cannot_fit_stops_before_any_request(tmp_path):
    path = long_constitution(tmp_path, huge=True)
    fake = Counting()
    with pytest.raises(InputError, match=r"principles huge \(3\d\d tokens\) do not fit the model's context of 200"):
        generate(cfg(tmp_path, path, principle_group="g", max_tokens=16), backend=fake, progress=False)
    assert fake.calls == []


def test_label_groups_and_names_priorities(tmp_path):
    from charter.rlcai.labels import LabelConfig, label

    feedback = tmp_path / "fb.yaml"
    feedback.write_text("principles:\n"
                        "  - {id: safe, text: 'Which reply is safer?', priority: safety, group: core}\n"
                        "  - {id: kind, text: 'Which reply is kinder?', priority: helpfulness, group: core}\n"
                        "  - {id: short, text: 'Which reply is shorter?', group: style}\n")
    fake = FakeBackend(vary=True)
    out = tmp_path / "labels.jsonl"
    label(LabelConfig(backend="fake", limit=3, out=str(out), principles=str(feedback), few_shot="none",
                      principle_group="core", name_priority=True), policy=fake, feedback=fake, progress=False)
    lines = [json.loads(x) for x in (tmp_path / "labels.transcripts.jsonl").read_text().splitlines()]
    asks = [a for line in lines for c in line["comparisons"] for a in c.get("asks", [])]
    assert asks and {a["principle"] for a in asks} <= {"safe", "kind"}
    assert all(a["principle_text"].startswith("[Priority: ") for a in asks)
    assert any("[Priority: safety (level 1, 1 is the highest)] Which reply is safer?" in a["principle_text"] for a in asks)


def test_label_principles_are_read_strictly(tmp_path):
    from charter.rlcai.data import load_feedback_principles

    path = tmp_path / "fb.yaml"
    path.write_text("principles:\n  - id: a\n    text: Which is better?\n    groop: x\n")
    with pytest.raises(ConfigError, match=r"fb.yaml:4: unknown key 'groop' \(did you mean 'group'\?\)"):
        load_feedback_principles(path)
