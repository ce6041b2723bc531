"""Constitutions (principles) and few-shot demonstrations, from the formats people already have.

- ours (YAML): ``principles: [{id, critique, revision}]`` and ``examples: [{conversation, rounds}]``
- the paper's JSON: ``CritiqueRevisionInstructions.json`` ({id: {"prompt": [critique], "edit_request": revision}})
  and ``CritiqueRevisionFewShotPrompts.json`` (a list of raw transcripts)
- the widely used ``{"constitutions": [{"critic", "revision"}], "system_chat": [[messages]]}`` JSON
"""
from __future__ import annotations

import difflib
import random
import re
import string
from pathlib import Path
from typing import Sequence

from charter.config import check_keys, key_line, require_text as _text
from charter.yamlfile import read_data_file
from charter.errors import ConfigError, InputError
from charter.runs.files import check_input
from charter.inputs.transcripts import CRITIQUE_TAGS, HUMAN_ASSISTANT, split_turns
from charter.types import Constitution, FewShot, FewShotRound, Message, Principle

DATA = Path(__file__).parents[1] / "data"
DEFAULT_CONSTITUTION = DATA / "constitution.yaml"
DEFAULT_FEW_SHOT = DATA / "few_shot.yaml"
_PAPER_PREFIX = re.compile(r"^\s*(CritiqueRequest|RevisionRequest):\s*|\s*(Critique|Revision):\s*$")


def _read(path: Path) -> object:
    """A constitution or few-shot file (a device or pipe would never end: refused)."""
    if path.exists():
        check_input(path, "constitution or few-shot file")
    return read_data_file(path)


def _clean_paper(text: str) -> str:
    """'\\n\\nCritiqueRequest: X\\n\\nCritique:' -> 'X'."""
    return _PAPER_PREFIX.sub("", text).strip()


# ---- principles -------------------------------------------------------------------------------


TOP_KEYS = ["name", "version", "description", "principles", "examples", "priorities", "priority_template"]


def _principles_ours(data: dict, where: str) -> list[Principle]:
    check_keys(data, TOP_KEYS, where)
    items = data.get("principles")
    if not isinstance(items, list) or not items:
        raise InputError("'principles' must be a non-empty list", where, data.get("__line__"))
    levels = priority_levels(data, where)
    out = []
    for item in items:
        line = item.get("__line__") if isinstance(item, dict) else None
        if not isinstance(item, dict):
            raise InputError("each principle must be a mapping with id, critique, revision", where)
        check_keys(item, ["id", "critique", "revision", "description", "priority", "group"], where)
        pid = _text(str(item.get("id", "")), "'id'", where, line)
        out.append(Principle(pid, _text(item.get("critique"), f"principle '{pid}': 'critique'", where, line),
                             _text(item.get("revision"), f"principle '{pid}': 'revision'", where, line),
                             **priority_fields(item, pid, levels, where)))
    return out


def _principles_paper(data: dict, where: str) -> list[Principle]:
    out = []
    for pid, item in data.items():
        if not isinstance(item, dict) or "prompt" not in item or "edit_request" not in item:
            raise InputError(f"entry '{pid}' needs 'prompt' and 'edit_request' (paper format)", where)
        critique = item["prompt"][0] if isinstance(item["prompt"], list) and item["prompt"] else item["prompt"]
        out.append(Principle(str(pid), _clean_paper(_text(critique, f"'{pid}' prompt", where, None)),
                             _clean_paper(_text(item["edit_request"], f"'{pid}' edit_request", where, None))))
    return out


def _principles_constitutions(items: list, where: str) -> list[Principle]:
    if not isinstance(items, list) or not items:
        raise InputError("'constitutions' must be a non-empty list of {critic, revision}", where)
    out = []
    for i, item in enumerate(items):
        if not isinstance(item, dict) or "critic" not in item or "revision" not in item:
            raise InputError(f"constitutions[{i}] needs 'critic' and 'revision'", where)
        out.append(Principle(str(item.get("id", f"principle-{i}")), _text(item["critic"], f"constitutions[{i}] critic", where, None),
                             _text(item["revision"], f"constitutions[{i}] revision", where, None)))
    return out


def _entries(data: dict) -> list:
    return [(k, v) for k, v in data.items() if k not in ("__line__", "__lines__")]


def load_principles(path: Path) -> list[Principle]:
    return _load_principles(path)[0]


