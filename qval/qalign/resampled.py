"""Pooled correlations of many bootstrap resamples at once, each resample given as integer weights on the pairs.

A resample that draws whole states (clusters of pairs) with replacement is a weight per pair: how often its state
was drawn. Each function returns, for every row of weights, exactly the statistic scipy gives on the sample with
each pair repeated that many times (ties, including a pair's own copies, counted as scipy counts them:
``tests/test_stats_and_metrics.py`` checks it), computed as array operations instead of one scipy call per
resample: the pooled metrics' CIs and their coverage simulation both need thousands of them.
"""

from __future__ import annotations

import numpy as np

_SIGN_BLOCK = 4_000_000  # entries of the pairwise sign matrix held at once


def _tie_groups(x: np.ndarray, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(B, distinct values) weight of each value of x in each resample, in increasing order; and each pair's value."""
    _, group = np.unique(x, return_inverse=True)
    order = np.argsort(group, kind="stable")
    starts = np.flatnonzero(np.r_[True, np.diff(group[order]) != 0])
    return np.add.reduceat(weights[:, order], starts, axis=1), group


def _midranks(x: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Average ranks of x (ties share the mean of their ranks) in each weighted sample: (B, n) for (B, n) weights."""
    tied, group = _tie_groups(x, weights)
    below = np.cumsum(tied, axis=1) - tied
    return (below + (tied + 1) / 2)[:, group]  # ranks below+1 … below+W: their mean


def _weighted_pearson(x: np.ndarray, y: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Pearson r of rows of x and y ((B, n) or (n,)) under (B, n) weights; NaN where either side is constant."""
    total = weights.sum(axis=1, keepdims=True)
    dx = x - (weights * x).sum(axis=1, keepdims=True) / total
    dy = y - (weights * y).sum(axis=1, keepdims=True) / total
    sxy, sxx, syy = ((weights * a * b).sum(axis=1) for a, b in ((dx, dy), (dx, dx), (dy, dy)))
    with np.errstate(divide="ignore", invalid="ignore"):
        r = sxy / np.sqrt(sxx * syy)
    # A constant side leaves rounding noise, not zero, in its sum of squares: undefined, as scipy says.
    scale = np.maximum((weights * x**2).sum(axis=1), 1e-300), np.maximum((weights * y**2).sum(axis=1), 1e-300)
    constant = (sxx <= 1e-12 * scale[0]) | (syy <= 1e-12 * scale[1])
    return np.where(constant, np.nan, np.clip(r, -1.0, 1.0))


def spearman(x: np.ndarray, y: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Spearman ρ (Pearson r of average ranks) of each weighted resample."""
    weights = np.asarray(weights, float)
    return _weighted_pearson(_midranks(x, weights), _midranks(y, weights), weights)


def pearson(x: np.ndarray, y: np.ndarray, weights: np.ndarray) -> np.ndarray:
    weights = np.asarray(weights, float)
    return _weighted_pearson(np.asarray(x, float)[None, :], np.asarray(y, float)[None, :], weights)


def kendall(x: np.ndarray, y: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Kendall τ-b of each weighted resample: (concordant − discordant pairs) / √((pairs − x-ties)(pairs − y-ties)),
    the pair counts weighted by products of the pairs' weights (a pair's copies are tied with each other)."""
    weights = np.asarray(weights, float)
    x, y = np.asarray(x, float), np.asarray(y, float)
    s = np.zeros(weights.shape[0])
    step = max(1, _SIGN_BLOCK // x.size)
    for i in range(0, x.size, step):  # Σ_{i<j} w_i w_j sign_ij, from row blocks of the n × n signs (memory bound)
        sign = np.sign(x[i : i + step, None] - x[None, :]) * np.sign(y[i : i + step, None] - y[None, :])
        s += ((weights @ sign.T) * weights[:, i : i + step]).sum(axis=1) / 2

    def tied_pairs(v):
        tied, _ = _tie_groups(v, weights)
        return (tied * (tied - 1)).sum(axis=1) / 2

    total = weights.sum(axis=1)
    pairs = total * (total - 1) / 2
    with np.errstate(divide="ignore", invalid="ignore"):
        return s / np.sqrt((pairs - tied_pairs(x)) * (pairs - tied_pairs(y)))
