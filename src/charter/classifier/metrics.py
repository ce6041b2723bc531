"""How well a guard classifier separates harmful from harmless: the numbers `charter eval classifier` reports.

Scores are P(harmful); a text is flagged when its score is >= the threshold (sklearn's roc_curve
and the guard agree on that). Every function takes labels (1 harmful, 0 harmless) and scores of
the same length and returns plain JSON-ready dicts, so the result file is the record.

Small samples are reported as what they are: a share comes with its Wilson interval (which stays
inside [0, 1] and is wide, not [1, 1], at 5 of 5); AUC and the TPR at a chosen FPR get a
stratified bootstrap interval only when each class has MIN_CLASS examples, else None and a note;
and a target FPR below 1/negatives is named, because only FPR 0 lies under it.
"""
from __future__ import annotations

import math
from typing import Sequence, TypedDict

from charter import stats

MIN_CLASS = 10  # fewer harmful or harmless examples than this: no bootstrap interval
Z95 = 1.959964


class Rate(TypedDict):
    """k of n, with its 95% Wilson interval (None when n is 0)."""
    k: int
    n: int
    rate: float | None
    low: float | None
    high: float | None


class AtThreshold(TypedDict):
    threshold: float
    tpr: Rate  # harmful examples flagged
    fpr: Rate  # harmless examples flagged


class AtFPR(TypedDict):
    target: float
    threshold: float | None  # the lowest threshold whose FPR is <= target; None: only "flag nothing" is
    tpr: float
    fpr: float
    low: float | None  # the TPR's bootstrap interval (threshold chosen again in each draw)
    high: float | None


class Curve(TypedDict):
    fpr: list[float]
    tpr: list[float]
    thresholds: list[float | None]  # None: above every score (nothing flagged)


class CalibrationBin(TypedDict):
    low: float
    high: float
    n: int
    mean_score: float
    harmful_share: float


class Calibration(TypedDict):
    bins: list[CalibrationBin]  # non-empty bins only
    ece: float
    brier: float


class Metrics(TypedDict):
    n: int
    positives: int
    negatives: int
    auc: float | None  # None: one class is absent
    auc_low: float | None
    auc_high: float | None
    at_fpr: AtFPR | None  # None without both classes
    at_threshold: AtThreshold
    calibration: Calibration
    roc: Curve | None
    notes: list[str]


def wilson(k: int, n: int, z: float = Z95) -> Rate:
    """k of n as a rate with the Wilson score interval."""
    if n == 0:
        return {"k": 0, "n": 0, "rate": None, "low": None, "high": None}
    p = k / n
    d = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / d
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / d
    return {"k": k, "n": n, "rate": p, "low": max(0.0, centre - half), "high": min(1.0, centre + half)}


def at_threshold(labels: Sequence[int], scores: Sequence[float], threshold: float) -> AtThreshold:
    """TPR and FPR when everything scoring >= threshold is flagged."""
    tp = sum(1 for y, s in zip(labels, scores) if y == 1 and s >= threshold)
    fp = sum(1 for y, s in zip(labels, scores) if y == 0 and s >= threshold)
    pos = sum(1 for y in labels if y == 1)
    return {"threshold": threshold, "tpr": wilson(tp, pos), "fpr": wilson(fp, len(labels) - pos)}


def roc(labels: Sequence[int], scores: Sequence[float]) -> Curve:
    from sklearn.metrics import roc_curve

    fpr, tpr, thr = roc_curve(labels, scores, pos_label=1)
    return {"fpr": fpr.tolist(), "tpr": tpr.tolist(), "thresholds": [None if math.isinf(t) else float(t) for t in thr]}


def auc(labels: Sequence[int], scores: Sequence[float]) -> float:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(labels, scores))


def tpr_at_fpr(curve: Curve, target: float) -> tuple[float, float, float | None]:
    """(tpr, fpr, threshold) of the curve's best point with FPR <= target (the curve rises in both)."""
    best = max(i for i, f in enumerate(curve["fpr"]) if f <= target)
    return curve["tpr"][best], curve["fpr"][best], curve["thresholds"][best]


def _split(labels: Sequence[int], scores: Sequence[float]) -> tuple[list[float], list[float]]:
    return [s for y, s in zip(labels, scores) if y == 1], [s for y, s in zip(labels, scores) if y == 0]


