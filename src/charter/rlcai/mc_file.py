"""Multiple-choice comparison files, the input of `charter eval-labeler`: rows {"prompt",
"corrects", "incorrects"} (label style, as the HHH file, or answer style; see
charter.rlcai.labeler_eval), each turned into comparisons asked in both option orders, or into
(better, worse) conversations for a preference model."""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from charter.choice import LETTERS
from charter.errors import InputError
from charter.jsonl import loads, reason
from charter.rlcai.data import OPTION
from charter.rlcai.data import ANSWER_CUE, FeedbackSet, draw_principles
from charter.rlcai.questions import question, render_options
from charter.inputs.transcripts import looks_like as looks_like_transcript, parse, parse_prompt as parse_transcript

LABEL = re.compile(r"^\s*\(([A-H])\)\s*$")


@dataclass(frozen=True)
class MCRow:
    line: int
    prompt: str
    corrects: tuple[str, ...]
    incorrects: tuple[str, ...]
    texts: tuple[str, str] | None = None  # whole transcripts (text_correct, text_incorrect), as in the HHH file


def load_mc_file(path: str | Path, limit: int | None = None) -> list[MCRow]:
    """Rows of a {"prompt", "corrects", "incorrects"} JSONL file; errors name the file and line."""
    p = Path(path)
    where = str(p)
    if not p.exists():
        raise InputError("file not found; check the path", where)
    rows: list[MCRow] = []
    with p.open("rb") as fh:
        for n, raw in enumerate(fh, 1):
            if not raw.strip():
                continue
            if limit is not None and len(rows) >= limit:
                break
            try:
                d = loads(raw)
            except json.JSONDecodeError as exc:
                raise InputError(f"invalid JSON ({exc.msg} at column {exc.colno}); fix or remove the line", where, n) from exc
            except ValueError as exc:  # not UTF-8, or nested too deep
                raise InputError(f"{reason(exc)}; fix or remove the line", where, n) from exc
            if not isinstance(d, dict):
                raise InputError("each line must be an object with 'prompt', 'corrects', 'incorrects'", where, n)
            missing = [k for k in ("prompt", "corrects", "incorrects") if k not in d]
            if missing:
                raise InputError(f"missing {', '.join(repr(k) for k in missing)}; each line needs 'prompt', "
                                 "'corrects' and 'incorrects'", where, n)
            if not isinstance(d["prompt"], str) or not d["prompt"].strip():
                raise InputError("'prompt' must be non-empty text", where, n)
            for k in ("corrects", "incorrects"):
                v = d[k]
                if not isinstance(v, list) or not v or not all(isinstance(x, str) and x.strip() for x in v):
                    raise InputError(f"'{k}' must be a non-empty list of non-empty strings", where, n)
            texts = (d["text_correct"], d["text_incorrect"]) if isinstance(d.get("text_correct"), str) and \
                isinstance(d.get("text_incorrect"), str) else None
            rows.append(MCRow(n, d["prompt"], tuple(d["corrects"]), tuple(d["incorrects"]), texts))
    if not rows:
        raise InputError("no rows; the file is empty", where)
    return rows


@dataclass
class Comparison:
    """One correct vs one incorrect option, asked in two orders: (question text, index of correct, index of incorrect)."""

    correct: str
    incorrect: str
    orders: list[tuple[str, int, int, int]]  # (question without answer cue, n options, i_correct, i_incorrect)


