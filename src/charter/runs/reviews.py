"""A person's marks on a run: one JSONL file per reviewer, RUN/reviews/NAME.jsonl, each mark
appended and fsynced as it is made (charter.jsonl), so closing the page or killing the server
loses none. Two kinds of line:

    {"kind": "revision", "record": ID, "round": K, "principle": P, "mark": "better"|"worse"|"same",
     "digest": ..., "reviewer": NAME, "time": ...}
        round K's revision judged against the answer before it (the initial answer for K = 1);
    {"kind": "pair", "labels": FILE, "pair": "PROMPT:i-j", "chosen": 0|1, "shown_first": 0|1,
     "digest": ..., "reviewer": NAME, "time": ...}
        which answer of a `label` comparison is better: `chosen` indexes the answers as label
        stored them (FILE: its transcripts file, relative to the run when inside it).

A null mark (or chosen) clears the item. On read the last line of an item wins, per reviewer.
`digest` hashes the texts that were judged, so a mark on texts that changed since (a record
generated again) is recognised as stale by whoever applies it (`stale`), never applied.

The marks are a run's file like its records, so they live here, below the jobs that read them
(export --drop-reviewed-worse, eval-labeler --reviews); the page that writes them is charter.review.
"""
from __future__ import annotations

import hashlib
import logging
import re
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Union

from charter.errors import ConfigError, InputError
from charter.jsonl import append_jsonl, loads, read_jsonl, set_aside

log = logging.getLogger("charter.review")

REVIEWS = "reviews"  # the folder in a run that holds the marks
REVISION_MARKS = ("better", "worse", "same")
ASIDE = ".bad.jsonl"  # damaged lines of NAME.jsonl are moved to NAME.bad.jsonl (kept, never read as marks)
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


@dataclass(frozen=True)
class RevisionMark:
    reviewer: str
    record: str
    round: int  # 1-based: round K's revision against the answer before it
    mark: str  # better | worse | same
    principle: str
    digest: str
    time: str = ""

    @property
    def item(self) -> tuple:
        return ("revision", self.record, self.round)


@dataclass(frozen=True)
class PairMark:
    reviewer: str
    labels: Path  # the label run's transcripts file
    pair: str  # the comparison's id, "PROMPT:i-j"
    chosen: int  # 0: the first answer as label stored it is better; 1: the second
    shown_first: int  # which answer the page showed as A (position bias)
    digest: str
    time: str = ""

    @property
    def item(self) -> tuple:
        return ("pair", str(self.labels), self.pair)


Mark = Union[RevisionMark, PairMark]


@dataclass
class Marks:
    """The marks in force (each reviewer's last word on each item; cleared items left out)."""

    revisions: list[RevisionMark] = field(default_factory=list)
    pairs: list[PairMark] = field(default_factory=list)
    files: list[Path] = field(default_factory=list)

    @property
    def reviewers(self) -> list[str]:
        return sorted({m.reviewer for m in [*self.revisions, *self.pairs]})

    def summary(self) -> dict[str, Any]:
        """Revision marks counted overall, by round and by principle; pair choices counted."""
        by_round: dict[str, Counter] = {}
        by_principle: dict[str, Counter] = {}
        for m in self.revisions:
            by_round.setdefault(str(m.round), Counter())[m.mark] += 1
            by_principle.setdefault(m.principle, Counter())[m.mark] += 1
        total = Counter(m.mark for m in self.revisions)
        return {"reviewers": self.reviewers, "revisions": {k: total.get(k, 0) for k in REVISION_MARKS},
                "by_round": {k: dict(v) for k, v in sorted(by_round.items(), key=lambda kv: int(kv[0]))},
                "by_principle": {k: dict(v) for k, v in sorted(by_principle.items())}, "pairs": len(self.pairs)}


def digest(*texts: str | None) -> str:
    """What a mark was made on: the judged texts, hashed."""
    return hashlib.sha256("\x00".join(t or "" for t in texts).encode("utf-8")).hexdigest()[:16]


def run_dir(run: str | Path) -> Path:
    p = Path(run)
    return p.parent if p.name == "records.jsonl" else p


def check_reviewer(name: str) -> str:
    if not isinstance(name, str) or not _NAME.fullmatch(name) or name.endswith(".bad"):
        raise ConfigError(f"--reviewer {name!r} cannot name a marks file (RUN/{REVIEWS}/NAME.jsonl): use letters, "
                          "digits, '.', '_' or '-' (at most 64, starting with a letter or digit)")
    return name


def marks_file(run: str | Path, reviewer: str) -> Path:
    return run_dir(run) / REVIEWS / f"{check_reviewer(reviewer)}.jsonl"


def labels_name(labels: Path, run: str | Path) -> str:
    """How a mark names a label transcripts file: relative to the run when inside it, else absolute."""
    labels, folder = Path(labels).resolve(), run_dir(run).resolve()
    return str(labels.relative_to(folder)) if labels.is_relative_to(folder) else str(labels)


# ---- reading -----------------------------------------------------------------------------------


