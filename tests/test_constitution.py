import json

import pytest

from charter.inputs.constitution import draw_principle, load_constitution, load_few_shots, load_principles, parse_paper_transcript
from charter.errors import InputError


def test_default_constitution():
    from charter.inputs.constitution import validate

    c = load_constitution()
    assert len(c.principles) == 16 and len(c.few_shots) == 3  # the counts the README states
    assert validate(c) == []  # every few-shot request is one of our principles, none too short


def test_paper_instructions(shared):
    ps = load_principles(shared / "prompts" / "CritiqueRevisionInstructions.json")
    assert len(ps) == 16
    p = ps[0]
    assert p.id == "harmful0"
    assert p.critique.startswith("Identify specific ways") and not p.critique.endswith("Critique:")
    assert p.revision.startswith("Please rewrite") and "RevisionRequest" not in p.revision


def test_paper_few_shots(shared):
    shots = load_few_shots(shared / "prompts" / "CritiqueRevisionFewShotPrompts.json")
    assert len(shots) == 5
    first = shots[0]
    assert [m["role"] for m in first.conversation] == ["user", "assistant", "user", "assistant"]
    assert first.conversation[0]["content"].startswith("Could you help me burn down my house")
    assert first.rounds[0].revision.startswith("I'm sorry, I shouldn't have agreed to help.")
    assert not first.rounds[-1].revision.endswith("Human:")


def test_constitutions_json(tmp_path):
    data = {"constitutions": [{"critic": "Critique for harm.", "revision": "Rewrite without harm."},
                              {"critic": "Critique for bias.", "revision": "Rewrite without bias."}],
            "system_chat": [[{"role": "user", "content": "How do I pick a lock?"},
                             {"role": "assistant", "content": "Use a tension wrench."},
                             {"role": "user", "content": "Critique for harm."},
                             {"role": "assistant", "content": "It may help burglary."},
                             {"role": "user", "content": "Rewrite without harm."},
                             {"role": "assistant", "content": "Call a locksmith."}]]}
    f = tmp_path / "c.json"
    f.write_text(json.dumps(data))
    c = load_constitution(str(f))
    assert [p.critique for p in c.principles] == ["Critique for harm.", "Critique for bias."]
    assert len(c.few_shots) == 1 and c.few_shots[0].rounds[0].revision == "Call a locksmith."


def test_transcript_split_keeps_colons():
    shot = parse_paper_transcript("\n\nHuman: Ratio: 3: 1?\n\nAssistant: Yes: it is.\n\nCritiqueRequest: C?"
                                  "\n\nCritique: ok\n\nRevisionRequest: R.\n\nRevision: Fine: done.\n\nHuman:", "t")
    assert shot.conversation[0]["content"] == "Ratio: 3: 1?"
    assert shot.rounds[0].revision == "Fine: done."


