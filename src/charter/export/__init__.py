"""Records -> training rows in the ecosystem's formats (TRL conversational), JSONL or Parquet.

- sft:   {"messages": [...prompt, {"role": "assistant", "content": revision}]}, red-team revisions
         mixed with helpfulness samples; `revision="final"` or `"all"` (rounds 1..upto: SL-CAI-n)
- dpo:   {"prompt": [...], "chosen": [assistant revision], "rejected": [assistant initial]}
- trace: the full records (critiques included) for inspection

`export_run(ExportConfig)` is the `charter export` command: it cleans boilerplate from answers and
revisions and drops failed rounds (charter.export.clean), can hold out a test split, writes a dataset
card beside the rows (charter.export.card) and can push both to the Hub.
"""
from __future__ import annotations

import logging
import random
from array import array
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, MutableSequence, Sequence

from charter.config import Config, setting
from charter.errors import ConfigError, RunError
from charter.jsonl import dumps
from charter.types import Record

log = logging.getLogger("charter.export")
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


KIND = "Charter export"  # what charter.runs.files records an export as


def check_out(out: str | Path, run: str | Path) -> Path:
    """The export target: a .jsonl/.parquet file that is none of the run's own files, no symlink,
    and no existing file other than an earlier export recorded as one (charter.runs.files.check_out)."""
    from charter.runs.files import check_out as check

    path = Path(out)
    if path.suffix.lower() not in SUFFIXES:
        raise ConfigError(f"--out must end in .jsonl or .parquet, got '{path.name}'")
    if path.is_dir() and not path.is_symlink():
        raise ConfigError(f"--out {out} is a directory; give a file name ending in .jsonl or .parquet")
    folder = Path(run) if Path(run).is_dir() else Path(run).parent
    return check(path, KIND, inputs=[run], example=folder / "sft.jsonl")


def revisions(rec: Record, revision: str, upto: int | None) -> list[str]:
    rounds = rec.rounds[:upto] if upto else rec.rounds
    if not rounds:
        return []
    return [r.revision for r in rounds] if revision == "all" else [rounds[-1].revision]


def record_rows(rec: Record, fmt: str, revision: str = "final", upto: int | None = None) -> list[dict[str, Any]]:
    """The rows one record gives in a format (sft, dpo) before any mixing; a failed record gives none."""
    if fmt == "trace":
        from charter.redact import redact

        return [{**rec.to_dict(), "error": redact(rec.error)}]  # runs written before redaction
    if rec.error is not None:
        return []
    if fmt == "dpo":
        return [{"prompt": rec.prompt, "chosen": [_assistant(rec.final)], "rejected": [_assistant(rec.initial)],
                 "id": rec.id}] if rec.kind == "red_team" and rec.final and rec.initial and rec.final != rec.initial else []
    if rec.kind == "red_team":
        return [{"messages": rec.prompt + [_assistant(t)], "kind": "red_team", "id": rec.id}
                for t in revisions(rec, revision, upto) if t]
    return [{"messages": rec.prompt + [_assistant(rec.initial)], "kind": "helpful", "id": rec.id}] if rec.initial else []


def mix(red: MutableSequence, helpful: Sequence, helpful_ratio: float | None = None, seed: int = 0) -> MutableSequence:
    """Red-team plus helpfulness rows (or row indices), a seeded sample of the helpfulness ones when
    `helpful_ratio` is their share, shuffled: the same draws for rows and for their indices."""
    rng = random.Random(seed)
    if helpful_ratio is not None:
        want = round(len(red) * helpful_ratio / (1 - helpful_ratio))
        helpful = rng.sample(helpful, min(want, len(helpful)))
    rows = red[:]
    rows.extend(helpful)
    rng.shuffle(rows)
    return rows


def sft_rows(records: Sequence[Record], revision: str = "final", upto: int | None = None,
             helpful_ratio: float | None = None, seed: int = 0) -> list[dict[str, Any]]:
    """Red-team revisions plus helpfulness answers; `helpful_ratio` = share of helpful rows."""
    check_sft_options(revision, upto, helpful_ratio, seed)
    rows = [row for r in records for row in record_rows(r, "sft", revision, upto)]
    return mix([r for r in rows if r["kind"] == "red_team"], [r for r in rows if r["kind"] == "helpful"],
               helpful_ratio, seed)


