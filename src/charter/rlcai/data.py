"""Feedback principles and few-shot feedback examples: our YAML and the paper's RLMadison files.

The question text constants live here too, so loaders and question builders agree on them.
"""
from __future__ import annotations

import itertools
import random
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

from charter.config import check_keys, require_text as _text
from charter.yamlfile import read_data_file as _read
from charter.errors import InputError
from charter.inputs.constitution import TOP_KEYS, priority_fields, priority_levels, priority_template
from charter.inputs.transcripts import SHORT, parse, parse_prompt
from charter.types import Message

DATA = Path(__file__).resolve().parents[1] / "data"  # charter/data
DEFAULT_FEEDBACK = DATA / "feedback.yaml"

HEADER = "Consider the following conversation between a human and an assistant:"
ANSWER_CUE = "The answer is:"
ANSWER = "\n\n" + ANSWER_CUE
COT_CUE = "Let's think step-by-step:"
COT = "\n\n" + COT_CUE
AFTER_COT = "So the answer is:"
COT_STOPS = ("\n\nSo the answer is", "\n\nThe answer is", "\n\nConsider the following", "\n\nHuman:", "\n\n-----")
EXAMPLE_GAP = "\n\n"
OPTION = re.compile(r"\n \(([A-H])\) \[\[\[(.*?)\]\]\]", re.S)  # one option in the paper's layout: (letter, text)


# ---- principles and few-shot examples -----------------------------------------------------------


@dataclass(frozen=True)
class FeedbackPrinciple:
    id: str
    text: str  # a request to pick an option; " Options:" is appended by the template
    priority: int | None = None  # a prioritised set's rank for it (1 ranks highest), as a Principle's
    level: str | None = None
    group: str | None = None


@dataclass(frozen=True)
class FeedbackExample:
    """A demonstration of the labelling task: the answer is `better`'s letter."""

    conversation: tuple[Message, ...]
    better: str
    worse: str
    principle: str  # the principle text shown with this example
    better_option: str = "A"  # which letter `better` gets
    reasoning: str | None = None  # chain-of-thought demonstration (optional)

    def options(self) -> list[str]:
        return [self.better, self.worse] if self.better_option == "A" else [self.worse, self.better]


@dataclass(frozen=True)
class FeedbackSet:
    principles: tuple[FeedbackPrinciple, ...]
    examples: tuple[FeedbackExample, ...] = ()
    source: str = ""
    priority_template: str | None = None  # how `--name-priority` words a principle (None: the default)


def principle_dict(p: FeedbackPrinciple) -> dict:
    """A principle as run fingerprints hash it: the priority fields only where set, so a set
    without them hashes as before they existed."""
    return {k: v for k, v in asdict(p).items() if v is not None or k in ("id", "text")}


def clean_paper_principle(text: str) -> str:
    """'\\nPlease choose ... Options:' -> 'Please choose ...' (the template adds ' Options:')."""
    text = text.strip()
    if text.endswith("Options:"):
        text = text[: -len("Options:")].rstrip()
    return text


def load_feedback_principles(path: Path) -> list[FeedbackPrinciple]:
    """Charter YAML (`principles: [{id, text}]`) or the paper's RLMadisonInstructions.json (strings)."""
    data, where = _read(path), str(path)
    if isinstance(data, list) and data and all(isinstance(x, str) for x in data):
        return [FeedbackPrinciple(f"paper-{i}", _text(clean_paper_principle(x), f"principle {i}", where, None))
                for i, x in enumerate(data)]
    if isinstance(data, dict) and isinstance(data.get("principles"), list) and data["principles"]:
        check_keys(data, TOP_KEYS, where)
        levels = priority_levels(data, where)
        out = []
        for item in data["principles"]:
            line = item.get("__line__") if isinstance(item, dict) else None
            if not isinstance(item, dict):
                raise InputError("each feedback principle must be a mapping with 'id' and 'text'", where)
            check_keys(item, ["id", "text", "description", "priority", "group"], where)
            pid = _text(str(item.get("id", "")), "'id'", where, line)
            out.append(FeedbackPrinciple(pid, clean_paper_principle(_text(item.get("text"), f"principle '{pid}': 'text'", where, line)),
                                         **priority_fields(item, pid, levels, where)))
        ids = [p.id for p in out]
        dupes = sorted({i for i in ids if ids.count(i) > 1})
        if dupes:
            raise InputError(f"duplicate principle ids: {', '.join(dupes)}; make each id unique", where)
        return out
    raise InputError("not a feedback principles file: expected 'principles: [{id, text}]' (Charter YAML) "
                     "or the paper's list of instruction strings (RLMadisonInstructions.json)", where)


def _seeded_principle(principles: Sequence[FeedbackPrinciple], key: str) -> FeedbackPrinciple:
    return random.Random(f"few-shot:{key}").choice(list(principles))


_PRECOG = re.compile(r"^\s*Human: [^\n]*\n\n(?P<convo>.*?)\n\n\{\}(?P<opts>.*?)\n\nAssistant: Let's think step by step:"
                     r"(?P<reason>.*?)\n\nHuman:\s*So the answer is:\s*\((?P<ans>[A-H])\)\s*$", re.S)


