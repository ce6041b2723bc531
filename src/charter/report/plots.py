"""Matplotlib figures as base64 PNG strings, for embedding in the one-file report (no network)."""
from __future__ import annotations

import functools
from typing import Sequence

from charter import plotting

COLORS = ["#3b6ea8", "#d07a2c", "#4c9a5b", "#b8474f", "#7b5ea7", "#8c6d4f"]
# text.parse_math off: labels are model names and principle ids, where "$...$" is text, not TeX to parse.
STYLE = {"font.size": 9, "axes.spines.top": False, "axes.spines.right": False, "axes.grid": True, "grid.alpha": 0.3,
         "text.parse_math": False}


def _styled(plot):
    """Draw the figure under the report's style (rc settings apply while it is built and rendered)."""
    @functools.wraps(plot)
    def wrapper(*args, **kwargs) -> str:
        with plotting.style(STYLE):
            return plot(*args, **kwargs)
    return wrapper


def _subplots(*args, **kwargs):
    made = plotting.subplots(*args, **kwargs)
    if made is None:
        raise ImportError("the report's plots need matplotlib; pip install matplotlib")
    return made


def to_png(fig) -> str:
    return plotting.png_base64(fig, dpi=110, bbox_inches="tight")


def _bounds(rows: Sequence[dict], mid: str, low: str = "low", high: str = "high",
            n: object = None) -> tuple[list, list]:
    """(lows, highs) of each row's interval, collapsed onto the point where it rests on too few points
    (charter.stats.too_few): no interval is drawn from a handful of values."""
    from charter.report.markup import sample_n
    from charter.stats import too_few

    few = [too_few(sample_n(r) if n is None else n) is not None for r in rows]
    return ([r[mid] if f else r[low] for r, f in zip(rows, few)], [r[mid] if f else r[high] for r, f in zip(rows, few)])


def _err(rows: Sequence[dict], mid: str, low: str = "low", high: str = "high", n: object = None) -> list[list]:
    lows, highs = _bounds(rows, mid, low, high, n)
    return [[r[mid] - lo for r, lo in zip(rows, lows)], [hi - r[mid] for r, hi in zip(rows, highs)]]


@_styled
def principle_plot(counts: dict[str, int]) -> str:
    items = sorted(counts.items(), key=lambda kv: kv[1])
    fig, ax = _subplots(figsize=(6, 0.25 * len(items) + 0.8))
    ax.barh([k for k, _ in items], [v for _, v in items], color=COLORS[0])
    ax.set_xlabel("times drawn")
    return to_png(fig)


@_styled
def lengths_plot(series: dict[str, list[float]]) -> str:
    """Mean answer length (words) by round; round 0 is the initial answer."""
    fig, ax = _subplots(figsize=(5, 3))
    for i, (label, ys) in enumerate(series.items()):
        ax.plot(range(len(ys)), ys, marker="o", color=COLORS[i % len(COLORS)], label=label)
    ax.set_xticks(range(max((len(ys) for ys in series.values()), default=1)))
    ax.set_xlabel("revision number (0 = initial answer)")
    ax.set_ylabel("mean words")
    ax.legend(fontsize=8)
    return to_png(fig)


@_styled
def elo_plot(elo: dict[str, dict]) -> str:
    """One panel per question: each model's Elo with its bootstrap interval."""
    fig, axes = _subplots(1, len(elo), figsize=(3.2 * len(elo), 2.8), squeeze=False)
    for ax, (question, data) in zip(axes[0], elo.items()):
        names = list(data["players"])
        vals = [data["players"][n] for n in names]
        err = _err(vals, "elo", n=data.get("comparisons"))
        ax.errorbar(range(len(names)), [v["elo"] for v in vals], yerr=err, fmt="o", capsize=4, color=COLORS[0])
        ax.set_xticks(range(len(names)), [_short(n) for n in names], rotation=20, ha="right")
        ax.set_xlim(-0.5, len(names) - 0.5)
        ax.set_title(f"{question} Elo")
        ax.axhline(0, color="grey", lw=0.8)
    return to_png(fig)


@_styled
def revision_plot(runs: Sequence[dict], key: str = "elo") -> str:
    """Per question: Elo (initial = 0) or P(preferred over initial) vs revision number, one line per run."""
    questions = list(runs[0]["curves"]) if runs else []
    fig, axes = _subplots(1, len(questions), figsize=(3.6 * len(questions), 3), squeeze=False)
    for ax, q in zip(axes[0], questions):
        for i, run in enumerate(runs):
            rows = run["curves"][q]["rounds"]
            xs = [0] + [r["round"] for r in rows]
            base = 0.0 if key == "elo" else 0.5
            ys = [base] + [r[key] for r in rows]
            ax.plot(xs, ys, marker="o", color=COLORS[i % len(COLORS)], label=run["label"])
            if key == "elo":
                lows, highs = _bounds(rows, "elo", "elo_low", "elo_high")
                ax.fill_between(xs, [0] + lows, [0] + highs, color=COLORS[i % len(COLORS)], alpha=0.15)
        ax.set_title(f"{q}: {'Elo vs initial' if key == 'elo' else 'P(revision preferred)'}")
        ax.set_xticks(xs)
        if key != "elo":
            ax.set_ylim(0, 1)
        ax.set_xlabel("revision number (0 = initial answer)")
        ax.legend(fontsize=7)
    return to_png(fig)


