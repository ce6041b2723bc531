"""Where `charter label` keeps its work, in the run store (charter.runs.store) beside --out.

For --out labels.jsonl: labels.transcripts.jsonl holds one line per prompt, written as the prompt
finishes: its answers and every comparison of them ({"id", "prompt", "answers", "comparisons",
"error"}; "id" first and "error" last, so the store reads ids without parsing), with
labels.meta.json, labels.config.yaml, labels.lock and labels.transcripts.bad.jsonl (damaged lines,
kept). Each comparison keeps what was asked of the feedback model, without the few-shot block
every question starts with (the run's few_shot setting). The preference rows in --out are made
from these lines; `read_transcripts` gives the comparisons one dict each, as the rows see them.

An older Charter wrote one line per comparison and no meta file; such a run is converted on its
next start (the old file kept as labels.transcripts.v1.jsonl), or refused if its settings differ.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from charter.errors import RunError
from charter.runs.idset import IdSet, key
from charter.jsonl import atomic_write, dumps, loads, read_lines
from charter.runs.runread import last_lines
from charter.runs.store import Layout

log = logging.getLogger("charter.label")

KIND = "Charter labels"  # what charter.runs.files records the rows file as


def label_layout(out: str | Path) -> Layout:
    stem = Path(out).stem
    return Layout(records=f"{stem}.transcripts.jsonl", config=f"{stem}.config.yaml", meta=f"{stem}.meta.json",
                  set_aside=f"{stem}.transcripts.bad.jsonl", lock=f"{stem}.lock", status=line_status, own_dir=False,
                  what="line", redo="labelled again")


def transcripts_path(out: str | Path) -> Path:
    """labels.jsonl -> labels.transcripts.jsonl (also for .parquet outputs)."""
    p = Path(out)
    return p.with_name(label_layout(p).records)


# ---- one line per prompt ---------------------------------------------------------------------------


def check_line(t: Any) -> dict:
    """A transcript line as `label` writes it, or ValueError saying what is wrong."""
    if not (isinstance(t, dict) and isinstance(t.get("id"), str) and isinstance(t.get("prompt"), list)):
        raise ValueError("not a label transcript line (a JSON object with 'id' and 'prompt')")
    if t.get("error") is not None:
        if not isinstance(t["error"], str):
            raise ValueError("'error' must be text or null")
        return t
    answers, comps = t.get("answers"), t.get("comparisons")
    if not (isinstance(answers, list) and all(isinstance(a, str) for a in answers) and isinstance(comps, list)):
        raise ValueError("a finished line needs 'answers' (texts) and 'comparisons' (a list)")
    for c in comps:
        pair = c.get("samples") if isinstance(c, dict) else None
        if not (isinstance(pair, list) and len(pair) == 2 and all(isinstance(i, int) and 0 <= i < len(answers)
                                                                     for i in pair)):
            raise ValueError("a comparison needs 'samples': two answer indices")
        s = c.get("score_first")
        if c.get("skipped") is None and not (isinstance(s, (int, float)) and isinstance(c.get("asks"), list)):
            raise ValueError("a labelled comparison needs a numeric 'score_first' and its 'asks'")
    return t


def line_status(raw: bytes) -> tuple[str, bool]:
    t = check_line(loads(raw))
    return t["id"], t.get("error") is None


def error_line(item, error: str) -> dict:
    return {"id": item.id, "prompt": list(item.messages), "answers": [], "comparisons": [], "error": error}


def iter_lines(path: Path) -> Iterator[dict]:
    """The last line of each prompt, at the prompt's first position, skipping damaged lines (the
    store sets them aside when it opens). Two streamed passes: memory is 8 bytes per prompt plus
    the offsets of prompts written twice (a failure retried)."""
    if not Path(path).exists():
        return
    last, taken = last_lines(path, lambda raw: line_status(raw)[0]), IdSet()
    with open(path, "rb") as again:
        for _, raw in read_lines(path):
            try:
                t = check_line(loads(raw))
            except ValueError:
                continue
            where = last.get(key(t["id"]))
            if where is not None:
                if not taken.add(t["id"]):
                    continue
                again.seek(where)
                t = check_line(loads(again.readline()))
            yield t


def comparisons(t: dict) -> Iterator[dict]:
    """A prompt's line as one dict per comparison ({"id": "PROMPT:i-j", "prompt_id", "prompt",
    "answers": [x, y], ...}); a failed prompt as one {"id": "PROMPT:error", "error"} dict."""
    if t.get("error") is not None:
        yield {"id": f"{t['id']}:error", "prompt_id": t["id"], "prompt": t["prompt"], "error": t["error"],
               "score_first": None}
        return
    for c in t["comparisons"]:
        i, j = c["samples"]
        flat = {"id": f"{t['id']}:{i}-{j}", "prompt_id": t["id"], "prompt": t["prompt"],
                "answers": [t["answers"][i], t["answers"][j]], **c}
        if t.get("temperatures"):
            flat["temperatures"] = [t["temperatures"][i], t["temperatures"][j]]
        yield flat


def read_transcripts(path: str | Path) -> list[dict]:
    """Every comparison of a label run (the final line of each prompt), one dict each."""
    return [c for t in iter_lines(Path(path)) for c in comparisons(t)]


# ---- preference rows ---------------------------------------------------------------------------------


def preference_row(t: dict) -> dict:
    """TRL conversational preference row of one comparison; score = P(chosen better) >= 0.5."""
    x, y = t["answers"]
    s = t["score_first"]
    chosen, rejected, score = (x, y, s) if s >= 0.5 else (y, x, 1.0 - s)
    row = {"prompt": t["prompt"], "chosen": [{"role": "assistant", "content": chosen}],
           "rejected": [{"role": "assistant", "content": rejected}], "score": score, "id": t["id"]}
    if t.get("temperatures"):  # --temperatures: the temperature each answer was sampled at
        tx, ty = t["temperatures"]
        row["chosen_temperature"], row["rejected_temperature"] = (tx, ty) if s >= 0.5 else (ty, tx)
    return row


def rows_of(t: dict) -> list[dict]:
    return [preference_row(c) for c in comparisons(t) if c.get("score_first") is not None]


@dataclass
class Tally:
    """What a run's lines hold, counted while the rows are written."""

    prompts: int = 0
    comparisons: int = 0  # labelled or skipped
    skipped: int = 0
    failures: int = 0  # prompts that failed
    rows: int = 0
    score: float = 0.0  # sum of the rows' scores

    def add(self, t: dict, rows: list[dict]) -> None:
        self.prompts += 1
        self.failures += t.get("error") is not None
        self.comparisons += len(t.get("comparisons") or ())
        self.skipped += sum(1 for c in t.get("comparisons") or () if c.get("skipped"))
        self.rows += len(rows)
        self.score += sum(r["score"] for r in rows)


