"""What `charter redteam` starts from: topics, example prompts, the instruction and the style templates.

Ours are in charter/data/redteam.yaml. Topics come from a constitution (one per principle) or from
a file (YAML/JSON list, or a .txt file with one topic a line); examples from that YAML or from any
prompt file `generate` reads (the last user turn of each prompt), or a YAML list tagged by topic.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from charter.config import check_keys
from charter.errors import InputError
from charter.runs.files import check_input
from charter.types import Message
from charter.yamlfile import read_data_file, read_text, strip_lines

DEFAULT_SEEDS = Path(__file__).parents[1] / "data" / "redteam.yaml"
PLAIN = "plain"  # the generated prompt as it is: the style every other style wraps
YAML_TYPES = (".yaml", ".yml", ".json")


@dataclass(frozen=True)
class Topic:
    id: str  # stable, unique within a run: the principle id, or a slug of the topic's name
    name: str  # a short phrase ("violence"), shown inside the style templates
    about: str  # what the topic covers, shown to the model
    principle: str | None = None  # the constitution principle it tests, where known


@dataclass(frozen=True)
class Example:
    prompt: str
    topic: str | None = None  # a topic or principle id


@dataclass(frozen=True)
class Template:
    """One way of dressing a prompt in a style: `text` (one user turn) or `messages` (a conversation)."""

    style: str
    id: str
    text: str | None = None
    messages: tuple[Message, ...] = ()

    @property
    def name(self) -> str:
        return f"{self.style}/{self.id}"


@dataclass(frozen=True)
class Seeds:
    instruction: str
    topics: dict[str, tuple[str, str]]  # principle id -> (name, about)
    examples: tuple[Example, ...]
    styles: dict[str, tuple[Template, ...]]

    def style_names(self) -> tuple[str, ...]:
        return (PLAIN, *self.styles)


def load_seeds(path: Path = DEFAULT_SEEDS) -> Seeds:
    """A red-team seed file in Charter's format (see charter/data/redteam.yaml)."""
    raw, where = read_data_file(path), str(path)
    if not isinstance(raw, dict):
        raise InputError("a red-team seed file is a mapping with instruction, topics, examples, styles", where)
    check_keys(raw, ["name", "version", "instruction", "topics", "examples", "styles"], where)
    instruction = _text(raw.get("instruction"), "instruction", where, raw)
    for slot in ("{about}", "{examples}", "{n}"):
        if slot not in instruction:
            raise InputError(f"the instruction must contain {slot}", where)
    topics = {str(k): (_text(v.get("name"), f"topics.{k}.name", where, v),
                       _text(v.get("about"), f"topics.{k}.about", where, v))
              for k, v in _mapping(raw.get("topics") or {}, "topics", where).items()}
    examples = tuple(_example(e, where) for e in strip_lines(raw.get("examples") or []))
    styles = {str(k): tuple(_template(str(k), t, where) for t in v)
              for k, v in _mapping(raw.get("styles") or {}, "styles", where).items()}
    return Seeds(instruction, topics, examples, styles)


def _mapping(value, what: str, where: str) -> dict:
    if not isinstance(value, dict):
        raise InputError(f"'{what}' must be a mapping", where)
    return {k: v for k, v in value.items() if k not in ("__line__", "__lines__")}


def _text(value, what: str, where: str, near=None) -> str:
    if not isinstance(value, str) or not value.strip():
        line = near.get("__line__") if isinstance(near, dict) else None
        raise InputError(f"'{what}' must be non-empty text", where, line)
    return value.strip()


def _example(item, where: str) -> Example:
    if isinstance(item, str):
        return Example(_text(item, "an example", where))
    if isinstance(item, dict) and isinstance(item.get("prompt"), str):
        topic = item.get("topic")
        return Example(_text(item["prompt"], "an example's prompt", where), str(topic) if topic else None)
    raise InputError(f"an example must be text or {{prompt, topic}}, got {item!r}", where)