def _load_principles(path: Path) -> tuple[list[Principle], str | None]:
    """The principles, and the file's `priority_template` (None: not given)."""
    data, where = _read(path), str(path)
    template = None
    if isinstance(data, dict) and "principles" in data:
        principles, template = _principles_ours(data, where), priority_template(data, where)
    elif isinstance(data, dict) and "constitutions" in data:
        principles = _principles_constitutions(data["constitutions"], where)
    elif isinstance(data, list) and data and all(isinstance(x, dict) and "critic" in x for x in data):
        principles = _principles_constitutions(data, where)  # a bare list of {critic, revision}
    elif isinstance(data, dict) and data and all(isinstance(v, dict) and "edit_request" in v for k, v in _entries(data)):
        principles = _principles_paper(dict(_entries(data)), where)
    else:
        raise InputError("not a constitution: expected 'principles:' (Charter YAML), the paper's "
                         "{id: {prompt, edit_request}} JSON, or {'constitutions': [...]} JSON", where)
    ids = [p.id for p in principles]
    dupes = sorted({i for i in ids if ids.count(i) > 1})
    if dupes:
        raise InputError(f"duplicate principle ids: {', '.join(dupes)}; make each id unique", where)
    return principles, template


# ---- few-shot ---------------------------------------------------------------------------------


def parse_paper_transcript(text: str, where: str) -> FewShot:
    """A raw transcript (Human/Assistant/CritiqueRequest/.../Revision) -> FewShot."""
    turns = split_turns(text.lstrip("\n"), HUMAN_ASSISTANT + CRITIQUE_TAGS)
    while turns and turns[-1][0] == "Human" and not turns[-1][1]:
        turns.pop()  # the files end each example with an empty "Human:"
    convo: list[Message] = []
    while turns and turns[0][0] in ("Human", "Assistant"):
        tag, body = turns.pop(0)
        convo.append({"role": "user" if tag == "Human" else "assistant", "content": body})
    rounds = []
    while turns:
        group, turns = turns[:4], turns[4:]
        if [t for t, _ in group] != ["CritiqueRequest", "Critique", "RevisionRequest", "Revision"]:
            raise InputError("a few-shot transcript must follow Human/Assistant turns with "
                             "CritiqueRequest, Critique, RevisionRequest, Revision groups", where)
        rounds.append(FewShotRound(*(body for _, body in group)))
    return _few_shot(convo, rounds, where, None)


def _few_shot(convo: list[Message], rounds: list[FewShotRound], where: str, line: int | None) -> FewShot:
    if not convo or convo[-1]["role"] != "assistant":
        raise InputError("a few-shot conversation must end with the assistant's answer", where, line)
    if not rounds:
        raise InputError("a few-shot example needs at least one critique/revision round", where, line)
    return FewShot(tuple(convo), tuple(rounds))


ROLES = ("system", "user", "assistant")


def _message(m: object, where: str, line: int | None) -> Message:
    """One few-shot turn, checked: a {role, content} mapping with a known role and some text."""
    if not isinstance(m, dict):
        raise InputError(f"each conversation turn must be a {{role, content}} mapping, got {type(m).__name__}", where, line)
    line = m.get("__line__", line)
    check_keys(m, ["role", "content"], where, line)
    if m.get("role") not in ROLES:
        raise InputError(f"unknown role {m.get('role')!r}; use one of {', '.join(ROLES)}", where, line)
    return {"role": m["role"], "content": _text(m.get("content"), "'content'", where, line)}


def _list(value: object, what: str, where: str, line: int | None) -> list:
    if not isinstance(value, list) or not value:
        raise InputError(f"{what} must be a non-empty list", where, line)
    return value


def _example_ours(item: object, i: int, where: str, line: int | None) -> FewShot:
    if not isinstance(item, dict):
        raise InputError(f"examples[{i}] must be a mapping with 'conversation' and 'rounds', not {type(item).__name__}", where, line)
    line = item.get("__line__", line)
    check_keys(item, ["id", "conversation", "rounds"], where)
    convo = [_message(m, where, key_line(item, "conversation"))
             for m in _list(item.get("conversation"), f"examples[{i}]: 'conversation'", where, line)]
    keys = ["critique_request", "critique", "revision_request", "revision"]
    rounds = []
    for r in _list(item.get("rounds"), f"examples[{i}]: 'rounds'", where, line):
        if not isinstance(r, dict):
            raise InputError(f"examples[{i}]: each round must be a mapping with {', '.join(keys)}", where, key_line(item, "rounds"))
        check_keys(r, keys, where)
        rounds.append(FewShotRound(*(_text(r.get(k), f"'{k}'", where, key_line(r, k)) for k in keys)))
    return _few_shot(convo, rounds, where, line)


def _few_shots_ours(data: dict, where: str) -> list[FewShot]:
    examples = data.get("examples") or []
    line = key_line(data, "examples")
    if not isinstance(examples, list):
        raise InputError("'examples' must be a list of {conversation, rounds} mappings", where, line)
    return [_example_ours(item, i, where, line) for i, item in enumerate(examples)]


