"""Clean exported text and drop failed critique/revision rounds (records keep the raw text).

Models leak boilerplate into revisions ("Sure, here is a revised response:", "Revision:", the
revision request quoted back), small models echo the principle's request instead of critiquing,
and some rounds return the answer they were asked to revise. `clean_records` removes the
boilerplate (regexes: data/clean.yaml by default, or a user's YAML list) from answers and
revisions, and drops the rounds the chosen filters catch:

- empty:        nothing left after cleaning
- unchanged:    the same text as the answer it revises (whitespace aside)
- request-copy: the critique or the revision is mostly the principle's request text

A round counts under the first of those that applies, in the order above except request-copy
first (an echoed request that cleaning emptied is reported as the echo it was). `export` and
the report call the same function, so their counts agree.
"""
from __future__ import annotations

import logging
import re
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Iterable, Mapping, Sequence

from charter.errors import ConfigError
from charter.types import Principle, Record, Round

log = logging.getLogger("charter.export.clean")

DEFAULT_PATTERNS = Path(__file__).parents[1] / "data" / "clean.yaml"
FILTERS = ("request-copy", "empty", "unchanged")  # the order a round is judged in
COPY_SHARE = 0.6  # share of a text's word 3-grams found in a request that makes it a copy
COPY_MIN_WORDS = 4  # shorter texts are too short to call a copy


def load_patterns(spec: str = "default") -> list[re.Pattern]:
    """'default' (our list), 'none', or a YAML file holding a list of regexes."""
    if spec == "none":
        return []
    from charter.config import read_yaml, strip_lines

    path = DEFAULT_PATTERNS if spec == "default" else Path(spec)
    data = strip_lines(read_yaml(path))
    if not isinstance(data, list) or not all(isinstance(p, str) for p in data):
        raise ConfigError(f"{path}: clean patterns must be a YAML list of regexes (one '- pattern' line each)")
    return [_compile(p, i, path) for i, p in enumerate(data, 1)]


def _compile(pattern: str, i: int, path: Path) -> re.Pattern:
    try:
        return re.compile(pattern, re.IGNORECASE)
    except re.error as exc:
        raise ConfigError(f"{path}: pattern {i} ({pattern!r}) is not a valid regex ({exc}); fix or remove it") from exc


def parse_filters(values: Iterable[str]) -> tuple[str, ...]:
    """['empty,unchanged'] / ['all'] -> the filter names, in judging order."""
    names = {v.strip() for value in values for v in value.split(",") if v.strip()}
    if "all" in names:
        names = (names - {"all"}) | set(FILTERS)
    unknown = sorted(names - set(FILTERS))
    if unknown:
        raise ConfigError(f"--filter {', '.join(unknown)} is not a filter; choose from {', '.join(FILTERS)} or all")
    return tuple(f for f in FILTERS if f in names)


def words(text: str | None) -> list[str]:
    return re.findall(r"[\w']+", (text or "").lower())


def _grams(ws: Sequence[str]) -> set[tuple[str, ...]]:
    return {tuple(ws[i:i + 3]) for i in range(len(ws) - 2)}


def copy_share(text: str | None, request: str) -> float:
    """How much of `text` is `request`: the share of its word 3-grams that occur in the request."""
    mine = _grams(words(text))
    return len(mine & _grams(words(request))) / len(mine) if mine else 0.0


def is_copy(text: str | None, requests: Sequence[str]) -> bool:
    return len(words(text)) >= COPY_MIN_WORDS and any(copy_share(text, r) >= COPY_SHARE for r in requests)


def request_patterns(principles: Iterable[Principle]) -> list[re.Pattern]:
    """A request quoted at the start ("RevisionRequest: Rewrite the ..."), any punctuation between words."""
    texts = {t for p in principles for t in (p.critique, p.revision) if words(t)}
    label = r"(?:(?:critique|revision)\s*request\s*:\s*)?"
    return [re.compile(r"\A\s*" + label + r"[\"'“‘]?" + r"\W+".join(map(re.escape, words(t))) + r"[\W_]*",
                       re.IGNORECASE) for t in sorted(texts)]


class Cleaner:
    """Deletes every pattern's matches, again until nothing changes, then strips."""

    def __init__(self, patterns: Sequence[re.Pattern] = ()):
        self.patterns = list(patterns)

    def __call__(self, text: str | None) -> str | None:
        if text is None or not self.patterns:
            return text  # 'none': the raw text, untouched
        for _ in range(10):  # a bound: a pattern that matches the empty string must not loop
            before = text
            for p in self.patterns:
                text = p.sub("", text)
            if text == before:
                break
        return text.strip()