def dpo_rows(records: Sequence[Record]) -> list[dict[str, Any]]:
    """Final revision preferred over the initial answer (pairs that differ only)."""
    return [row for r in records for row in record_rows(r, "dpo")]


def trace_rows(records: Sequence[Record]) -> list[dict[str, Any]]:
    return [row for r in records for row in record_rows(r, "trace")]


def write_rows(rows: list[dict[str, Any]], out: str | Path) -> Path:
    """Written whole (charter.jsonl.atomic_write): a failed export never leaves half a file behind,
    and never replaces anything but an earlier export (charter.runs.files.check_out)."""
    from charter.runs.files import check_out as check, write_out

    path = Path(out)
    if path.suffix.lower() not in SUFFIXES:
        raise ConfigError(f"--out must end in .jsonl or .parquet, got '{path.name}'")
    check(path, KIND)
    return write_out(path, KIND, lambda tmp: _write(rows, tmp, path.suffix.lower()))


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
    """Rows of `records` (raw text; `export_run` cleans and filters) written to `out`; their number."""
    rows = rows_for(records, fmt, **options)
    write_rows(rows, out)
    return len(rows)


def rows_for(records: Sequence[Record], fmt: str, **options: Any) -> list[dict[str, Any]]:
    """The rows of one format; none at all is a RunError saying why."""
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
    return rows


# ---- the `charter export` command: clean, filter, split, card, push ------------------------------


@dataclass
class ExportConfig(Config):
    """Everything that defines a `charter export` (sft-only settings stay None unless given)."""

    run: str = setting("", "run directory made by `charter generate`", flag="run")
    format: str = setting("sft", "sft (default), dpo or trace rows", choices=FORMATS)
    out: str = setting("", "output file ending in .jsonl or .parquet")
    revision: str | None = setting(None, "sft: final revision (default), or every round's (SL-CAI-n)",
                                   choices=("final", "all"))
    upto: int | None = setting(None, "sft: use rounds 1..N only (N >= 1)")
    helpful_ratio: float | None = setting(None, "sft: share of helpfulness rows in the mix (default: all of them)")
    seed: int | None = setting(None, "sft: seed of the shuffle and the helpfulness sample; with --test-share "
                               "also of the split (default 0)")
    clean_patterns: str = setting("default", "boilerplate removed from answers and revisions (sft, dpo): "
                                  "'default' (ours), 'none', or a YAML file listing regexes")
    filter: list[str] = setting([], "drop rounds (sft, dpo): empty, unchanged, request-copy, or all",
                                cli={"nargs": "+", "metavar": "FILTER"})
    drop_reviewed_worse: bool = setting(False, "drop rounds a reviewer marked worse in `charter review` (RUN/reviews/), "
                                        "and the later rounds of their chains, which revise them (sft, dpo)")
    guard: str = setting("drop", "records a guard classifier blocked (`generate --guard`): drop (default) or keep "
                         "them (sft, dpo; trace keeps every record)", choices=("drop", "keep"))
    test_share: float | None = setting(None, "hold out this share of prompts as a test split: OUT's name "
                                       "with -train / -test (e.g. 0.1)", bounds="(0, 1)")
    card: bool = setting(True, "write README.md (a Hub dataset card) beside the output",
                         flag={"--no-card": (False, "do not write the dataset card README.md")})
    license: str = setting("other", "the card's license: a Hub license id such as apache-2.0 or cc-by-4.0 "
                           "(default other)")
    language: list[str] = setting(["en"], "the card's languages (default en)", cli={"nargs": "+"})
    push_to_hub: str | None = setting(None, "also upload the rows and the card to this Hub dataset repo (ORG/NAME)")
    private: bool = setting(False, "--push-to-hub: create the repo private")

    REQUIRED = ("run", "out")

    def check(self, where: str) -> None:
        from charter.export.clean import parse_filters

        only = [k for k in SFT_OPTIONS if getattr(self, k) is not None and not (k == "seed" and self.test_share)]
        if only and self.format != "sft":
            flags = ", ".join("--" + k.replace("_", "-") for k in only)
            verb, it = ("applies", "it") if len(only) == 1 else ("apply", "them")
            raise ConfigError(f"{flags} only {verb} to --format sft; drop {it} for --format {self.format}")
        check_sft_options(**{k: getattr(self, k) for k in SFT_OPTIONS if getattr(self, k) is not None})
        if parse_filters(self.filter) and self.format == "trace":
            raise ConfigError("--filter applies to --format sft and dpo (trace keeps the raw records); drop it")
        if self.drop_reviewed_worse and self.format == "trace":
            raise ConfigError("--drop-reviewed-worse applies to --format sft and dpo (trace keeps the raw records); "
                              "drop it")