def _chat_start(msgs: list[Message], critics: set[str], revisions: set[str]) -> int | None:
    """Where a demonstration's conversation ends and its critique/revision rounds begin: at the
    first request from this constitution, else before the last round (conversations in the wild
    often have several human turns before the critique request)."""
    fits = [j for j in range(1, len(msgs) - 3) if (len(msgs) - j) % 4 == 0 and msgs[j - 1]["role"] == "assistant"
            and all(m["role"] == ("user", "assistant")[k % 2] for k, m in enumerate(msgs[j:]))]
    known = [j for j in fits if msgs[j]["content"] in critics or msgs[j + 2]["content"] in revisions]
    return known[0] if known else fits[-1] if fits else None


def _few_shots_system_chat(chats: object, critics: set[str], revisions: set[str], where: str) -> list[FewShot]:
    out = []
    for i, chat in enumerate(_list(chats, "'system_chat'", where, None)):
        msgs = [_message(m, f"{where}: system_chat[{i}]", None) for m in _list(chat, f"system_chat[{i}]", where, None)]
        start = _chat_start(msgs, critics, revisions)
        if start is None:
            raise InputError(f"system_chat[{i}]: expected a conversation ending with the assistant's answer, then "
                             "groups of 4 messages (user critique request, assistant critique, user revision request, "
                             "assistant revision)", where)
        rest = msgs[start:]
        rounds = [FewShotRound(*(m["content"] for m in rest[k:k + 4])) for k in range(0, len(rest), 4)]
        out.append(_few_shot(msgs[:start], rounds, where, None))
    return out


def load_few_shots(path: Path) -> list[FewShot]:
    data, where = _read(path), str(path)
    if isinstance(data, list) and data and all(isinstance(x, str) for x in data):
        return [parse_paper_transcript(t, f"{where}[{i}]") for i, t in enumerate(data)]
    if isinstance(data, dict) and "examples" in data:
        return _few_shots_ours(data, where)
    if isinstance(data, dict) and "system_chat" in data:
        rules = [c for c in data.get("constitutions") or [] if isinstance(c, dict)]
        critics = {str(c.get("critic", "")).strip() for c in rules}
        revisions = {str(c.get("revision", "")).strip() for c in rules}
        return _few_shots_system_chat(data["system_chat"], critics, revisions, where)
    raise InputError("not a few-shot file: expected 'examples:' (Charter YAML), the paper's list of "
                     "transcripts, or {'system_chat': [...]} JSON", where)


def has_few_shots(path: Path) -> bool:
    data = _read(path)
    return isinstance(data, dict) and ("examples" in data or "system_chat" in data)


def load_constitution(source: str = "default", few_shot: str = "default") -> Constitution:
    """Principles from `source`; few-shots from `few_shot` ('default': the file's own, else ours)."""
    path = DEFAULT_CONSTITUTION if source == "default" else Path(source)
    principles, template = _load_principles(path)
    if few_shot == "none":
        shots: list[FewShot] = []
    elif few_shot == "default":
        shots = load_few_shots(path) if has_few_shots(path) else load_few_shots(DEFAULT_FEW_SHOT)
    else:
        shots = load_few_shots(Path(few_shot))
    name = path.stem if source != "default" else "charter-default"
    return Constitution(name, tuple(principles), tuple(shots), str(path), template)


def draw_principle(constitution: Constitution, seed: int, record_id: str, round_index: int) -> Principle:
    """Independent, seeded draw per (record, round), with replacement: stable across resumes."""
    rng = random.Random(f"{seed}:{record_id}:{round_index}")
    return rng.choice(constitution.principles)


# ---- priorities and groups ------------------------------------------------------------------------

# Named levels, highest first, for a file that names levels without listing its own `priorities:`.
LEVELS = ("safety", "ethics", "guidelines", "helpfulness")
PRIORITY_TEMPLATE = "[Priority: {priority}] {request}"
TEMPLATE_FIELDS = ("request", "priority", "level", "rank")


def priority_levels(data: dict, where: str) -> tuple[str, ...]:
    """A file's named priority levels, highest first (its `priorities:` list, else LEVELS)."""
    if "priorities" not in data:
        return LEVELS
    levels, line = data["priorities"], key_line(data, "priorities")
    if not isinstance(levels, list) or not levels or not all(isinstance(x, str) and x.strip() for x in levels):
        raise InputError("'priorities' must be a non-empty list of level names, highest first, e.g. "
                         "[safety, ethics, guidelines, helpfulness]", where, line)
    names = [x.strip() for x in levels]
    twice = sorted({x for x in names if names.count(x) > 1})
    if twice:
        raise InputError(f"'priorities' names {', '.join(twice)} more than once; list each level once", where, line)
    return tuple(names)