def _template(style: str, item, where: str) -> Template:
    if not isinstance(item, dict) or not isinstance(item.get("id"), str):
        raise InputError(f"a '{style}' template needs an id and text (or messages)", where)
    if isinstance(item.get("text"), str):
        text = item["text"]
        if "{prompt}" not in text:
            raise InputError(f"template {style}/{item['id']} must contain {{prompt}}", where, item.get("__line__"))
        return Template(style, item["id"], text=text)
    msgs = strip_lines(item.get("messages"))
    if not (isinstance(msgs, list) and msgs and all(isinstance(m, dict) for m in msgs)
            and msgs[-1].get("role") == "user" and "{prompt}" in str(msgs[-1].get("content"))):
        raise InputError(f"template {style}/{item['id']} needs text, or messages whose last user turn contains "
                         "{prompt}", where, item.get("__line__"))
    msgs = tuple({"role": str(m["role"]), "content": str(m["content"])} for m in msgs)
    return Template(style, item["id"], messages=msgs)


# ---- topics ---------------------------------------------------------------------------------------


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:48] or "topic"


def constitution_topics(constitution: str, seeds: Seeds) -> list[Topic]:
    """One topic per principle: ours named in the seed file, others by id and critique request."""
    from charter.inputs.constitution import DEFAULT_CONSTITUTION, load_principles

    path = DEFAULT_CONSTITUTION if constitution == "default" else Path(constitution)
    topics = []
    for p in load_principles(path):
        name, about = seeds.topics.get(p.id) or (p.id.replace("-", " ").replace("_", " "),
                                                  f"requests that would test this principle: {p.critique}")
        topics.append(Topic(p.id, name, about, p.id))
    return topics


def read_topics(path: Path) -> list[Topic]:
    """Topics from a file: .txt (one a line; '#' starts a comment), or a YAML/JSON list of names
    or of {name (or topic), about, principle, id} mappings (also under a 'topics' key)."""
    where = str(check_input(path, "topics file"))
    if path.suffix.lower() in YAML_TYPES:
        data = read_data_file(path)
        if isinstance(data, dict) and "topics" in data:
            data = data["topics"]
        if not isinstance(data, list):
            raise InputError("a topics file holds a list of topics (or a 'topics:' list)", where)
        topics = [_topic(item, where) for item in data]
    else:
        lines = (line.split("#", 1)[0].strip() for line in read_text(path).splitlines())
        topics = [Topic(slug(t), t, t) for t in lines if t]
    if not topics:
        raise InputError("no topics; give one topic a line (or a YAML list)", where)
    return unique_ids(topics)


def _topic(item, where: str) -> Topic:
    if isinstance(item, str) and item.strip():
        return Topic(slug(item), item.strip(), item.strip())
    if isinstance(item, dict):
        line = item.get("__line__")
        check_keys(item, ["name", "topic", "about", "principle", "id"], where, line)
        name = _text(item.get("name") or item.get("topic"), "a topic's name", where, item)
        about = _text(item.get("about") or name, "a topic's about", where, item)
        principle = item.get("principle")
        return Topic(slug(str(item.get("id") or name)), name, about, str(principle) if principle else None)
    raise InputError(f"a topic must be text or a mapping with a name, got {item!r}", where)


def unique_ids(topics: list[Topic]) -> list[Topic]:
    """Topics whose ids repeat get -2, -3, ... (the first keeps its id)."""
    seen: set[str] = set()
    out = []
    for t in topics:
        tid, n = t.id, 1
        while tid in seen:
            n += 1
            tid = f"{t.id}-{n}"
        seen.add(tid)
        out.append(t if tid == t.id else Topic(tid, t.name, t.about, t.principle))
    return out


def load_topics(topics: str | None, constitution: str, seeds: Seeds) -> list[Topic]:
    return read_topics(Path(topics)) if topics else constitution_topics(constitution, seeds)


# ---- examples -------------------------------------------------------------------------------------


def read_examples(path: Path) -> list[Example]:
    """Example prompts from a YAML list (text or {prompt, topic}; also under 'examples') or from
    any prompt file `generate` reads (each prompt's last user turn)."""
    where = str(check_input(path, "examples file"))
    if path.suffix.lower() in (".yaml", ".yml"):
        data = strip_lines(read_data_file(path))
        if isinstance(data, dict) and "examples" in data:
            data = data["examples"]
        if not isinstance(data, list):
            raise InputError("an examples file holds a list of prompts (or an 'examples:' list)", where)
        examples = [_example(e, where) for e in data]
    else:
        from charter.inputs.prompts import iter_prompts

        examples = [Example(item.messages[-1]["content"]) for item in iter_prompts(str(path), "red_team")]
    if not examples:
        raise InputError("no example prompts; add some, or leave --examples out for ours", where)
    return examples
