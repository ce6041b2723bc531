"""Records -> training rows in the ecosystem's formats (TRL conversational), JSONL or Parquet.

- sft:   {"messages": [...prompt, {"role": "assistant", "content": revision}]}, red-team revisions
         mixed with helpfulness samples; `revision="final"` or `"all"` (rounds 1..upto: SL-CAI-n)
- dpo:   {"prompt": [...], "chosen": [assistant revision], "rejected": [assistant initial]}
- trace: the full records (critiques included) for inspection
"""
from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any, Sequence

from charter.errors import ConfigError
from charter.types import Record

FORMATS = ("sft", "dpo", "trace")


def _assistant(text: str) -> dict[str, str]:
    return {"role": "assistant", "content": text}


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
    rng = random.Random(seed)
    if helpful_ratio is not None:
        if not 0 <= helpful_ratio < 1:
            raise ConfigError(f"--helpful-ratio must be in [0, 1), got {helpful_ratio}")
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
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        with path.open("w", encoding="utf-8") as fh:
            for row in rows:
                fh.write(json.dumps(row, ensure_ascii=False) + "\n")
    elif suffix == ".parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.Table.from_pylist(rows), path)
    else:
        raise ConfigError(f"--out must end in .jsonl or .parquet, got '{path.name}'")
    return path


def export(records: Sequence[Record], fmt: str, out: str | Path, **options: Any) -> int:
    if fmt == "sft":
        rows = sft_rows(records, **options)
    elif fmt == "dpo":
        rows = dpo_rows(records)
    elif fmt == "trace":
        rows = trace_rows(records)
    else:
        raise ConfigError(f"unknown export format '{fmt}'; choose one of {FORMATS}")
    write_rows(rows, out)
    return len(rows)