def write_rows(out: Path, records: Path) -> Tally:
    """`out` (.jsonl or .parquet) rewritten whole from the final line of each prompt, streamed
    (charter.export.staging: memory is flat), and recorded as label's output (charter.runs.files)."""
    from charter.runs.files import mark_written
    from charter.export.staging import Staging

    tally = Tally()
    with Staging(out, parquet=out.suffix.lower() == ".parquet") as staged:
        for t in iter_lines(records):
            rows = rows_of(t)
            tally.add(t, rows)
            for row in rows:
                staged.add(row, row["prompt"])
        staged.finish()
        staged.write(out)
    mark_written(out, KIND, growing=out.suffix.lower() == ".jsonl")
    return tally


class RowsFile:
    """--out while a run appends to it: rewritten from the lines once the backends are up, then a
    prompt's rows appended as it finishes (JSONL; a Parquet file is written at the end only)."""

    def __init__(self, out: Path):
        self.out, self._appender = out, None

    def start(self, records: Path) -> None:
        from charter.jsonl import Appender

        if self.out.suffix.lower() == ".jsonl":
            write_rows(self.out, records)
            self._appender = Appender(self.out)

    def add(self, t: dict) -> None:
        if self._appender is not None and t.get("error") is None:
            data = "".join(dumps(r) for r in rows_of(t)).encode("utf-8")
            if data:
                self._appender.write(data)

    def close(self) -> None:
        if self._appender is not None:
            self._appender.close()
            self._appender = None


