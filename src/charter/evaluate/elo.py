"""Elo scores from pairwise (soft) outcomes, with bootstrap confidence intervals.

A comparison is (a, b, s): player a scored s in [0, 1] against b (1 = a clearly better; a judge's
probability is a soft outcome). Elo is the Bradley-Terry fit on the Elo scale:
P(a beats b) = 1 / (1 + 10 ** ((elo_b - elo_a) / 400)), so a 75% win rate is a 191-point gap.
Scores are centred at mean 0 (only differences mean anything, as in the paper's figures).
"""
from __future__ import annotations

import math
from typing import Sequence

from charter.stats import bootstrap, interval

Comparison = tuple[str, str, float]
SCALE = 400.0


def win_prob(elo_a: float, elo_b: float) -> float:
    return 1.0 / (1.0 + 10 ** ((elo_b - elo_a) / SCALE))


def fit_elo(comparisons: Sequence[Comparison], players: Sequence[str] | None = None,
            prior: float = 0.5, iters: int = 2000, tol: float = 1e-10) -> dict[str, float]:
    """Maximum-likelihood Elo (Hunter's MM algorithm on soft wins).

    `prior` adds that many virtual ties between every pair of players that met, so a player who
    won every comparison gets a large finite score instead of infinity.
    """
    names = list(players) if players else sorted({p for a, b, _ in comparisons for p in (a, b)})
    idx = {n: i for i, n in enumerate(names)}
    k = len(names)
    games = [[0.0] * k for _ in range(k)]
    wins = [0.0] * k
    for a, b, s in comparisons:
        i, j = idx[a], idx[b]
        games[i][j] += 1
        games[j][i] += 1
        wins[i] += s
        wins[j] += 1 - s
    for i in range(k):
        for j in range(k):
            if i != j and games[i][j]:
                games[i][j] += prior
                wins[i] += prior / 2
    strength = [1.0] * k
    for _ in range(iters):
        new = [wins[i] / max(sum(games[i][j] / (strength[i] + strength[j]) for j in range(k) if j != i), 1e-300)
               if wins[i] > 0 else 1e-12 for i in range(k)]
        norm = math.exp(sum(math.log(x) for x in new) / k)  # geometric mean 1: mean Elo 0
        new = [x / norm for x in new]
        done = max(abs(math.log(x / y)) for x, y in zip(new, strength)) < tol
        strength = new
        if done:
            break
    return {n: SCALE * math.log10(strength[idx[n]]) for n in names}


def bootstrap_elo(comparisons: Sequence[Comparison], players: Sequence[str] | None = None,
                  samples: int = 200, seed: int = 0, level: float = 0.95,
                  prior: float = 0.5, reference: str | None = None) -> dict[str, dict[str, float]]:
    """Elo of every player with a percentile bootstrap interval (comparisons resampled).

    With `reference`, every fit is shifted so that player scores 0 (intervals of differences).
    """
    names = list(players) if players else sorted({p for a, b, _ in comparisons for p in (a, b)})
    point = _shift(fit_elo(comparisons, names, prior), reference)
    fits = bootstrap([comparisons], lambda c: _shift(fit_elo(c, names, prior, iters=500, tol=1e-8), reference),
                     samples, seed)
    out = {}
    for name in names:
        low, high = interval([f[name] for f in fits], point[name], level)
        out[name] = {"elo": point[name], "low": low, "high": high}
    return out


def _shift(elo: dict[str, float], reference: str | None) -> dict[str, float]:
    zero = elo[reference] if reference else 0.0
    return {k: v - zero for k, v in elo.items()}
