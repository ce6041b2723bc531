"""The report's Judge biases section: each judge's position, length and self-preference bias
(charter.rlcai.bias) beside what published audits of LLM judges find.

Where the numbers come from: eval.json beside a run (its judge), and the feedback files given to
`charter report` beside the runs: a label output (its transcripts are read back beside it), an
eval-labeler result or an audit result (charter.rlcai.audit). Every file is untrusted input:
values are escaped (charter.report.markup), and a file of another shape is an InputError naming it.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from charter.errors import InputError
from charter.report.markup import esc, img, table
from charter.report.plots import COLORS, _styled, _subplots, to_png
from charter.rlcai.bias import MIN_N, describe

LABEL, LABELER, AUDIT = "label run", "eval-labeler", "audit"
# (measure, key, what the measure reads as without bias or in published audits)
BARS = [("same winner in both orders", "consistency", 7 / 8), ("first-shown answer wins", "first_wins", 0.5),
        ("longer answer wins", "longer_wins", 2 / 3), ("judge prefers its own", "self_preference", 0.5)]


@dataclass
class FeedbackFile:
    """A file given to the report beside the runs: what it is, its judge's bias, its whole data."""

    name: str
    path: Path
    kind: str
    bias: dict | None
    data: dict


def is_feedback(path: str | Path) -> bool:
    """A label output (its transcripts beside it), an eval-labeler or an audit result JSON."""
    from charter.rlcai.label_store import transcripts_path

    p = Path(path)
    if not p.is_file():
        return False
    if p.suffix.lower() in (".jsonl", ".parquet"):
        return transcripts_path(p).is_file()
    return p.suffix.lower() == ".json" and _json_kind(_read_json(p)) is not None


def _read_json(p: Path) -> object:
    try:
        return json.loads(p.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot be read ({exc}); pass a label output, an eval-labeler or an audit result",
                         str(p)) from exc


def _json_kind(data: object) -> str | None:
    if not isinstance(data, dict):
        return None
    if isinstance(data.get("schema"), str) and data["schema"].startswith("charter.audit/"):
        return AUDIT
    return LABELER if {"accuracy", "n_rows", "rows"} <= set(data) else None


def load_feedback_file(path: str | Path) -> FeedbackFile:
    p = Path(path)
    if p.suffix.lower() in (".jsonl", ".parquet"):
        return _label_file(p)
    data = _read_json(p)
    kind = _json_kind(data)
    if kind is None or not isinstance(data, dict):
        raise InputError("not a label output, eval-labeler result or audit result; rerun the command that wrote it",
                         str(p))
    bias = data.get("bias")
    return FeedbackFile(p.name, p, kind, bias if isinstance(bias, dict) else None, data)


def _label_file(p: Path) -> FeedbackFile:
    """A label run: its biases read back from the transcripts, the judge named by its config."""
    import yaml

    from charter.rlcai.bias_rows import label_bias
    from charter.rlcai.label_store import label_layout, transcripts_path

    try:
        config = yaml.safe_load((p.parent / label_layout(p).config).read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError):
        config = {}
    config = config if isinstance(config, dict) else {}
    policy = config.get("policy")
    judge = config.get("feedback_model") or policy
    return FeedbackFile(p.name, p, LABEL, label_bias(transcripts_path(p), judge, policy), config)


# ---- the section ------------------------------------------------------------------------------------


def judges(runs: Sequence, feedback: Sequence[FeedbackFile]) -> list[tuple[str, dict]]:
    """(name, JudgeBias) of every judge the report has numbers for."""
    found = [(f"{run.name}: eval judge {run.evaluation.settings.get('judge')}", run.evaluation.bias)
             for run in runs if run.evaluation is not None and run.evaluation.bias]
    return found + [(f"{f.name} ({f.kind})", f.bias) for f in feedback if f.bias]


def bias_section(runs: Sequence, feedback: Sequence[FeedbackFile]) -> str | None:
    """The section's HTML, or None when no judge has numbers."""
    found = judges(runs, feedback)
    if not found:
        return None
    out = ['<p class="muted">How each judge leans, beside what it decides. Published audits of LLM judges find '
           "the longer answer winning about 2 comparisons in 3 and about 1 verdict in 8 flipping when the order "
           f"is swapped. Shares carry a 95% Wilson interval; one read from fewer than {MIN_N} items is marked "
           "too few to read.</p>"]
    drawn = [(name, b) for name, b in found if any(_readable(b, key) for _, key, _ in BARS)]
    if drawn:
        out.append('<div class="plots">' + img(bias_plot(drawn), "judge biases") + "</div>")
    for name, b in found:
        try:
            rows = describe(b)
        except (AttributeError, KeyError, TypeError, ValueError) as exc:
            raise InputError(f"its judge bias has another shape ({type(exc).__name__}: {exc}); rerun the command "
                             "that wrote it", name) from exc
        out.append(f"<h3>{esc(name)}: {esc(b.get('comparisons', 0))} comparisons, {esc(b.get('verdicts', 0))} "
                   "single-order verdicts</h3>")
        out.append(table(["measure", "this judge", "published or neutral"], rows))
    return "".join(out)


def _readable(b: dict, key: str) -> bool:
    s = b.get(key) or {}
    return s.get("low") is not None and s.get("n", 0) >= MIN_N


@_styled
def bias_plot(found: Sequence[tuple[str, dict]]) -> str:
    """One row per measure: each judge's share with its interval, the reference as a grey tick."""
    fig, ax = _subplots(figsize=(6.5, 0.5 + 0.35 * len(BARS) * len(found)))
    height = 0.8 / len(found)
    for i, (name, b) in enumerate(found):
        for row, (label, key, _) in enumerate(BARS):
            if _readable(b, key):
                s, y = b[key], row + i * height
                ax.barh(y, s["rate"], height=height * 0.9, color=COLORS[i % len(COLORS)],
                        label=name if row == next(r for r, (_, k, _) in enumerate(BARS) if _readable(b, k)) else None)
                ax.plot([s["low"], s["high"]], [y, y], color="black", linewidth=1)
    for row, (_, _, ref) in enumerate(BARS):
        ax.plot([ref, ref], [row - 0.1, row + 0.8], color="grey", linestyle="--", linewidth=1)
    ax.set_yticks([r + 0.4 - height / 2 for r in range(len(BARS))], [label for label, _, _ in BARS])
    ax.set_xlim(0, 1)
    ax.set_xlabel("share (grey: published audits or no bias)")
    ax.invert_yaxis()
    ax.legend(fontsize=7, loc="lower right")
    return to_png(fig)


__all__ = ["FeedbackFile", "is_feedback", "load_feedback_file", "bias_section", "judges"]