# ---- what an older Charter wrote ---------------------------------------------------------------------


def convert_old(out: Path, layout: Layout, fingerprint: str, force: bool, overwrite: bool) -> bool:
    """An older label run beside `out` (one line per comparison, no meta file) in this format;
    True if there was one. Different settings are refused as the store refuses them; with
    `overwrite` it is only claimed (its rows file recorded as label's, to be replaced)."""
    path = out.parent / layout.records
    if (out.parent / layout.meta).exists() or not _old_format(path):
        return False
    if overwrite:
        _claim(out)
        return True
    old = list(_old_lines(path))
    if not force and any(t.get("fingerprint") != fingerprint for t in old):
        raise RunError(f"{path} was made by an older Charter with different settings; use a new --out, pass "
                       "--overwrite to label again from the start, or --force to continue it anyway")
    lines = _regroup(old)
    keep = path.with_name(path.name.replace(".jsonl", ".v1.jsonl"))
    if keep.exists():
        keep.unlink()
    try:
        os.link(path, keep)  # the old file stays, under its new name, whatever happens next
    except OSError:
        shutil.copyfile(path, keep)
    atomic_write(path, "".join(dumps(t) for t in lines))
    _claim(out)
    log.info("converted %s (an older label run: %d prompts done) to one line per prompt; the old file is kept as %s",
             path, len(lines), keep)
    return True


def _claim(out: Path) -> None:
    """The rows file of an older Charter's label run, which kept no record of its outputs."""
    from charter.runs.files import mark_written

    if out.is_file() and not out.is_symlink():
        mark_written(out, KIND, growing=out.suffix.lower() == ".jsonl")


def _old_format(path: Path) -> bool:
    for _, raw in read_lines(path) if path.exists() else ():
        try:
            t = loads(raw)
        except ValueError:
            continue
        return isinstance(t, dict) and "prompt_id" in t and "comparisons" not in t
    return False


def _old_lines(path: Path) -> Iterator[dict]:
    for _, raw in read_lines(path):
        try:
            t = loads(raw)
        except ValueError:
            continue
        if isinstance(t, dict) and isinstance(t.get("id"), str) and isinstance(t.get("prompt_id"), str):
            yield t


def _regroup(old: list[dict]) -> list[dict]:
    """The prompts the old lines finished (a prompt's last line says whether it failed), one line each."""
    ok = {t["prompt_id"]: not t.get("error") for t in old}
    prompts: dict[str, dict[str, dict]] = {}
    for t in old:
        if ok[t["prompt_id"]] and isinstance(t.get("samples"), list) and isinstance(t.get("answers"), list):
            prompts.setdefault(t["prompt_id"], {})[t["id"]] = t  # a comparison's last line wins
    return [line for pid, comps in prompts.items() if (line := _one_line(pid, list(comps.values())))]


def _one_line(pid: str, comps: list[dict]) -> dict | None:
    answers: dict[int, str] = {}
    temps: dict[int, float] = {}
    for c in comps:
        answers.update(zip(c["samples"], c["answers"]))
        temps.update(zip(c["samples"], c.get("temperatures") or ()))
    if sorted(answers) != list(range(len(answers))):
        return None  # an answer no comparison kept: label the prompt again
    keys = ("samples", "principles", "per_principle", "score_first", "asks", "skipped")
    line = {"id": pid, "prompt": comps[0]["prompt"], "answers": [answers[i] for i in range(len(answers))]}
    if temps:
        line["temperatures"] = [temps[i] for i in range(len(answers))]
    line["comparisons"] = [{k: c.get(k) for k in keys if c.get(k) is not None or k == "score_first"} for c in comps]
    line["error"] = None
    try:
        return check_line(json.loads(json.dumps(line)))
    except ValueError:
        return None
