"""Matplotlib figures as base64 PNG strings, for embedding in the one-file report (no network)."""
from __future__ import annotations

import base64
import io
from typing import Sequence

COLORS = ["#3b6ea8", "#d07a2c", "#4c9a5b", "#b8474f", "#7b5ea7", "#8c6d4f"]


def _plt():
    import matplotlib

    matplotlib.use("Agg")  # no display; the report is a file
    import matplotlib.pyplot as plt

    plt.rcParams.update({"font.size": 9, "axes.spines.top": False, "axes.spines.right": False,
                         "axes.grid": True, "grid.alpha": 0.3})
    return plt


def to_png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    _plt().close(fig)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def principle_plot(counts: dict[str, int]) -> str:
    plt = _plt()
    items = sorted(counts.items(), key=lambda kv: kv[1])
    fig, ax = plt.subplots(figsize=(6, 0.25 * len(items) + 0.8))
    ax.barh([k for k, _ in items], [v for _, v in items], color=COLORS[0])
    ax.set_xlabel("times drawn")
    return to_png(fig)


def lengths_plot(series: dict[str, list[float]]) -> str:
    """Mean answer length (words) by round; round 0 is the initial answer."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5, 3))
    for i, (label, ys) in enumerate(series.items()):
        ax.plot(range(len(ys)), ys, marker="o", color=COLORS[i % len(COLORS)], label=label)
    ax.set_xticks(range(max((len(ys) for ys in series.values()), default=1)))
    ax.set_xlabel("revision number (0 = initial answer)")
    ax.set_ylabel("mean words")
    ax.legend(fontsize=8)
    return to_png(fig)


def elo_plot(elo: dict[str, dict]) -> str:
    """One panel per question: each model's Elo with its bootstrap interval."""
    plt = _plt()
    fig, axes = plt.subplots(1, len(elo), figsize=(3.2 * len(elo), 2.8), squeeze=False)
    for ax, (question, data) in zip(axes[0], elo.items()):
        names = list(data["players"])
        vals = [data["players"][n] for n in names]
        err = [[v["elo"] - v["low"] for v in vals], [v["high"] - v["elo"] for v in vals]]
        ax.errorbar(range(len(names)), [v["elo"] for v in vals], yerr=err, fmt="o", capsize=4, color=COLORS[0])
        ax.set_xticks(range(len(names)), [_short(n) for n in names], rotation=20, ha="right")
        ax.set_xlim(-0.5, len(names) - 0.5)
        ax.set_title(f"{question} Elo")
        ax.axhline(0, color="grey", lw=0.8)
    return to_png(fig)


def revision_plot(runs: Sequence[dict], key: str = "elo") -> str:
    """Per question: Elo (initial = 0) or P(preferred over initial) vs revision number, one line per run."""
    plt = _plt()
    questions = list(runs[0]["curves"]) if runs else []
    fig, axes = plt.subplots(1, len(questions), figsize=(3.6 * len(questions), 3), squeeze=False)
    for ax, q in zip(axes[0], questions):
        for i, run in enumerate(runs):
            rows = run["curves"][q]["rounds"]
            xs = [0] + [r["round"] for r in rows]
            base = 0.0 if key == "elo" else 0.5
            ys = [base] + [r[key] for r in rows]
            ax.plot(xs, ys, marker="o", color=COLORS[i % len(COLORS)], label=run["label"])
            if key == "elo":
                ax.fill_between(xs, [0] + [r["elo_low"] for r in rows], [0] + [r["elo_high"] for r in rows],
                                color=COLORS[i % len(COLORS)], alpha=0.15)
        ax.set_title(f"{q}: {'Elo vs initial' if key == 'elo' else 'P(revision preferred)'}")
        ax.set_xticks(xs)
        if key != "elo":
            ax.set_ylim(0, 1)
        ax.set_xlabel("revision number (0 = initial answer)")
        ax.legend(fontsize=7)
    return to_png(fig)


def _short(name: str, n: int = 18) -> str:
    return name if len(name) <= n else "…" + name[-(n - 1):]