def _parse_precog(text: str, where: str, principles: Sequence[FeedbackPrinciple], i: int) -> FeedbackExample:
    m = _PRECOG.match(text)
    opts = OPTION.findall(m.group("opts")) if m else []
    if not m or len(opts) != 2:
        raise InputError(f"chain-of-thought example {i} is not in the paper's format (conversation, '{{}}', "
                         "two options, \"Let's think step by step:\", 'So the answer is: (X)')", where)
    convo = parse(m.group("convo"), SHORT)
    letters = [o[0] for o in opts]
    ans = m.group("ans")
    if ans not in letters or not convo:
        raise InputError(f"chain-of-thought example {i}: answer ({ans}) is not one of its options", where)
    better = opts[letters.index(ans)][1].strip()
    worse = opts[1 - letters.index(ans)][1].strip()
    return FeedbackExample(tuple(convo), better, worse, _seeded_principle(principles, f"{i}").text,
                           "A" if letters.index(ans) == 0 else "B", m.group("reason").strip())


def load_feedback_examples(path: Path, principles: Sequence[FeedbackPrinciple]) -> list[FeedbackExample]:
    """Charter YAML (`examples:`), the paper's RLMadisonFewShotPrompts.json ({prompt, corrects,
    incorrects}) or RLMadisonPrecogFewShotPrompts.json (chain-of-thought transcripts).

    The paper's examples carry no principle: each gets one drawn from `principles` by a fixed seed,
    and the better answer's letter alternates A, B, A, ... so the demonstrations are not all "(A)".
    """
    data, where = _read(path), str(path)
    by_id = {p.id: p for p in principles}
    out: list[FeedbackExample] = []
    if isinstance(data, list) and data and all(isinstance(x, dict) and "prompt" in x and "corrects" in x for x in data):
        for i, item in enumerate(data):
            convo = parse_prompt(_text(item.get("prompt"), f"example {i}: 'prompt'", where, None))
            if not convo:
                raise InputError(f"example {i}: 'prompt' must be a '\\n\\nHuman: ... \\n\\nAssistant:' transcript", where)
            corrects, incorrects = item.get("corrects") or [], item.get("incorrects") or []
            if not corrects or not incorrects:
                raise InputError(f"example {i}: needs non-empty 'corrects' and 'incorrects'", where)
            for c, w in itertools.product(corrects, incorrects):
                k = len(out)
                out.append(FeedbackExample(tuple(convo), _text(c, "correct", where, None), _text(w, "incorrect", where, None),
                                           _seeded_principle(principles, f"{k}").text, "AB"[k % 2]))
        return out
    if isinstance(data, list) and data and all(isinstance(x, dict) and set(x) == {"prompt"} for x in data):
        return [_parse_precog(x["prompt"], where, principles, i) for i, x in enumerate(data)]
    if isinstance(data, dict) and "examples" in data:
        check_keys(data, TOP_KEYS, where)
        for item in data["examples"] or []:
            line = item.get("__line__") if isinstance(item, dict) else None
            if not isinstance(item, dict):
                raise InputError("each example must be a mapping", where)
            check_keys(item, ["id", "principle", "conversation", "better", "worse", "better_option", "reasoning"], where)
            convo = [{"role": str(m.get("role")), "content": _text(m.get("content"), "content", where, m.get("__line__"))}
                     for m in item.get("conversation") or []]
            if not convo or convo[-1]["role"] != "user":
                raise InputError("an example's conversation must end with a user turn (the options are the replies)", where, line)
            pid = item.get("principle")
            if pid is None:
                text = _seeded_principle(principles, str(len(out))).text
            elif pid in by_id:
                text = by_id[pid].text
            else:
                raise InputError(f"example principle '{pid}' is not among the principles ({', '.join(by_id)})", where, line)
            letter = str(item.get("better_option", "A"))
            if letter not in ("A", "B"):
                raise InputError(f"better_option must be A or B, not '{letter}'", where, line)
            reasoning = item.get("reasoning")
            out.append(FeedbackExample(tuple(convo), _text(item.get("better"), "'better'", where, line),
                                       _text(item.get("worse"), "'worse'", where, line), text, letter,
                                       _text(reasoning, "'reasoning'", where, line) if reasoning is not None else None))
        return out
    raise InputError("not a feedback few-shot file: expected 'examples:' (Charter YAML), the paper's list of "
                     "{prompt, corrects, incorrects} (RLMadisonFewShotPrompts.json) or its chain-of-thought "
                     "transcripts (RLMadisonPrecogFewShotPrompts.json)", where)


def load_feedback(principles: str = "default", few_shot: str = "default") -> FeedbackSet:
    """Principles from `principles`; examples from `few_shot` ('default': ours, 'none': no examples)."""
    path = DEFAULT_FEEDBACK if principles == "default" else Path(principles)
    ps = load_feedback_principles(path)
    if few_shot == "none":
        shots: list[FeedbackExample] = []
    else:
        shot_path = DEFAULT_FEEDBACK if few_shot == "default" else Path(few_shot)
        if few_shot == "default" and path != DEFAULT_FEEDBACK and _has_examples(path):
            shot_path = path
        # A Charter YAML's examples name principles of their own file; the paper's examples get
        # principles drawn from the set in use.
        own = load_feedback_principles(shot_path) if _has_principles(shot_path) else ps
        shots = load_feedback_examples(shot_path, own)
    data = _read(path)
    template = priority_template(data, str(path)) if isinstance(data, dict) else None
    return FeedbackSet(tuple(ps), tuple(shots), str(path), template)


def _has_examples(path: Path) -> bool:
    data = _read(path)
    return isinstance(data, dict) and "examples" in data


def _has_principles(path: Path) -> bool:
    data = _read(path)
    return isinstance(data, dict) and isinstance(data.get("principles"), list)


def draw_principles(principles: Sequence[FeedbackPrinciple], seed: int, key: str, k: int = 1) -> list[FeedbackPrinciple]:
    """K distinct principles for one comparison, seeded by (seed, key): stable across runs and resumes."""
    rng = random.Random(f"{seed}:{key}")
    return rng.sample(list(principles), min(k, len(principles)))
