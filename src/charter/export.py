"""Records -> training rows in the ecosystem's formats (TRL conversational), JSONL or Parquet.

- sft:   {"messages": [...prompt, {"role": "assistant", "content": revision}]}, red-team revisions
         mixed with helpfulness samples; `revision="final"` or `"all"` (rounds 1..upto: SL-CAI-n)
- dpo:   {"prompt": [...], "chosen": [assistant revision], "rejected": [assistant initial]}
- trace: the full records (critiques included) for inspection
"""
from __future__ import annotations

import random
from pathlib import Path
from typing import Any, Sequence

from charter.errors import ConfigError, RunError
from charter.jsonl import atomic_write, dumps
from charter.types import Record

FORMATS = ("sft", "dpo", "trace")


def _assistant(text: str) -> dict[str, str]:
    return {"role": "assistant", "content": text}


SFT_OPTIONS = ("revision", "upto", "helpful_ratio", "seed")  # what only `--format sft` uses
SUFFIXES = (".jsonl", ".parquet")


def check_sft_options(revision: str = "final", upto: int | None = None, helpful_ratio: float | None = None,
                      seed: int = 0) -> None:
    if revision not in ("final", "all"):
        raise ConfigError(f"--revision must be final or all, got {revision!r}")
    if upto is not None and upto < 1:
        raise ConfigError(f"--upto must be >= 1 (the last round to use), got {upto}")
    if helpful_ratio is not None and not 0 <= helpful_ratio < 1:
        raise ConfigError(f"--helpful-ratio must be in [0, 1), got {helpful_ratio}")


def is_export(head: bytes) -> bool:
    """An earlier export (rows start with the keys the writers put first, or Parquet's magic)."""
    return head.startswith((b"PAR1", b'{"messages": [', b'{"prompt": [', b'{"id": "'))


def check_out(out: str | Path, run: str | Path) -> Path:
    """The export target: a .jsonl/.parquet file that is none of the run's own files, no symlink,
    and no file other than an earlier export (charter.files.check_out)."""
    from charter.files import check_out as check

    path = Path(out)
    if path.suffix.lower() not in SUFFIXES:
        raise ConfigError(f"--out must end in .jsonl or .parquet, got '{path.name}'")
    if path.is_dir() and not path.is_symlink():
        raise ConfigError(f"--out {out} is a directory; give a file name ending in .jsonl or .parquet")
    folder = Path(run) if Path(run).is_dir() else Path(run).parent
    return check(path, "Charter export", is_export, [run], example=folder / "sft.jsonl")


def revisions(rec: Record, revision: str, upto: int | None) -> list[str]:
    rounds = rec.rounds[:upto] if upto else rec.rounds
    if not rounds:
        return []
    return [r.revision for r in rounds] if revision == "all" else [rounds[-1].revision]


def sft_rows(records: Sequence[Record], revision: str = "final", upto: int | None = None,
             helpful_ratio: float | None = None, seed: int = 0) -> list[dict[str, Any]]:
    """Red-team revisions plus helpfulness answers; `helpful_ratio` = share of helpful rows."""
    ok = [r for r in records if r.error is None]
    red = [{"messages": r.prompt + [_assistant(t)], "kind": "red_team", "id": r.id}
           for r in ok if r.kind == "red_team" for t in revisions(r, revision, upto) if t]
    helpful = [{"messages": r.prompt + [_assistant(r.initial)], "kind": "helpful", "id": r.id}
               for r in ok if r.kind == "helpful" and r.initial]
    check_sft_options(revision, upto, helpful_ratio, seed)
    rng = random.Random(seed)
    if helpful_ratio is not None:
        want = round(len(red) * helpful_ratio / (1 - helpful_ratio))
        helpful = rng.sample(helpful, min(want, len(helpful)))
    rows = red + helpful
    rng.shuffle(rows)
    return rows


def dpo_rows(records: Sequence[Record]) -> list[dict[str, Any]]:
    """Final revision preferred over the initial answer (pairs that differ only)."""
    return [{"prompt": r.prompt, "chosen": [_assistant(r.final)], "rejected": [_assistant(r.initial)], "id": r.id}
            for r in records
            if r.error is None and r.kind == "red_team" and r.final and r.initial and r.final != r.initial]


def trace_rows(records: Sequence[Record]) -> list[dict[str, Any]]:
    return [r.to_dict() for r in records]


def write_rows(rows: list[dict[str, Any]], out: str | Path) -> Path:
    """Written whole (charter.jsonl.atomic_write): a failed export never leaves half a file behind,
    and never replaces a run's own file or a symlink's target (charter.files.check_out)."""
    from charter.files import check_out as check

    path = Path(out)
    if path.suffix.lower() not in SUFFIXES:
        raise ConfigError(f"--out must end in .jsonl or .parquet, got '{path.name}'")
    check(path, "Charter export")
    return atomic_write(path, lambda tmp: _write(rows, tmp, path.suffix.lower()))


def _write(rows: list[dict[str, Any]], path: Path, suffix: str) -> None:
    if suffix == ".jsonl":
        path.write_text("".join(dumps(r) for r in rows), encoding="utf-8")
    else:
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.Table.from_pylist(rows), path)


WHY_EMPTY = {
    "sft": "no finished red-team record has a revision and there are no helpfulness answers",
    "dpo": "no finished red-team record has a final revision that differs from its initial answer "
           "(a run made with --rounds 0 has none)",
    "trace": "the run has no records",
}


def export(records: Sequence[Record], fmt: str, out: str | Path, **options: Any) -> int:
    if fmt == "sft":
        rows = sft_rows(records, **options)
    elif fmt == "dpo":
        rows = dpo_rows(records)
    elif fmt == "trace":
        rows = trace_rows(records)
    else:
        raise ConfigError(f"unknown export format '{fmt}'; choose one of {FORMATS}")
    if not rows:
        raise RunError(f"no {fmt} rows to write: {WHY_EMPTY[fmt]}; nothing written")
    write_rows(rows, out)
    return len(rows)
