"""Only text that starts with a Human turn is read as an hh-rlhf transcript; a prompt that quotes a
dialogue stays one user turn, and a turn a transcript prompt leaves out is reported with file:line."""
from __future__ import annotations

import json
import logging

import pytest

from charter.inputs import transcripts
from charter.inputs.prompts import load_prompts, to_messages

QUOTED = "Summarize this chat:\n\nHuman: Where is the bank?\n\nAssistant: On Main Street."


@pytest.mark.parametrize("text", [
    QUOTED,
    "Translate to French.\n\nHuman: hello\n\nAssistant: bonjour\n\nHuman: thanks",
    "Is this dialogue rude?\nHuman: go away\n\nAssistant: ok",
])
def test_a_prompt_that_quotes_a_dialogue_is_one_user_turn(text):
    assert not transcripts.looks_like(text)
    assert to_messages(text, "p.jsonl", 1) == [{"role": "user", "content": text}]


@pytest.mark.parametrize("text", [
    "\n\nHuman: Hi\n\nAssistant: Hello\n\nHuman: More?",
    "Human: Hi\n\nAssistant: Hello\n\nHuman: More?",
    "  \n\nHuman: Hi\n\nAssistant: Hello\n\nHuman: More?",
    "  Human: Hi\n\nAssistant: Hello\n\nHuman: More?",
])
def test_a_transcript_starts_with_a_human_turn(text):
    assert transcripts.looks_like(text)
    assert [m["role"] for m in to_messages(text, "p.jsonl", 1)] == ["user", "assistant", "user"]


def test_a_dropped_final_answer_is_said_with_file_and_line(tmp_path, caplog):
    path = tmp_path / "p.jsonl"
    rows = [{"prompt": "plain"}, {"chosen": "\n\nHuman: Q?\n\nAssistant: the answer"},
            {"chosen": "\n\nHuman: R?\n\nAssistant: another"}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with caplog.at_level(logging.WARNING, logger="charter"):
        items = load_prompts(str(path), "red_team")
    assert [it.messages[-1]["content"] for it in items] == ["plain", "Q?", "R?"]
    said = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(said) == 1 and f"{path}:2" in said[0] and "Assistant" in said[0], said


def test_an_empty_final_assistant_turn_is_not_a_loss(tmp_path, caplog):
    path = tmp_path / "p.jsonl"
    path.write_text(json.dumps({"prompt": "\n\nHuman: Q?\n\nAssistant:"}) + "\n")
    with caplog.at_level(logging.WARNING, logger="charter"):
        (item,) = load_prompts(str(path), "red_team")
    assert item.messages == ({"role": "user", "content": "Q?"},) and not caplog.records