def parse_mark(d: Any, folder: Path) -> tuple[tuple, Mark | None]:
    """(the item's key, its mark or None when cleared) of one line; ValueError says what is wrong.
    `folder`: the run directory, which relative label paths are inside."""
    if not isinstance(d, dict) or d.get("kind") not in ("revision", "pair"):
        raise ValueError("not a review mark (a JSON object with 'kind': revision or pair)")
    reviewer = d.get("reviewer")
    if not isinstance(reviewer, str) or not reviewer or not isinstance(d.get("digest"), str):
        raise ValueError("a mark needs its 'reviewer' and 'digest'")
    when = d.get("time") if isinstance(d.get("time"), str) else ""
    if d["kind"] == "revision":
        record, k, mark = d.get("record"), d.get("round"), d.get("mark")
        if not isinstance(record, str) or not isinstance(k, int) or isinstance(k, bool) or k < 1:
            raise ValueError("a revision mark needs 'record' (text) and 'round' (1 or more)")
        if mark is not None and mark not in REVISION_MARKS:
            raise ValueError(f"'mark' must be one of {', '.join(REVISION_MARKS)} or null, got {mark!r}")
        key = (reviewer, "revision", record, k)
        return key, mark and RevisionMark(reviewer, record, k, mark, str(d.get("principle") or ""), d["digest"], when)
    labels, pair, chosen = d.get("labels"), d.get("pair"), d.get("chosen")
    if not isinstance(labels, str) or not isinstance(pair, str) or chosen not in (0, 1, None) or chosen is False:
        raise ValueError("a pair mark needs 'labels', 'pair' (texts) and 'chosen' (0, 1 or null)")
    path = Path(labels) if Path(labels).is_absolute() else folder / labels
    key = (reviewer, "pair", str(path), pair)
    shown = d.get("shown_first") if d.get("shown_first") in (0, 1) else 0
    return key, None if chosen is None else PairMark(reviewer, path, pair, int(chosen), int(shown), d["digest"], when)


def review_files(run_or_file: str | Path) -> list[Path]:
    """A marks file as it is, or every reviewer's file of a run (none yet: [])."""
    p = Path(run_or_file)
    if p.is_file() and p.name != "records.jsonl":
        return [p]
    if not p.exists():
        raise InputError("not found; pass a run directory (its reviews/ folder is read) or a marks file", str(p))
    folder = run_dir(p) / REVIEWS
    return sorted(f for f in folder.glob("*.jsonl") if not f.name.endswith(ASIDE)) if folder.is_dir() else []


def read_marks(run_or_file: str | Path) -> Marks:
    """The marks of a run (every reviewer under RUN/reviews/) or of one marks file: each reviewer's
    last mark per item, cleared items left out. A damaged line is an InputError naming file:line."""
    files = review_files(run_or_file)
    latest: dict[tuple, Mark | None] = {}
    for path in files:
        folder = (path.parent.parent if path.parent.name == REVIEWS else path.parent).resolve()
        for n, d in read_jsonl(path):
            try:
                key, mark = parse_mark(d, folder)
            except ValueError as exc:
                raise InputError(f"{exc}; fix or remove the line", str(path), n) from None
            latest.pop(key, None)  # the last word moves to the end: marks keep the order they were made in
            latest[key] = mark
    marks = [m for m in latest.values() if m is not None]
    return Marks([m for m in marks if isinstance(m, RevisionMark)], [m for m in marks if isinstance(m, PairMark)],
                  files)


# ---- writing -----------------------------------------------------------------------------------


class MarkLog:
    """One reviewer's marks file, appended to as marks are made (one fsynced line each).

    Opening it sets aside damaged lines and a torn tail (a killed writer) to NAME.bad.jsonl, so
    the next append starts on a line of its own. Appends from the server's threads are serialised."""

    def __init__(self, run: str | Path, reviewer: str):
        self.reviewer, self.run = reviewer, run_dir(run).resolve()
        self.path = marks_file(run, reviewer)
        self._lock = threading.Lock()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        bad = set_aside(self.path, self.path.with_name(self.path.stem + ASIDE), self._check)
        if bad:
            log.warning("warning: %d damaged line(s) of %s moved to %s", len(bad), self.path,
                        self.path.with_name(self.path.stem + ASIDE))

    def _check(self, raw: bytes) -> None:
        parse_mark(loads(raw), self.run)

    def add(self, row: dict) -> dict:
        """Append one mark line (reviewer and time filled in); returns it."""
        row = {**row, "reviewer": self.reviewer, "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        parse_mark(row, self.run)  # never write a line the reader would refuse
        with self._lock:
            append_jsonl(self.path, [row])
        return row

    def read(self) -> Marks:
        return read_marks(self.path) if self.path.exists() else Marks()


def stale(marks: Iterable[Mark], current: dict[tuple, str]) -> list[Mark]:
    """The marks whose item is known (`current`: item -> digest of its texts now) but changed since."""
    return [m for m in marks if m.item in current and current[m.item] != m.digest]


__all__ = ["Marks", "RevisionMark", "PairMark", "MarkLog", "read_marks", "marks_file", "digest", "REVISION_MARKS",
           "check_reviewer", "labels_name", "stale"]
