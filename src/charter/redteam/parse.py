"""Prompts out of a model's free text, and duplicates out of the prompts.

A small model answers "write 5 questions" with numbered lists, bold or quoted items, a preamble
("Here are five questions:"), commentary, items cut off by max_tokens, or prose. `candidates`
takes what looks like a prompt and counts what it drops, by reason, so a run can report how much
of the model's output was usable; it never raises.

Duplicates: two prompts are the same when their normalised text (case, accents, punctuation and
spacing folded) is equal, and near duplicates when the Jaccard similarity of their character
5-shingles reaches a threshold.
"""
from __future__ import annotations

import re
import unicodedata
from collections import Counter
from dataclasses import dataclass, field

MIN_CHARS = 15  # shorter is a fragment ("How?", "Question 3"), not a prompt
MIN_WORDS = 4
MAX_CHARS = 600  # longer is a paragraph of commentary, not a prompt
SHINGLE = 5

# A list item's marker: "1.", "1)", "(1)", "#1", "ii.", "b)", "-", "*", "•", "Q1:", "Question 2:", "Prompt:"
# (repeated: "1. 1.").
_MARKER = re.compile(r"^(?:\s*(?:\(?\d{1,3}[.):\]]|#\d{1,3}[.:]?|\(?(?:[ivx]{1,4}|[a-h])[.)](?=\s)|[-*•·–]|"
                     r"(?:q|question|prompt|example|test question)\s*\d{0,3}\s*[:.)-])\s*)+", re.IGNORECASE)
_INLINE = re.compile(r"\s(?=\(?\d{1,2}[.)]\s+[A-Z\"'“])")  # "1. How ...? 2. What ...?" on one line
_QUOTES = "\"'“”‘’`«»"
_PREAMBLE = re.compile(r"^(sure|certainly|of course|okay|ok|here (?:are|is)|below (?:are|is)|i hope|note:|"
                       r"these (?:questions|are))\b", re.IGNORECASE)
# A request asks (a question mark), starts as questions and instructions start, or says what the
# person wants ("I need a way to ...": a first-person statement alone, "I'm ready.", is no request).
_REQUEST_START = re.compile(
    r"^(how|what|why|where|when|who|which|can|could|would|will|should|is|are|do|does|did|may|might|shall|"
    r"write|tell|give|explain|help|show|list|describe|teach|make|find|create|draft|compose|suggest|recommend|"
    r"pretend|imagine|act|let's|please)\b", re.IGNORECASE)
_FIRST_PERSON = re.compile(r"^(i|i'm|i’m|i've|i’ve|i'd|i’d|my|we|our|me)\b", re.IGNORECASE)
_WANTS = re.compile(r"\b(help me|tell me|show me|give me|teach me|explain|want to|want a|need to|need a|need some|"
                    r"how (?:to|do|can)|ways? to|should i|can i|could i)\b", re.IGNORECASE)


@dataclass
class Parsed:
    """What one model output gave: the prompts it holds and what was dropped, by reason."""

    prompts: list[str] = field(default_factory=list)
    dropped: Counter = field(default_factory=Counter)


def candidates(text: str, cut_off: bool = False) -> Parsed:
    """The prompts in `text`; `cut_off`: the output stopped at max_tokens, so its last item is
    likely a fragment and is dropped."""
    out = Parsed()
    if not isinstance(text, str) or not text.strip():
        out.dropped["empty output"] += 1
        return out
    items, listed = _items(text)
    if cut_off and items:
        items.pop()
        out.dropped["cut off"] += 1
    for item, marked in items:
        why = reject(item, marked or not listed)
        if why:
            out.dropped[why] += 1
        else:
            out.prompts.append(item)
    return out


