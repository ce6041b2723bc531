"""The report's Training section: the curves of `charter train sft|pm|rl|dpo` runs (loss, reward, KL,
learning rate, ...) from the trainer's log, one small-multiples figure per training run.

Where the log comes from, in order: OUT/train_log.jsonl (the whole log_history, written when training
ends), else the newest OUT/checkpoints/checkpoint-N/trainer_state.json (a run still going or stopped),
else a trainer_state.json in the folder itself (a checkpoint given directly). Files are untrusted:
non-numeric values are skipped, and a file of another shape is an InputError naming it.
"""
from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from charter.errors import InputError
from charter.report.markup import esc, img, table

LOG, STATE, CHECKPOINTS = "train_log.jsonl", "trainer_state.json", "checkpoints"
# Bookkeeping keys of log_history that are not curves.
SKIP = {"step", "epoch", "total_flos", "train_runtime", "train_samples_per_second", "train_steps_per_second",
        "num_tokens", "train_loss", "eval_runtime", "eval_samples_per_second", "eval_steps_per_second"}
FIRST = ("loss", "reward", "rewards/margins", "kl", "objective/kl", "learning_rate", "grad_norm")  # panel order
MAX_PANELS = 12


@dataclass
class TrainingLog:
    name: str
    source: Path
    history: list[dict]

    def curves(self) -> dict[str, list[tuple[float, float]]]:
        """metric -> [(step, value)], finite numbers only, the most telling metrics first."""
        out: dict[str, list[tuple[float, float]]] = {}
        for row in self.history:
            step = row.get("step")
            if not _number(step):
                continue
            for k, v in row.items():
                if k not in SKIP and _number(v):
                    out.setdefault(str(k), []).append((float(step), float(v)))
        rank = {k: i for i, k in enumerate(FIRST)}
        return dict(sorted(out.items(), key=lambda kv: (rank.get(kv[0], len(FIRST)), kv[0])))


def _number(v: object) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _checkpoint_step(p: Path) -> int:
    m = re.fullmatch(r"checkpoint-(\d+)", p.name)
    return int(m.group(1)) if m else -1


def log_source(folder: Path) -> Path | None:
    """The file holding a training run's log_history, or None when `folder` is not a training output."""
    if (folder / LOG).is_file():
        return folder / LOG
    for base in (folder / CHECKPOINTS, folder):
        states = sorted((p / STATE for p in base.glob("checkpoint-*") if (p / STATE).is_file()),
                        key=lambda s: _checkpoint_step(s.parent))
        if states:
            return states[-1]
    return folder / STATE if (folder / STATE).is_file() else None


def is_training(path: str | Path) -> bool:
    """A `charter train` output (or one of its checkpoints), not a generation run."""
    from charter.runs.runread import RECORDS

    p = Path(path)
    return p.is_dir() and not (p / RECORDS).exists() and log_source(p) is not None


def read_training(folder: str | Path, name: str | None = None, must: bool = False) -> TrainingLog | None:
    """The training log in `folder` (see the module doc), or None when it has none (an InputError if `must`)."""
    folder = Path(folder)
    src = log_source(folder) if folder.is_dir() else None
    if src is None:
        if must:
            raise InputError(f"no {LOG}, checkpoints/checkpoint-N/{STATE} or {STATE} here; pass the --out folder "
                             "of `charter train`", str(folder))
        return None
    try:
        if src.name == LOG:
            history = [json.loads(line) for line in src.read_text(encoding="utf-8").splitlines() if line.strip()]
        else:
            history = json.loads(src.read_text(encoding="utf-8")).get("log_history")
    except (OSError, ValueError, AttributeError) as exc:
        raise InputError(f"not a trainer log ({exc}); rerun `charter train` or pass another folder", str(src)) from exc
    if not isinstance(history, list) or not all(isinstance(r, dict) for r in history):
        raise InputError("its log_history is not a list of objects; rerun `charter train`", str(src))
    return TrainingLog(name or folder.name or str(folder), src, history)


def training_section(logs: Sequence[TrainingLog]) -> str | None:
    """One small-multiples figure and a last-values table per training run; None when there is none."""
    if not logs:
        return None
    out = []
    for log in logs:
        curves = log.curves()
        out.append(f'<h3>{esc(log.name)} <span class="muted">{esc(str(log.source))}</span></h3>')
        if not curves:
            out.append('<p class="muted">No logged steps yet.</p>')
            continue
        shown = dict(list(curves.items())[:MAX_PANELS])
        out.append('<div class="plots">' + img(training_plot(log.name, shown), f"training curves: {log.name}")
                   + "</div>")
        out.append(table(["metric", "points", "first", "last", "min", "max"],
                         [[k, len(v), *(format(x, ".4g") for x in (v[0][1], v[-1][1], min(y for _, y in v),
                                                                     max(y for _, y in v)))]
                          for k, v in curves.items()]))
    return "".join(out)


def training_plot(title: str, curves: dict[str, list[tuple[float, float]]]) -> str:
    from charter.report.plots import COLORS, _styled, _subplots, to_png

    @_styled
    def draw() -> str:
        cols = min(3, len(curves))
        rows = math.ceil(len(curves) / cols)
        fig, axes = _subplots(rows, cols, figsize=(3.3 * cols, 2.4 * rows), squeeze=False)
        flat = [ax for row in axes for ax in row]
        for i, (ax, (k, pts)) in enumerate(zip(flat, curves.items())):
            xs, ys = zip(*pts)
            ax.plot(xs, ys, marker="." if len(pts) < 50 else None, color=COLORS[i % len(COLORS)])
            ax.set_title(k, fontsize=9)
            ax.set_xlabel("step")
        for ax in flat[len(curves):]:
            ax.set_visible(False)
        fig.suptitle(title, fontsize=10)
        fig.tight_layout()
        return to_png(fig)

    return draw()
