"""One pass over a run's records: everything the report's sections show, in memory that does not
grow with the run (counters, sums, and a sample of chains), so a 300k-record run reports in one
read of its file and its page stays a few MB.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Iterable, Mapping

from charter.types import Record

CHAINS = 200  # chains shown in the page; the rest: `charter export RUN --format trace`
FAILURES = 500  # failed records listed by name
FILTER_CHUNK = 5000  # records per clean.filter_counts call


@dataclass
class Digest:
    records: int = 0
    kinds: Counter = field(default_factory=Counter)
    failures: int = 0
    tokens_out: int = 0
    tokens_in: int = 0
    first: Record | None = None
    max_rounds: int = 0
    principles: Counter = field(default_factory=Counter)  # rounds per principle, every record
    principles_ok: Counter = field(default_factory=Counter)  # the same over records without error
    lengths: list[list[float]] = field(default_factory=list)  # [sum of words, answers] after round k (0 = initial)
    dropped: dict[str, Counter] = field(default_factory=dict)  # what `export --filter all` would drop
    failed: list[tuple[str, str, str]] = field(default_factory=list)  # (id, kind, error), the first FAILURES
    sample: list[Record] = field(default_factory=list)  # the first CHAINS records
    cost: object = None  # charter.pipeline.cost.RunCost
    checks: int = 0  # stop-when-clean questions asked
    stopped: Counter = field(default_factory=Counter)  # round -> chains stop-when-clean ended there

    def length_series(self) -> list[float]:
        return [s / n for s, n in self.lengths if n]


def words(text: str | None) -> int:
    return len((text or "").split())


def digest(records: Iterable[Record], config: Mapping, gpus: int = 1) -> Digest:
    """The report's numbers from a stream of records (read once)."""
    from charter.pipeline.cost import run_cost

    d, chunk = Digest(), []

    def counted() -> Iterable[Record]:
        for r in records:
            _add(d, r)
            chunk.append(r)
            if len(chunk) >= FILTER_CHUNK:
                _filter(d, chunk, config)
            yield r

    d.cost = run_cost(counted(), gpus)
    _filter(d, chunk, config)
    d.sample.sort(key=lambda r: r.kind != "red_team")
    return d


def _add(d: Digest, r: Record) -> None:
    d.records += 1
    d.kinds[r.kind] += 1
    d.tokens_out += r.tokens.get("completion", 0)
    d.tokens_in += r.tokens.get("prompt", 0)
    d.first = d.first or r
    d.max_rounds = max(d.max_rounds, len(r.rounds))
    d.principles.update(x.principle for x in r.rounds)
    d.checks += len(r.p_problem) if isinstance(r.p_problem, list) else 0
    if isinstance(r.stopped, dict):
        d.stopped[r.stopped.get("round")] += 1
    if len(d.sample) < CHAINS:
        d.sample.append(r)
    if r.error is not None:
        d.failures += 1
        if len(d.failed) < FAILURES:
            d.failed.append((r.id, r.kind, r.error))
        return
    d.principles_ok.update(x.principle for x in r.rounds)
    if r.kind == "red_team" and r.initial is not None:
        answers = [r.initial] + [x.revision for x in r.rounds]
        while len(d.lengths) < len(answers):
            d.lengths.append([0.0, 0])
        for k, text in enumerate(answers):
            d.lengths[k][0] += words(text)
            d.lengths[k][1] += 1


def _filter(d: Digest, chunk: list[Record], config: Mapping) -> None:
    from charter.export.clean import filter_counts

    if chunk:
        for principle, counts in filter_counts(chunk, config).items():
            d.dropped.setdefault(principle, Counter()).update(counts)
        chunk.clear()