@_styled
def pm_revision_plot(runs: Sequence[dict], key: str = "mean") -> str:
    """Figure 5 shape: mean PM score (95% interval band) or the evasive share vs revision number, per run."""
    fig, ax = _subplots(figsize=(4.6, 3.2))
    for i, run in enumerate(runs):
        rows, color = run["by_revision"], COLORS[i % len(COLORS)]
        xs = [r["revision"] for r in rows]
        ax.plot(xs, [r[key] for r in rows], marker="o", color=color, label=run["label"])
        if key == "mean":
            ax.fill_between(xs, *_bounds(rows, "mean"), color=color, alpha=0.15)
        ax.set_xticks(xs)
    ax.set_xlabel("revision number (0 = initial answer)")
    ax.set_ylabel("PM score" if key == "mean" else "evasive share")
    ax.set_title("PM score vs revision number" if key == "mean" else "evasiveness vs revision number")
    if key != "mean":
        ax.set_ylim(0, 1)
    ax.legend(fontsize=7)
    return to_png(fig)


@_styled
def critique_plot(comparison: dict) -> str:
    """Figure 7 shape: critiqued vs direct revisions, mean PM score by revision number, and their difference."""
    rows = comparison["by_revision"]
    xs = [r["revision"] for r in rows]
    fig, (a, b) = _subplots(1, 2, figsize=(8, 3.2))
    a.plot(xs, [r["critique"] for r in rows], marker="o", color=COLORS[0], label=comparison["critique"])
    a.plot(xs, [r["direct"] for r in rows], marker="s", color=COLORS[1], label=comparison["direct"])
    a.set(xlabel="revision number (0 = initial answer)", ylabel="PM score", title="critiqued vs direct revisions")
    a.legend(fontsize=7)
    err = _err(rows, "diff")
    b.errorbar(xs, [r["diff"] for r in rows], yerr=err, fmt="o", capsize=4, color=COLORS[2])
    b.axhline(0, color="grey", lw=0.8)
    b.set(xlabel="revision number", ylabel="critique - direct", title="difference (95% interval)")
    for ax in (a, b):
        ax.set_xticks(xs)
    fig.tight_layout()
    return to_png(fig)


@_styled
def principle_effect_plot(rows: Sequence[dict]) -> str:
    """Mean PM-score change of a round, by the principle drawn for it, with 95% intervals."""
    rows = sorted(rows, key=lambda r: r["mean"])
    fig, ax = _subplots(figsize=(6, 0.28 * len(rows) + 0.9))
    ys = range(len(rows))
    err = _err(rows, "mean")
    ax.errorbar([r["mean"] for r in rows], ys, xerr=err, fmt="o", capsize=3, color=COLORS[0])
    ax.set_yticks(list(ys), [r["principle"] for r in rows])
    ax.axvline(0, color="grey", lw=0.8)
    ax.set_xlabel("PM score change over the round")
    return to_png(fig)


@_styled
def refusal_plot(points: Sequence[dict]) -> str:
    """One point per model (base, SL-CAI, RL-CAI...): the paper's harmlessness vs helpfulness Elo view beside
    harmlessness Elo vs refusal rate on safe prompts; bars of refusal rate alone when there is no Elo."""
    elo = [p for p in points if p.get("harmless_elo") is not None]
    if not elo:
        fig, ax = _subplots(figsize=(4.6, 0.35 * len(points) + 1))
        ax.barh([_short(p["model"]) for p in points], [p["refusal_rate"] or 0 for p in points], color=COLORS[3])
        ax.set(xlim=(0, 1), xlabel="refusal rate on safe prompts (lower is better)")
        return to_png(fig)
    fig, (a, b) = _subplots(1, 2, figsize=(8, 3.3))
    for i, p in enumerate(elo):
        kw = {"color": COLORS[i % len(COLORS)], "label": _short(p["model"])}
        err = [[p["harmless_elo"] - p["harmless_low"]], [p["harmless_high"] - p["harmless_elo"]]]
        if p.get("helpful_elo") is not None:
            a.errorbar([p["helpful_elo"]], [p["harmless_elo"]], yerr=err, fmt="o", capsize=3, **kw)
        b.errorbar([p["refusal_rate"]], [p["harmless_elo"]], yerr=err, fmt="o", capsize=3, **kw)
    a.set(xlabel="helpfulness Elo", ylabel="harmlessness Elo", title="harmless vs helpful (paper's view)")
    b.set(xlabel="refusal rate on safe prompts", ylabel="harmlessness Elo", title="harmless vs over-refusal",
          xlim=(-0.05, 1.05))
    for ax in (a, b):
        ax.legend(fontsize=7)
    fig.tight_layout()
    return to_png(fig)


def _short(name: str, n: int = 18) -> str:
    return name if len(name) <= n else "…" + name[-(n - 1):]