@dataclass
class ExportResult:
    format: str
    files: dict[str, Path]  # split -> file
    rows: dict[str, int]  # split -> rows
    dropped: dict[str, Counter] = field(default_factory=dict)  # principle -> {filter: rounds}
    filters: tuple[str, ...] = ()
    failed: int = 0  # records skipped because generation failed (sft, dpo)
    card: Path | None = None
    pushed: str | None = None
    reviewed: str | None = None  # --drop-reviewed-worse: what it dropped (charter.export.reviewed)

    def dropped_totals(self) -> Counter:
        return sum(self.dropped.values(), Counter())


def split_files(out: str | Path, test_share: float | None) -> dict[str, Path]:
    """{'train': OUT}, or OUT-train / OUT-test beside it: names `datasets` reads as two splits."""
    path = Path(out)
    if not test_share:
        return {"train": path}
    return {s: path.with_name(f"{path.stem}-{s}{path.suffix}") for s in ("train", "test")}


def split_by_prompt(keys: Sequence[int], order: Sequence[int] | None, test_share: float, seed: int = 0) -> dict[str, Any]:
    """Train/test by prompt (all rows of a prompt land in one split, so none leaks): row indices in
    `order` (all rows if None) per split, from each row's prompt key; the test prompts are a seeded
    draw of round(share x prompts) keys (at least 1, never all), 8 bytes per row in memory."""
    import numpy as np

    rows = np.arange(len(keys)) if order is None else np.asarray(order, dtype=np.int64)
    row_keys = np.asarray(keys, dtype=np.int64)[rows]
    distinct = array("q", np.unique(row_keys).tobytes())
    if len(distinct) < 2:
        raise RunError(f"--test-share needs rows of at least 2 prompts, the export has {len(distinct)}; "
                       "export without --test-share")
    random.Random(seed).shuffle(distinct)
    test = np.frombuffer(distinct, dtype=np.int64)[:min(len(distinct) - 1, max(1, round(len(distinct) * test_share)))]
    held = np.isin(row_keys, test)
    return {"train": rows[~held], "test": rows[held]}


def stage_rows(cfg: ExportConfig, records: Iterable[Record], run_config: dict, staged: Any, summary: Any,
               reviewed: Any = None) -> tuple:
    """One pass over the run: each record counted (the card), cleaned and filtered, its rows staged.
    Returns the cleaner (what it dropped) and the sft order (mixed and shuffled row indices; None
    for dpo and trace, whose rows keep the run's order)."""
    from charter.export.clean import RecordCleaner, parse_filters, run_principles

    clean = None
    if cfg.format != "trace":
        filters = parse_filters(cfg.filter)
        principles = run_principles(run_config) if cfg.clean_patterns != "none" or "request-copy" in filters else {}
        clean = RecordCleaner(cfg.clean_patterns, filters, principles, cfg.upto if cfg.format == "sft" else None)
    kinds = {"red_team": array("q"), "helpful": array("q")}
    for rec in records:
        summary.add(rec)
        rec = reviewed(rec) if reviewed else rec  # --drop-reviewed-worse: charter.export.reviewed.WorseRounds
        if rec.guard and cfg.guard == "drop" and cfg.format != "trace":
            continue
        for row in record_rows(clean(rec) if clean else rec, cfg.format, cfg.revision or "final"):
            i = staged.add(row, row["prompt"] if "prompt" in row else row["messages"][:-1])
            if cfg.format == "sft":
                kinds[row["kind"]].append(i)
    staged.finish()
    order = mix(kinds["red_team"], kinds["helpful"], cfg.helpful_ratio, cfg.seed or 0) if cfg.format == "sft" else None
    return clean, order


