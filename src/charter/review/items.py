"""What the review page shows: a run's chains (each round's revision is one item to mark) and
the comparisons of `label` outputs (each pair is one item). Each item has a stable key (a hash
of what it is), so a mark made before a restart finds its item again, and the digest of its texts.

A label output is found under the run (RUN/NAME.jsonl beside RUN/NAME.transcripts.jsonl, as
`charter label --out RUN/NAME.jsonl` leaves it) or given: its rows file or its transcripts file.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from charter.errors import InputError
from charter.runs.reviews import digest, labels_name, run_dir
from charter.types import Record

TRANSCRIPTS = ".transcripts.jsonl"


def item_key(kind: str, *parts: object) -> str:
    text = "\x00".join(str(p) for p in parts)
    return kind[0] + hashlib.sha1(text.encode("utf-8")).hexdigest()[:12]


@dataclass(frozen=True)
class RevisionItem:
    key: str
    record: str
    round: int
    principle: str
    digest: str

    @property
    def item(self) -> tuple:
        return ("revision", self.record, self.round)


@dataclass(frozen=True)
class PairItem:
    key: str
    labels: Path  # the transcripts file
    labels_name: str  # as marks name it
    pair: str
    prompt: list
    answers: tuple[str, str]
    shown_first: int  # which answer is shown as A: a fixed draw per pair, so A is not always label's first
    digest: str

    @property
    def item(self) -> tuple:
        return ("pair", str(self.labels), self.pair)


@dataclass
class Chain:
    record: Record
    items: list[RevisionItem]


def revision_items(rec: Record) -> list[RevisionItem]:
    before, items = rec.initial, []
    for k, rnd in enumerate(rec.rounds, 1):
        items.append(RevisionItem(item_key("revision", rec.id, k), rec.id, k, rnd.principle,
                                  digest(before, rnd.revision)))
        before = rnd.revision
    return items


def load_chains(run: str | Path, limit: int) -> tuple[list[Chain], bool]:
    """The first `limit` finished chains with rounds, and whether the run has more."""
    from charter.runs.runread import iter_run

    chains: list[Chain] = []
    for rec in iter_run(run):
        if rec.error is not None or not rec.rounds or rec.initial is None:
            continue  # nothing to judge: export skips failed records, helpfulness answers have no rounds
        if len(chains) >= limit:
            return chains, True
        chains.append(Chain(rec, revision_items(rec)))
    return chains, False


# ---- label comparisons ---------------------------------------------------------------------------


def transcripts_of(path: str | Path) -> Path:
    """A label output's transcripts file, from its rows file (labels.jsonl) or itself."""
    p = Path(path)
    if p.name.endswith(TRANSCRIPTS):
        found = p
    else:
        from charter.rlcai.label_store import transcripts_path

        found = transcripts_path(p)
    if not found.is_file():
        raise InputError(f"no label transcripts at {found}; pass the --out file of `charter label` (its "
                         f"NAME{TRANSCRIPTS} must be beside it) or that transcripts file", str(path))
    return found


def find_labels(run: str | Path) -> list[Path]:
    """The label outputs saved under the run (their transcripts files)."""
    return sorted(run_dir(run).glob(f"*{TRANSCRIPTS}"))


def pair_items(labels: Path, run: str | Path) -> Iterator[PairItem]:
    """The labelled comparisons of one transcripts file (failed prompts and skipped pairs left out)."""
    from charter.rlcai.label_store import comparisons, iter_lines

    name = labels_name(labels, run)
    for line in iter_lines(labels):
        for c in comparisons(line):
            if c.get("score_first") is None or c.get("error") is not None:
                continue
            a, b = c["answers"]
            shown = int(hashlib.sha1(c["id"].encode("utf-8")).hexdigest(), 16) & 1
            yield PairItem(item_key("pair", name, c["id"]), labels, name, c["id"], c["prompt"], (a, b), shown,
                           digest(a, b))


def load_pairs(run: str | Path, labels: list[Path], limit: int) -> tuple[list[PairItem], bool]:
    """The first `limit` comparisons over the label outputs, and whether there are more."""
    pairs: list[PairItem] = []
    for path in labels:
        for item in pair_items(path, run):
            if len(pairs) >= limit:
                return pairs, True
            pairs.append(item)
    return pairs, False