def _same(a: str | None, b: str | None) -> bool:
    return " ".join((a or "").split()) == " ".join((b or "").split())


@dataclass
class Cleaned:
    records: list[Record]
    dropped: dict[str, Counter] = field(default_factory=dict)  # principle -> {filter: rounds dropped}

    def totals(self) -> Counter:
        return sum(self.dropped.values(), Counter())


def verdict(rnd: Round, text: str, previous: str | None, filters: Sequence[str],
            principles: Mapping[str, Principle]) -> str | None:
    """The filter that drops this round (its cleaned revision `text`), or None to keep it."""
    p = principles.get(rnd.principle)
    for f in filters:
        if f == "request-copy" and p and (is_copy(rnd.critique, [p.critique, p.revision])
                                           or is_copy(rnd.revision, [p.critique, p.revision])):
            return f
        if f == "empty" and not words(text):
            return f
        if f == "unchanged" and _same(text, previous):
            return f
    return None


def clean_record(rec: Record, clean: Cleaner, filters: Sequence[str], principles: Mapping[str, Principle],
                 upto: int | None, dropped: dict[str, Counter]) -> Record:
    """`rec` with cleaned answer and revisions, rounds after `upto` and dropped rounds removed."""
    if rec.error is not None:
        return rec
    initial, previous, kept = clean(rec.initial), clean(rec.initial), []
    for rnd in rec.rounds[:upto] if upto else rec.rounds:
        text = clean(rnd.revision)
        why = verdict(rnd, text, previous, filters, principles)
        if why:
            dropped.setdefault(rnd.principle, Counter())[why] += 1
        else:
            kept.append(Round(rnd.principle, rnd.critique, text))
        previous = text
    final = kept[-1].revision if kept else (None if rec.rounds else clean(rec.final))
    return replace(rec, initial=initial, rounds=kept, final=final)


def clean_records(records: Sequence[Record], patterns: str | Sequence[re.Pattern] = "default",
                  filters: Sequence[str] = (), principles: Sequence[Principle] | Mapping[str, Principle] = (),
                  upto: int | None = None) -> Cleaned:
    """Cleaned copies of `records` and what the filters dropped, per principle.

    `principles` (the run's constitution) adds its requests to the patterns and is what
    request-copy compares against; `upto` keeps rounds 1..upto only (SL-CAI-n), before filtering."""
    cleaner = RecordCleaner(patterns, filters, principles, upto)
    return Cleaned([cleaner(r) for r in records], cleaner.dropped)


class RecordCleaner:
    """clean_records one record at a time (export streams a run through it); `dropped` adds up."""

    def __init__(self, patterns: str | Sequence[re.Pattern] = "default", filters: Sequence[str] = (),
                 principles: Sequence[Principle] | Mapping[str, Principle] = (), upto: int | None = None):
        by_id = dict(principles) if isinstance(principles, Mapping) else {p.id: p for p in principles}
        if "request-copy" in filters and not by_id:
            raise ConfigError("--filter request-copy needs the run's constitution (its request texts), and it could "
                              "not be loaded; restore the constitution file named in the run's config.yaml")
        compiled = load_patterns(patterns) if isinstance(patterns, str) else list(patterns)
        self.clean = Cleaner(compiled + (request_patterns(by_id.values()) if compiled else []))
        self.filters, self.principles, self.upto = filters, by_id, upto
        self.dropped: dict[str, Counter] = {}

    def __call__(self, rec: Record) -> Record:
        return clean_record(rec, self.clean, self.filters, self.principles, self.upto, self.dropped)

    def totals(self) -> Counter:
        return sum(self.dropped.values(), Counter())


def run_principles(config: Mapping) -> dict[str, Principle]:
    """The principles of a run's constitution (its config.yaml), or {} if it cannot be loaded."""
    from charter.inputs.constitution import load_constitution
    from charter.errors import CharterError

    source = config.get("constitution") or "default"
    try:
        return {p.id: p for p in load_constitution(str(source), "none").principles}
    except (CharterError, OSError) as exc:
        log.warning("warning: the run's constitution %s cannot be loaded (%s); request texts are unknown", source, exc)
        return {}


def filter_counts(records: Sequence[Record], config: Mapping) -> dict[str, Counter]:
    """What `export --filter all` (default patterns) would drop from a run, per principle."""
    principles = run_principles(config)
    filters = FILTERS if principles else tuple(f for f in FILTERS if f != "request-copy")
    return clean_records(records, "default", filters, principles).dropped