def export_run(cfg: ExportConfig) -> ExportResult:
    """`charter export`: the run's rows, cleaned and filtered, in one file (or a train/test pair),
    a dataset card beside them, and optionally the same pushed to the Hub. The run is streamed
    (charter.runs.runread.iter_run): memory stays flat with the number of records (charter.export.staging).
    Ctrl-C or SIGTERM stops it as an Interrupted error, its staged and temporary files removed."""
    import signal

    from charter.pipeline.jobrun import Interrupted, stop_signals

    with stop_signals() as got:
        try:
            return _export_run(cfg)
        except KeyboardInterrupt:
            raise Interrupted("interrupted: the export stopped; a file it had not finished is as it was before, "
                              "run the same command again", got.get("signal", signal.SIGINT)) from None


def export_rows(cfg: ExportConfig) -> list[dict[str, Any]]:
    """The rows `export_run(cfg)` writes, in its order, read back from a private temporary file (no
    card, split or push): `train sft --data RUN` trains on exactly what `charter export` would write."""
    import json
    import tempfile
    from dataclasses import replace

    with tempfile.TemporaryDirectory(prefix="charter-export-") as tmp:
        out = Path(tmp) / f"{cfg.format}.jsonl"
        export_run(replace(cfg, out=str(out), card=False, test_share=None, push_to_hub=None))
        with out.open(encoding="utf-8") as fh:
            return [json.loads(line) for line in fh]


def _worse_rounds(cfg: ExportConfig) -> Any:
    """--drop-reviewed-worse: the rounds people marked worse (None without the flag)."""
    if not cfg.drop_reviewed_worse:
        return None
    from charter.export.reviewed import WorseRounds

    return WorseRounds.of(cfg.run)


def _export_run(cfg: ExportConfig) -> ExportResult:
    cfg.validate()  # a config made in Python has not been checked yet
    from charter.export import card
    from charter.export.clean import parse_filters
    from charter.runs.files import mark_written
    from charter.export.staging import Staging
    from charter.runs.runread import iter_run, load_run_config, records_file

    files = {s: check_out(p, cfg.run) for s, p in split_files(cfg.out, cfg.test_share).items()}
    card_path = card.check_card(Path(cfg.out).parent, cfg.run) if cfg.card else None
    records_file(cfg.run)  # no run: say so before any file is made
    folder = Path(cfg.run) if Path(cfg.run).is_dir() else Path(cfg.run).parent
    run_config = load_run_config(folder, strict=False)
    if cfg.format == "sft":
        check_sft_options(**{k: getattr(cfg, k) for k in SFT_OPTIONS if getattr(cfg, k) is not None})
    summary = card.RunSummary()
    reviewed = _worse_rounds(cfg)
    with Staging(files["train"], parquet=Path(cfg.out).suffix.lower() == ".parquet") as staged:
        clean, order = stage_rows(cfg, iter_run(cfg.run), run_config, staged, summary, reviewed)
        if cfg.upto and cfg.upto > summary.rounds:
            log.warning("warning: --upto %d is more than the run's %d rounds; all rounds are used", cfg.upto, summary.rounds)
        if not (len(order) if order is not None else len(staged)):
            gone = sum(clean.totals().values()) if clean else 0
            raise RunError(f"no {cfg.format} rows to write: {WHY_EMPTY[cfg.format]}; nothing written"
                           + (f" (the filters dropped {gone} rounds)" if gone else ""))
        splits = split_by_prompt(staged.keys, order, cfg.test_share, cfg.seed or 0) if cfg.test_share else {"train": order}
        for s, path in files.items():
            mark_written(staged.write(path, splits[s]), KIND)
    rows = {s: len(o) if o is not None else len(staged) for s, o in splits.items()}
    result = ExportResult(cfg.format, files, rows, clean.dropped if clean else {}, parse_filters(cfg.filter),
                          summary.failed if cfg.format != "trace" else 0)  # trace keeps the failed records
    if reviewed:
        reviewed.warn()
        result.reviewed = reviewed.note()
    if card_path:
        earlier = card.earlier_entries(card_path, files)  # other exports here keep their place in the card
        result.card = card.write_card(card_path, card.card_text(cfg, result, summary, run_config, folder,
                                                                earlier=earlier))
    if cfg.push_to_hub:
        card.push(files, cfg, card.card_text(cfg, result, summary, run_config, folder, hub=True))
        result.pushed = cfg.push_to_hub
    return result