def _label_style(row: MCRow, where: str) -> list[Comparison]:
    opts = list(OPTION.finditer(row.prompt))
    tail = row.prompt[opts[-1].end():] if opts else row.prompt
    letters = [m.group(1) for m in opts]
    if not opts or letters != list(LETTERS[: len(opts)]) or not tail.rstrip().endswith(ANSWER_CUE):
        raise InputError("options are labels like ' (A)', but the prompt does not list them as "
                         "'\\n (A) [[[...]]]' ... ending with 'The answer is:'", where, row.line)
    head = row.prompt[: opts[0].start()]
    rest = tail.rstrip()[: -len(ANSWER_CUE)].rstrip("\n")  # usually "": the cue is re-added as ANSWER
    texts = [m.group(2) for m in opts]
    out = []
    for c in row.corrects:
        for w in row.incorrects:
            ic, iw = (LETTERS.index(LABEL.match(x).group(1)) for x in (c, w))  # type: ignore[union-attr]
            if ic >= len(texts) or iw >= len(texts):
                raise InputError(f"label {c.strip()} or {w.strip()} is not among the prompt's options", where, row.line)
            if ic == iw:
                raise InputError(f"{c.strip()} is listed as both correct and incorrect", where, row.line)
            swapped = list(texts)
            swapped[ic], swapped[iw] = texts[iw], texts[ic]
            orders = [(head + render_options(texts) + rest, len(texts), ic, iw),
                      (head + render_options(swapped) + rest, len(texts), iw, ic)]
            out.append(Comparison(c.strip(), w.strip(), orders))
    return out


def _answer_style(row: MCRow, fs: FeedbackSet, principle: str | None, seed: int) -> list[Comparison]:
    out = []
    if looks_like_transcript(row.prompt):
        convo = parse_transcript(row.prompt)
        text = principle or draw_principles(fs.principles, seed, f"row-{row.line}")[0].text
        build = lambda opts: question(convo, text, opts)  # noqa: E731
    else:
        base = row.prompt.rstrip()
        build = lambda opts: base + render_options(opts)  # noqa: E731
    for c in row.corrects:
        for w in row.incorrects:
            out.append(Comparison(c, w, [(build([c, w]), 2, 0, 1), (build([w, c]), 2, 1, 0)]))
    return out


def comparisons(row: MCRow, where: str, fs: FeedbackSet, principle: str | None = None, seed: int = 0) -> list[Comparison]:
    options = row.corrects + row.incorrects
    labels = [bool(LABEL.match(o)) for o in options]
    if all(labels):
        return _label_style(row, where)
    if any(labels):
        raise InputError("mix of option labels ' (A)' and answer texts; use one style per row", where, row.line)
    return _answer_style(row, fs, principle, seed)


def pm_pairs(path: str | Path, limit: int | None = None) -> list[tuple[int, list, list]]:
    """(line, better conversation, worse conversation) from an MC file or from preference rows."""
    from charter.inputs.rows import read_pairs

    first = _first_row(path) if Path(path).suffix == ".jsonl" else {}
    if (isinstance(first, dict) and "chosen" in first) or Path(path).suffix == ".parquet":
        rows = read_pairs(str(path))[:limit]
        return [(i + 1, r["prompt"] + r["chosen"], r["prompt"] + r["rejected"]) for i, r in enumerate(rows)]
    out = []
    for row in load_mc_file(path, limit):
        if row.texts:
            out.append((row.line, parse(row.texts[0]), parse(row.texts[1])))
        elif looks_like_transcript(row.prompt) and not LABEL.match(row.corrects[0]):
            convo = parse_transcript(row.prompt)
            out += [(row.line, convo + [_reply(c)], convo + [_reply(w)]) for c in row.corrects for w in row.incorrects]
        else:
            raise InputError("a preference model needs whole answers: this row has option labels but no "
                             "'text_correct'/'text_incorrect' transcripts", str(path), row.line)
    return out


def _first_row(path: str | Path) -> Any:
    """The first row of a JSONL file, to tell preference rows from MC rows ({} if unreadable:
    the loader then names the problem and its line)."""
    try:
        with Path(path).open("rb") as fh:
            return next((loads(line) for line in fh if line.strip()), {})
    except (OSError, ValueError):
        return {}


def _reply(text: str) -> dict:
    return {"role": "assistant", "content": text.strip()}
