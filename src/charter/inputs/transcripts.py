"""The one parser and renderer of plain-text transcripts: "\\n\\nHuman: ...\\n\\nAssistant: ...".

This is the paper's text format (hh-rlhf, the released CAI files, few-shot prompts, the feedback
question). A turn starts with "Tag:" at the start of the text or after a blank line; text is split
on those markers only, never on ": " inside a turn (the paper's prompts hold "Ratio: 3: 1").
"""
from __future__ import annotations

import functools
import re
from typing import Sequence

from charter.types import Message

HUMAN_ASSISTANT = ("Human", "Assistant")
SHORT = ("H", "A")  # hh-rlhf's and the paper's chain-of-thought files' abbreviations
CRITIQUE_TAGS = ("CritiqueRequest", "Critique", "RevisionRequest", "Revision")
ROLE = {"Human": "user", "H": "user", "Assistant": "assistant", "A": "assistant"}
TAG = {"user": "Human", "assistant": "Assistant"}


@functools.lru_cache(maxsize=None)
def _marker(tags: tuple[str, ...]) -> re.Pattern:
    alternatives = "|".join(re.escape(t) for t in sorted(tags, key=len, reverse=True))
    return re.compile(rf"(?:^|\n\n)({alternatives}):[ \t]*")


def split_turns(text: str, tags: Sequence[str] = HUMAN_ASSISTANT) -> list[tuple[str, str]]:
    """(tag, stripped content) of every turn marked by one of `tags`; text before the first is dropped."""
    parts = _marker(tuple(tags)).split(text)
    return [(tag, body.strip()) for tag, body in zip(parts[1::2], parts[2::2])]


def parse(text: str, tags: Sequence[str] = HUMAN_ASSISTANT) -> list[Message]:
    """Every turn as a {role, content} message, a final assistant answer included."""
    return [{"role": ROLE[tag], "content": body} for tag, body in split_turns(text, tags)]


def parse_prompt(text: str) -> list[Message]:
    """A transcript as a prompt: turns up to the last human one (H:/A: accepted too)."""
    return split_prompt(text)[0]


def split_prompt(text: str) -> tuple[list[Message], list[Message]]:
    """A transcript as a prompt (turns up to the last human one) and the assistant turns after
    it, which a prompt leaves out (an hh-rlhf `chosen` ends with the answer)."""
    messages = parse(text.lstrip(), HUMAN_ASSISTANT + SHORT)  # "  Human:" opens a turn as "\n\nHuman:" does
    cut = len(messages)
    while cut and messages[cut - 1]["role"] == "assistant":
        cut -= 1
    return messages[:cut], messages[cut:]


_STARTS_HUMAN = re.compile(r"\s*Human:")


def looks_like(text: str) -> bool:
    """A "Human: ... Assistant:" transcript: it starts with a Human turn. Text that only quotes one
    ("Summarize this chat:\n\nHuman: ...") is a prompt of its own, kept whole."""
    return bool(_STARTS_HUMAN.match(text)) and "\n\nAssistant:" in text


def turn(tag: str, content: str) -> str:
    return f"\n\n{tag}: {content}"


def render(messages: Sequence[Message]) -> str:
    """Messages as "\\n\\nHuman: ...\\n\\nAssistant: ..."; a system message is a bare preamble."""
    return "".join(f"\n\n{m['content']}" if m["role"] == "system" else turn(TAG[m["role"]], m["content"])
                   for m in messages)