def _joined(pos: Sequence[float], neg: Sequence[float]) -> tuple[list[int], list[float]]:
    return [1] * len(pos) + [0] * len(neg), [*pos, *neg]


def bootstrap_interval(labels: Sequence[int], scores: Sequence[float], statistic, samples: int,
                       seed: int) -> tuple[float | None, float | None]:
    """Percentile interval of statistic(labels, scores) over stratified resamples (each class resampled
    on its own, so every draw keeps both); (None, None) when a class has fewer than MIN_CLASS examples."""
    pos, neg = _split(labels, scores)
    if min(len(pos), len(neg)) < MIN_CLASS:
        return None, None
    draws = stats.bootstrap([pos, neg], lambda p, n: statistic(*_joined(p, n)), samples, seed)
    return stats.interval(draws, statistic(labels, scores))


def calibration(labels: Sequence[int], scores: Sequence[float], bins: int = 10) -> Calibration:
    """Reliability bins (sklearn's calibration_curve, uniform bins) with their sizes, ECE and Brier score."""
    import numpy as np
    from sklearn.calibration import calibration_curve

    y, p = np.asarray(labels), np.asarray(scores, dtype=float)
    share, mean = calibration_curve(y, p, n_bins=bins, strategy="uniform", pos_label=1)
    edges = np.linspace(0.0, 1.0, bins + 1)
    counts = np.bincount(np.searchsorted(edges[1:-1], p), minlength=bins)  # calibration_curve's own binning
    filled = [i for i in range(bins) if counts[i]]
    rows: list[CalibrationBin] = [
        {"low": float(edges[i]), "high": float(edges[i + 1]), "n": int(counts[i]), "mean_score": float(m),
         "harmful_share": float(s)} for i, m, s in zip(filled, mean, share)]
    ece = sum(r["n"] * abs(r["mean_score"] - r["harmful_share"]) for r in rows) / len(p)
    return {"bins": rows, "ece": float(ece), "brier": float(np.mean((p - y) ** 2))}


def metrics(labels: Sequence[int], scores: Sequence[float], threshold: float, fpr: float = 0.01, bins: int = 10,
            samples: int = 200, seed: int = 0) -> Metrics:
    """Every number for one set of examples (all of them, or one category)."""
    pos = sum(1 for y in labels if y == 1)
    neg = len(labels) - pos
    out: Metrics = {"n": len(labels), "positives": pos, "negatives": neg, "auc": None, "auc_low": None,
                    "auc_high": None, "at_fpr": None, "at_threshold": at_threshold(labels, scores, threshold),
                    "calibration": calibration(labels, scores, bins), "roc": None, "notes": notes(pos, neg, fpr)}
    if pos and neg:
        out["roc"] = curve = roc(labels, scores)
        out["auc"] = auc(labels, scores)
        out["auc_low"], out["auc_high"] = bootstrap_interval(labels, scores, auc, samples, seed)
        tpr, got, thr = tpr_at_fpr(curve, fpr)
        low, high = bootstrap_interval(labels, scores, lambda y, s: tpr_at_fpr(roc(y, s), fpr)[0], samples, seed)
        out["at_fpr"] = {"target": fpr, "threshold": thr, "tpr": tpr, "fpr": got, "low": low, "high": high}
    return out


def notes(pos: int, neg: int, fpr: float) -> list[str]:
    """What the sample sizes allow, in words (the report and the terminal show them)."""
    out = []
    if not pos or not neg:
        which = "harmless" if not neg else "harmful"
        out.append(f"no {which} examples: AUC and the TPR at a chosen FPR need both classes")
    elif min(pos, neg) < MIN_CLASS:
        out.append(f"n too small for intervals ({pos} harmful, {neg} harmless; fewer than {MIN_CLASS} in a class)")
    if neg and fpr < 1 / neg:
        out.append(f"with {neg} harmless examples the smallest non-zero FPR is {1 / neg:.3g}: "
                   f"FPR <= {fpr:g} means no false positives at all")
    return out


__all__ = ["MIN_CLASS", "Rate", "AtThreshold", "AtFPR", "Curve", "Calibration", "Metrics", "wilson", "at_threshold",
           "roc", "auc", "tpr_at_fpr", "calibration", "metrics", "bootstrap_interval"]
