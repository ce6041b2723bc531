"""The one bootstrap: seeded resampling and percentile intervals, for every interval in eval.json.

`bootstrap` resamples each data set with replacement (one seeded RNG, data sets in order) and
applies a statistic; `interval` takes the percentile interval of the draws, linearly
interpolated between order statistics (numpy's default), so every low/high means the same thing.
"""
from __future__ import annotations

import math
import random
from typing import Callable, Sequence, TypeVar

T = TypeVar("T")


def bootstrap(data: Sequence[Sequence], statistic: Callable[..., T], samples: int = 200, seed: int = 0) -> list[T]:
    """`samples` values of statistic(*resampled data sets); none when any data set is empty."""
    if not data or any(len(d) == 0 for d in data):
        return []
    rng = random.Random(seed)
    return [statistic(*([d[rng.randrange(len(d))] for _ in range(len(d))] for d in data)) for _ in range(samples)]


def quantile(values: Sequence[float], q: float) -> float:
    """The q-quantile of `values`, interpolated between the two nearest order statistics."""
    v = sorted(values)
    pos = q * (len(v) - 1)
    lo, hi = math.floor(pos), math.ceil(pos)
    return v[lo] + (v[hi] - v[lo]) * (pos - lo)


def interval(draws: Sequence[float], point: float, level: float = 0.95) -> tuple[float, float]:
    """Percentile interval of the draws; (point, point) when there are none."""
    if not draws:
        return point, point
    tail = (1 - level) / 2
    return quantile(draws, tail), quantile(draws, 1 - tail)


def mean(xs: Sequence[float]) -> float:
    return sum(xs) / len(xs) if xs else 0.0


def bootstrap_mean(xs: Sequence[float], samples: int = 200, seed: int = 0, level: float = 0.95) -> dict:
    """{n, mean, low, high}: the mean with a percentile bootstrap interval."""
    point = mean(xs)
    low, high = interval(bootstrap([xs], mean, samples, seed), point, level)
    return {"n": len(xs), "mean": point, "low": low, "high": high}


MIN_INTERVAL_N = 5  # below this a bootstrap interval says more about the resampling than about the data


def too_few(n: object, min_n: int = MIN_INTERVAL_N) -> str | None:
    """The one rule for every interval the report draws: a note to show instead of an interval
    drawn from a handful of points ("n = 3: too few for an interval"), or None when n is enough.
    A missing or non-numeric n is not judged here (None)."""
    if isinstance(n, bool) or not isinstance(n, int) or n >= min_n:
        return None
    return f"n = {n}: too few for an interval"