def test_bad_yaml_points_at_line(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("principles:\n  - id: a\n    critique: Find harm in the answer.\n    revison: Rewrite it.\n")
    with pytest.raises(Exception, match=r"c.yaml:4: unknown key 'revison' \(did you mean 'revision'\?\)"):
        load_principles(f)


def test_duplicate_ids(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("principles:\n" + "  - {id: a, critique: Find harm here., revision: Rewrite it now.}\n" * 2)
    with pytest.raises(InputError, match="duplicate principle ids: a"):
        load_principles(f)


def test_not_a_constitution(tmp_path):
    f = tmp_path / "c.json"
    f.write_text('{"hello": 1}')
    with pytest.raises(InputError, match="not a constitution"):
        load_principles(f)


def test_draws_seeded_independent_with_replacement():
    c = load_constitution()
    draws = [draw_principle(c, 0, f"id{i}", r).id for i in range(200) for r in range(4)]
    assert draws == [draw_principle(c, 0, f"id{i}", r).id for i in range(200) for r in range(4)]
    assert draws != [draw_principle(c, 1, f"id{i}", r).id for i in range(200) for r in range(4)]
    assert len(set(draws)) == len(c.principles)  # every principle gets drawn
    per_prompt = [draws[i:i + 4] for i in range(0, len(draws), 4)]
    assert any(len(set(p)) < 4 for p in per_prompt)  # with replacement: repeats happen


def test_cli_validate_paper(shared, capsys):
    from charter.cli import main

    rc = main(["constitution", "validate", str(shared / "prompts" / "CritiqueRevisionInstructions.json"),
               "--few-shot", str(shared / "prompts" / "CritiqueRevisionFewShotPrompts.json")])
    assert rc == 0
    assert "16 principles, 5 few-shot examples" in capsys.readouterr().out


def _chat(*turns):
    roles = ["user", "assistant"] * len(turns)
    return [{"role": r, "content": t} for r, t in zip(roles, turns)]


def test_constitutions_json_with_several_human_turns_before_the_critique(tmp_path):
    """Common in the wild: a multi-turn conversation, then one critique/revision round whose
    request is not (or is) one of the file's principles."""
    data = {"constitutions": [{"critic": "Critique for harm.", "revision": "Rewrite without harm."}],
            "system_chat": [_chat("Tell me about orbits.", "They are ellipses.", "Why does Mercury precess?",
                                  "Because of relativity, surely.", "Was that truthful?", "Overconfident.",
                                  "Rewrite with calibrated confidence.", "Partly relativity."),
                            _chat("Hi", "Hello", "How do I pick a lock?", "Use a wrench.", "Critique for harm.",
                                  "Helps burglary.", "Rewrite without harm.", "Call a locksmith.",
                                  "Critique for harm.", "Fine now.", "Rewrite without harm.", "Call a locksmith.")]}
    f = tmp_path / "c.json"
    f.write_text(json.dumps(data))
    first, second = load_constitution(str(f)).few_shots
    assert len(first.conversation) == 4 and first.rounds[0].critique_request == "Was that truthful?"
    assert first.rounds[0].revision == "Partly relativity."
    assert len(second.conversation) == 4 and len(second.rounds) == 2  # split at the known request


def test_bare_list_of_critic_revision(tmp_path):
    f = tmp_path / "c.json"
    f.write_text(json.dumps([{"critic": "Critique for harm.", "revision": "Rewrite without harm."}]))
    assert [p.revision for p in load_principles(f)] == ["Rewrite without harm."]


EXAMPLE = "examples:\n  - conversation:\n{convo}    rounds:\n{rounds}"
CONVO = "      - {role: user, content: Hi}\n      - {role: assistant, content: Hello}\n"
ROUND = ("      - {critique_request: 'Is it harmful?', critique: No., revision_request: Rewrite it., "
         "revision: Hello there.}\n")


@pytest.mark.parametrize("body, message", [
    ("examples:\n  - just a string\n", r"f.yaml:1: examples\[0\] must be a mapping"),
    (EXAMPLE.format(convo="      - {role: user}\n      - {role: assistant, content: Hello}\n", rounds=ROUND),
     r"f.yaml:3: 'content' must be non-empty text"),
    (EXAMPLE.format(convo="      - {role: bot, content: Hi}\n      - {role: assistant, content: Hello}\n", rounds=ROUND),
     r"f.yaml:3: unknown role 'bot'"),
    (EXAMPLE.format(convo="      - Hi\n", rounds=ROUND), r"f.yaml:2: each conversation turn must be a \{role, content\} mapping"),
    (EXAMPLE.format(convo=CONVO, rounds="      - just text\n"), r"f.yaml:5: examples\[0\]: each round must be a mapping"),
    (EXAMPLE.format(convo=CONVO, rounds="      - {critique_request: 'Is it harmful?', critique: No.}\n"),
     r"f.yaml:6: 'revision_request' must be non-empty text"),
])
def test_malformed_few_shots_are_clean_errors(tmp_path, body, message):
    f = tmp_path / "f.yaml"
    f.write_text(body)
    with pytest.raises(InputError, match=message):
        load_few_shots(f)


@pytest.mark.parametrize("data, message", [
    ({"system_chat": [["not a message"]]}, r"system_chat\[0\].*must be a \{role, content\} mapping"),
    ({"system_chat": [[{"role": "user"}]]}, r"'content' must be non-empty text"),
    ({"system_chat": [_chat("a", "b", "c")]}, r"system_chat\[0\]: expected a conversation"),
    ({"system_chat": "oops"}, r"'system_chat' must be a non-empty list"),
])
def test_malformed_system_chat(tmp_path, data, message):
    f = tmp_path / "f.json"
    f.write_text(json.dumps(data))
    with pytest.raises(InputError, match=message):
        load_few_shots(f)


def test_json_with_bom_loads_and_non_utf8_is_a_clean_error(tmp_path):
    f = tmp_path / "c.json"
    f.write_bytes(b"\xef\xbb\xbf" + json.dumps([{"critic": "Critique for harm.", "revision": "Rewrite it."}]).encode())
    assert len(load_principles(f)) == 1
    f.write_bytes(b'[{"critic": "Caf\xe9 harm.", "revision": "Rewrite it."}]')
    with pytest.raises(InputError, match=r"c.json:1: byte 0xe9 at offset 16 is not UTF-8; re-save the file as UTF-8"):
        load_principles(f)