def _items(text: str) -> tuple[list[tuple[str, bool]], bool]:
    """(cleaned line, was a list item) for each line; and whether the text holds a list at all
    (then unmarked lines are commentary around it)."""
    text = text.replace("\r\n", "\n").replace("```", "\n")
    lines: list[str] = []
    for line in text.split("\n"):
        lines += _INLINE.split(line) if _MARKER.match(_strip_markup(line)) else [line]
    items = []
    for line in lines:
        if not line.strip():
            continue
        bare = _strip_markup(line)
        marker = _MARKER.match(bare)
        item = clean(bare[marker.end():] if marker else bare)
        if item:  # a bare marker ("1." split from "1. 1. How ...") is no item
            items.append((item, bool(marker)))
    return items, any(marked for _, marked in items)


def _strip_markup(line: str) -> str:
    """Markdown emphasis and headings around an item: '**1. How ...?**' -> '1. How ...?'."""
    line = re.sub(r"^\s*#{1,6}\s+", "", line.strip())
    return line.replace("**", "").replace("__", "").strip()


def clean(item: str) -> str:
    """An item without surrounding quotes, a label such as 'Question:' or trailing spaces."""
    item = item.strip()
    for _ in range(3):
        before = item
        item = _MARKER.sub("", item).strip()
        if len(item) >= 2 and item[0] in _QUOTES and item[-1] in _QUOTES:
            item = item[1:-1].strip()
        elif item and item[0] in _QUOTES and item.count(item[0]) == 1:
            item = item[1:].strip()  # an opening quote whose close was cut off
        if item == before:
            break
    return re.sub(r"\s+", " ", item)


def reject(item: str, may_be_prose: bool) -> str | None:
    """Why `item` is not a prompt (None: it is one). `may_be_prose`: the output has no list, or
    the item is a list item, so it needs no other sign of being a request than its shape."""
    if not any(ch.isalpha() for ch in item):
        return "no text"
    if item.endswith(":") or _PREAMBLE.match(item):
        return "preamble"
    if len(item) < MIN_CHARS or len(item.split()) < MIN_WORDS:
        return "too short"
    if len(item) > MAX_CHARS:
        return "too long"
    if not may_be_prose:
        return "commentary"
    if not (item.endswith("?") or _REQUEST_START.match(item) or (_FIRST_PERSON.match(item) and _WANTS.search(item))):
        return "not a request"
    return None


# ---- duplicates ------------------------------------------------------------------------------------


def normalise(text: str) -> str:
    """Case, accents, punctuation and spacing folded: the exact-duplicate key."""
    text = unicodedata.normalize("NFKD", text.casefold())
    text = "".join(ch for ch in text if not unicodedata.combining(ch))
    return " ".join(re.sub(r"[^\w\s]|_", " ", text).split())


def shingles(norm: str, k: int = SHINGLE) -> frozenset[str]:
    padded = f" {norm} "
    return frozenset(padded[i:i + k] for i in range(max(1, len(padded) - k + 1)))


def jaccard(a: frozenset, b: frozenset) -> float:
    return len(a & b) / len(a | b) if a or b else 1.0


class Deduper:
    """Prompts kept in order of arrival, each refused when it repeats (exactly or nearly) one kept
    before. An index from shingle to prompts keeps each check to the prompts that share one."""

    def __init__(self, threshold: float):
        self.threshold = threshold
        self.exact: set[str] = set()
        self.sets: list[frozenset] = []
        self.index: dict[str, list[int]] = {}

    def seen(self, text: str) -> str | None:
        """'duplicate' or 'near duplicate' if `text` repeats a kept prompt, else None."""
        norm = normalise(text)
        if norm in self.exact:
            return "duplicate"
        mine = shingles(norm)
        shared: Counter = Counter()
        for s in mine:
            shared.update(self.index.get(s, ()))
        for i, common in shared.items():
            if common / (len(mine) + len(self.sets[i]) - common) >= self.threshold:
                return "near duplicate"
        return None

    def add(self, text: str) -> None:
        norm = normalise(text)
        self.exact.add(norm)
        mine = shingles(norm)
        for s in mine:
            self.index.setdefault(s, []).append(len(self.sets))
        self.sets.append(mine)

    def keep(self, text: str) -> str | None:
        """Add `text` unless it repeats a kept prompt; the reason it was refused, or None."""
        why = self.seen(text)
        if why is None:
            self.add(text)
        return why
