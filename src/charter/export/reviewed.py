"""`charter export --drop-reviewed-worse`: rounds a person marked worse than the answer before
them leave the export, and so does every later round of that chain, since each later revision
revises the rejected one. A chain cut at round K keeps rounds 1..K-1 (its final answer is round
K-1's revision, or the initial answer for K = 1, which gives no SFT or DPO row).

Every reviewer under RUN/reviews/ counts: a round is dropped when anyone's last mark on it is
`worse`. A mark made on texts that have changed since (the record was generated again) is stale
and ignored.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from pathlib import Path

from charter.errors import ConfigError
from charter.runs.reviews import digest, read_marks, review_files
from charter.types import Record

log = logging.getLogger("charter.review")


@dataclass
class WorseRounds:
    """The rounds marked worse in a run, and what cutting them dropped (for the dataset card)."""

    run: str
    worse: dict[str, dict[int, set[str]]] = field(default_factory=dict)  # record -> round -> digests
    reviewers: list[str] = field(default_factory=list)
    marked: int = 0  # rounds dropped because they were marked worse
    later: int = 0  # rounds dropped because an earlier round of their chain was
    stale: int = 0  # worse marks whose texts changed since

    @classmethod
    def of(cls, run: str | Path) -> "WorseRounds":
        if not review_files(run):
            raise ConfigError(f"--drop-reviewed-worse: {run} has no reviews (RUN/reviews/NAME.jsonl); mark its "
                              "revisions with `charter review RUN` first, or drop the flag")
        marks = read_marks(run)
        self = cls(str(run), reviewers=marks.reviewers)
        for m in marks.revisions:
            if m.mark == "worse":
                self.worse.setdefault(m.record, {}).setdefault(m.round, set()).add(m.digest)
        return self

    def __call__(self, rec: Record) -> Record:
        """`rec` without its first round marked worse and the rounds after it."""
        marked = self.worse.get(rec.id)
        if not marked or rec.error is not None:
            return rec
        before = rec.initial
        for k, rnd in enumerate(rec.rounds, 1):
            digests = marked.get(k, set())
            if digest(before, rnd.revision) in digests:
                self.marked += 1
                self.later += len(rec.rounds) - k
                final = rec.rounds[k - 2].revision if k > 1 else rec.initial
                return replace(rec, rounds=rec.rounds[:k - 1], final=final)
            self.stale += bool(digests)
            before = rnd.revision
        return rec

    def note(self) -> str:
        """One line for the dataset card."""
        who = ", ".join(self.reviewers) or "no one"
        stale = f"; {self.stale} stale marks ignored" if self.stale else ""
        return (f"dropped {self.marked + self.later} rounds: {self.marked} marked worse than the answer before "
                f"them, {self.later} after those in their chains (reviewers: {who}){stale}")

    def warn(self) -> None:
        if self.stale:
            log.warning("warning: %d worse marks in %s/reviews were made on texts that have changed since; they were "
                        "ignored (review those chains again)", self.stale, self.run)