def priority_fields(item: dict, pid: str, levels: Sequence[str], where: str) -> dict:
    """A principle's optional `priority` (a level name, or a whole number: 1 ranks highest) and
    `group`, as Principle's fields."""
    value, line = item.get("priority"), key_line(item, "priority")
    rank, level = None, None
    if isinstance(value, bool) or not isinstance(value, (int, str, type(None))):
        raise InputError(f"principle '{pid}': 'priority' must be a level name ({', '.join(levels)}) or a whole "
                         f"number >= 1 (1 ranks highest), not {value!r}", where, line)
    if isinstance(value, int):
        if value < 1:
            raise InputError(f"principle '{pid}': 'priority' must be >= 1 (1 ranks highest), not {value}", where, line)
        rank = value
    elif isinstance(value, str):
        if value.strip() not in levels:
            hint = difflib.get_close_matches(value.strip(), levels, n=1)
            tip = f" (did you mean '{hint[0]}'?)" if hint else ""
            raise InputError(f"principle '{pid}': unknown priority level '{value}'{tip}; the levels, highest first, "
                             f"are {', '.join(levels)} (a file lists its own under 'priorities:')", where, line)
        level = value.strip()
        rank = levels.index(level) + 1
    group = None
    if "group" in item:
        group = _text(item.get("group"), f"principle '{pid}': 'group'", where, key_line(item, "group"))
    return {"priority": rank, "level": level, "group": group}


def priority_template(data: dict, where: str) -> str | None:
    """A file's `priority_template`, checked: it keeps {request} and names only known fields."""
    if "priority_template" not in data:
        return None
    line = key_line(data, "priority_template")
    text = _text(data.get("priority_template"), "'priority_template'", where, line)
    try:
        names = {f for _, f, _, _ in string.Formatter().parse(text) if f is not None}
    except ValueError as exc:
        raise InputError(f"'priority_template': {exc}; write a literal brace as {{{{ or }}}}", where, line) from exc
    unknown = sorted(names - set(TEMPLATE_FIELDS))
    if unknown or "request" not in names:
        fields = ", ".join("{" + f + "}" for f in TEMPLATE_FIELDS)
        raise InputError(f"'priority_template' may use {fields} and must keep {{request}}"
                         + (f"; unknown: {', '.join(unknown)}" if unknown else ""), where, line)
    return text


def with_priority(text: str, p, template: str | None = None) -> str:
    """`text` (a principle's request) naming the principle's priority; as is without one."""
    if p.priority is None:
        return text
    phrase = f"{p.level} (level {p.priority}, 1 is the highest)" if p.level else f"{p.priority} (1 is the highest)"
    return (template or PRIORITY_TEMPLATE).format(request=text, priority=phrase, level=p.level or str(p.priority),
                                                  rank=p.priority)


def in_group(principles: Sequence, group: str | None, where: str) -> list:
    """The principles of `group` (all without one); none is an error that lists the groups."""
    if group is None:
        return list(principles)
    chosen = [p for p in principles if p.group == group]
    if chosen:
        return chosen
    groups = sorted({p.group for p in principles if p.group})
    hint = difflib.get_close_matches(group, groups, n=1)
    tip = f" (did you mean '{hint[0]}'?)" if hint else ""
    known = f"its groups: {', '.join(groups)}" if groups else "it gives no principle a 'group'"
    raise ConfigError(f"--principle-group '{group}'{tip}: no principle of {where} is in that group; {known}")


def validate(constitution: Constitution) -> list[str]:
    """Problems worth a warning (loading already rejected the fatal ones)."""
    problems = []
    for p in constitution.principles:
        if len(p.critique) < 20 or len(p.revision) < 20:
            problems.append(f"principle '{p.id}': request text is very short")
        if p.critique == p.revision:
            problems.append(f"principle '{p.id}': critique and revision requests are identical")
    known = {p.critique for p in constitution.principles}
    for i, shot in enumerate(constitution.few_shots):
        if not any(r.critique_request in known for r in shot.rounds):
            problems.append(f"few-shot {i}: its critique requests are not from this constitution (fine, but unusual)")
    if len(constitution.principles) < 2:
        problems.append("only one principle: draws will never vary")
    first: dict[tuple[str, str], str] = {}
    for p in constitution.principles:
        same = first.setdefault((p.critique, p.revision), p.id)
        if same != p.id:
            problems.append(f"principles '{same}' and '{p.id}' are identical (same critique and revision), so that "
                            "text is drawn twice as often; remove one, or reword it if that was not meant")
    return problems
