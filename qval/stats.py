"""Statistics shared by all metrics: bootstrap CIs over resampled units, and a small-n interval for bounded means."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

N_BOOT = 1000
CONFIDENCE = 0.95
_CHUNK = 2_000_000  # resample-matrix elements per chunk: bounds memory on large cells


@dataclass(frozen=True)
class MetricValue:
    """A metric with its 95% bootstrap CI and its n. ``value`` None means undefined (stored as NULL)."""

    value: float | None
    ci_low: float | None
    ci_high: float | None
    n: int
    # Distinct states behind n, for Q-alignment metrics counted in evaluation points (a state visited by several
    # points counts once here); None where n already counts independent units.
    n_states: int | None = None

    @classmethod
    def undefined(cls, n: int = 0, n_states: int | None = None) -> MetricValue:
        return cls(None, None, None, n, n_states)


def finite_or_none(x) -> float | None:
    return float(x) if x is not None and np.isfinite(x) else None


def _interval(stats: np.ndarray) -> tuple[float | None, float | None]:
    stats = stats[np.isfinite(stats)]
    if stats.size == 0:
        return None, None
    alpha = (1 - CONFIDENCE) / 2
    lo, hi = np.quantile(stats, [alpha, 1 - alpha])
    return float(lo), float(hi)


def bootstrap_units(
    n_units: int, statistic: Callable[[np.ndarray], float], value: float | None, n_boot: int = N_BOOT, seed: int = 0
) -> MetricValue:
    """CI for a statistic of resampled units (states, samples), computed by calling ``statistic(indices)``."""
    if value is None or not np.isfinite(value) or n_units < 2:
        return MetricValue(finite_or_none(value), None, None, n_units)
    rng = np.random.default_rng(seed)
    stats = np.array([statistic(rng.integers(0, n_units, n_units)) for _ in range(n_boot)], dtype=float)
    lo, hi = _interval(stats)
    return MetricValue(float(value), lo, hi, n_units)


def bootstrap_batched(
    n_units: int,
    statistic: Callable[[np.ndarray], np.ndarray],
    value: float | None,
    n_boot: int = N_BOOT,
    seed: int = 0,
) -> MetricValue:
    """``bootstrap_units`` for a statistic that takes a block of resamples at once (rows of unit indices) and
    returns one value per row: the same draws, in the same order, hence the same interval, as one array operation
    instead of a Python call per resample."""
    if value is None or not np.isfinite(value) or n_units < 2:
        return MetricValue(finite_or_none(value), None, None, n_units)
    rng = np.random.default_rng(seed)
    per_block = max(1, _CHUNK // n_units)
    stats = [
        np.asarray(statistic(rng.integers(0, n_units, (min(per_block, n_boot - start), n_units))), float)
        for start in range(0, n_boot, per_block)
    ]
    lo, hi = _interval(np.concatenate(stats))
    return MetricValue(float(value), lo, hi, n_units)


def bootstrap_clusters(
    clusters: np.ndarray,
    statistic: Callable[[np.ndarray], np.ndarray],
    value: float | None,
    n_boot: int = N_BOOT,
    seed: int = 0,
) -> MetricValue:
    """Percentile CI of a statistic of rows that come in clusters (the evaluation points of one state), resampling
    whole clusters with replacement. ``statistic`` takes (resamples, rows) weights, each row's weight being how
    often its cluster was drawn, and returns one value per resample. n is the number of rows."""
    labels, inverse = np.unique(np.asarray(clusters), return_inverse=True)
    n_rows = inverse.size
    if value is None or not np.isfinite(value) or labels.size < 2:
        return MetricValue(finite_or_none(value), None, None, n_rows)
    stats = []
    for block in _resample_counts(labels.size, n_boot, seed):
        for start in range(0, block.shape[0], max(1, _CHUNK // n_rows)):  # bound the (resamples, rows) weights
            weights = block[start : start + max(1, _CHUNK // n_rows)].astype(np.float64)[:, inverse]
            stats.append(np.asarray(statistic(weights), float))
    lo, hi = _interval(np.concatenate(stats))
    return MetricValue(float(value), lo, hi, n_rows)


_CACHE_LIMIT = 20_000_000  # B×n resample counts kept in memory for reuse (float32: 80 MB at most)
_counts_cache: dict[tuple[int, int, int], np.ndarray] = {}


def _resample_counts(n: int, n_boot: int, seed: int):
    """Yield blocks of multinomial resample counts (rows: resamples, columns: units).

    Each row counts how often each unit is drawn when resampling n units with replacement: the same draws as
    indexing, but a ratio of sums then becomes one matrix product. Blocks are cached per (n, B, seed), so every
    metric of every cell with n units shares them: ingest stays fast on million-row results.
    """
    key = (n, n_boot, seed)
    if key in _counts_cache:
        yield _counts_cache[key]
        return
    rng = np.random.default_rng(seed)
    per_block = max(1, _CHUNK // n)
    blocks = []
    for start in range(0, n_boot, per_block):
        rows = min(per_block, n_boot - start)
        idx = rng.integers(0, n, (rows, n)) + (np.arange(rows)[:, None] * n)
        # float32 halves the memory traffic of the products; counts are small integers, exact in float32.
        block = np.bincount(idx.ravel(), minlength=rows * n).reshape(rows, n).astype(np.float32)
        blocks.append(block)
        yield block
    if n * n_boot <= _CACHE_LIMIT:
        if len(_counts_cache) > 8:
            _counts_cache.clear()
        _counts_cache[key] = np.concatenate(blocks)


def _count_blocks(n: int, n_boot: int, seed: int, dtype):
    """``_resample_counts`` in ``dtype``. float64 counts of the last (n, B, seed) are kept whole: a replay sweep's
    rows all share them, and converting the float32 cache for each row would cost more than the product."""
    if dtype == np.float32:
        yield from _resample_counts(n, n_boot, seed)
        return
    key = (n, n_boot, seed)
    if n * n_boot > _CACHE_LIMIT:  # too large to keep: one block at a time, nothing held
        for block in _resample_counts(n, n_boot, seed):
            yield block.astype(dtype)
        return
    if _counts64[0] != key:
        _counts64[:] = [key, np.concatenate([block.astype(dtype) for block in _resample_counts(n, n_boot, seed)])]
    yield _counts64[1]


_counts64: list = [None, None]


def bootstrap_ratios(
    columns: np.ndarray,
    ratios: list[tuple[int, ...]],
    n_boot: int = N_BOOT,
    seed: int = 0,
    dtype=np.float32,
) -> list[MetricValue]:
    """Ratios of column sums over the same units (rows), all from one resampling: one matrix product of the resample
    counts with the columns, whatever the number of ratios.

    A ratio ``(i, j)`` is Σcolumns[:, i] / Σcolumns[:, j]; ``(i, j, k, l)`` is that divided by Σcolumns[:, k] /
    Σcolumns[:, l] (a policy's ratio over its baseline's, the units resampled together: a paired bootstrap). The
    products are in ``dtype``: float32 halves their memory traffic on million-row cells (sums of ≤ 1e6 terms stay
    accurate to about 1e-6, far below the bootstrap's own error); the values are float64 sums either way.
    """
    columns = np.asarray(columns, float)
    n = columns.shape[0]
    if n == 0:
        return [MetricValue.undefined() for _ in ratios]

    def apply(sums: np.ndarray) -> np.ndarray:  # sums: (..., columns) → (..., ratios)
        out = sums[..., [r[0] for r in ratios]] / sums[..., [r[1] for r in ratios]]
        for k, r in enumerate(ratios):
            if len(r) == 4:
                out[..., k] = out[..., k] / (sums[..., r[2]] / sums[..., r[3]])
        return out

    with np.errstate(divide="ignore", invalid="ignore"):
        # Each column summed on its own (numpy's pairwise sum), not columns.sum(axis=0), which adds row after row.
        values = apply(np.array([columns[:, i].sum() for i in range(columns.shape[1])]))
        if n < 2:
            return [MetricValue(finite_or_none(v), None, None, n) for v in values]
        stacked = columns.astype(dtype)
        stats = np.concatenate([apply(block @ stacked) for block in _count_blocks(n, n_boot, seed, dtype)])
    out = []
    for k, value in enumerate(values):
        if not np.isfinite(value):
            out.append(MetricValue(finite_or_none(value), None, None, n))
            continue
        lo, hi = _interval(stats[:, k])
        out.append(MetricValue(float(value), lo, hi, n))
    return out


def bootstrap_ratio(num, den, n_boot: int = N_BOOT, seed: int = 0, num_b=None, den_b=None) -> MetricValue:
    """Ratio of sums Σnum/Σden over paired units, optionally divided by a second paired ratio Σnum_b/Σden_b:
    ``bootstrap_ratios`` with one ratio."""
    arrays = [np.asarray(a, float) for a in (num, den) + ((num_b, den_b) if num_b is not None else ())]
    ratio = (0, 1, 2, 3) if len(arrays) == 4 else (0, 1)
    return bootstrap_ratios(np.stack(arrays, axis=1), [ratio], n_boot=n_boot, seed=seed)[0]


def bootstrap_mean_ratio(
    a: np.ndarray, b: np.ndarray, value: float | None, n_boot: int = N_BOOT, seed: int = 0
) -> MetricValue:
    """mean(a)/mean(b), the caller's ``value``, with the CI of Σa/Σb (the same statistic on a resample) from
    ``bootstrap_ratios`` in float64 (replay's gains keep the digits they had when they came from a float64
    per-resample statistic)."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    if value is None or not np.isfinite(value) or a.size < 2:
        return MetricValue(finite_or_none(value), None, None, a.size)
    ci = bootstrap_ratios(np.stack([a, b], axis=1), [(0, 1)], n_boot=n_boot, seed=seed, dtype=np.float64)[0]
    return MetricValue(float(value), ci.ci_low, ci.ci_high, a.size)


def bootstrap_mean(values: np.ndarray, n_boot: int = N_BOOT, seed: int = 0) -> MetricValue:
    values = np.asarray(values, float)
    return bootstrap_ratio(values, np.ones_like(values), n_boot=n_boot, seed=seed)


def paired_permutation_test(x, y, n_resamples: int = 10_000, seed: int = 0) -> float | None:
    """Two-sided p-value of a sign-flip permutation test on paired differences (mean of x − y = 0).

    Exact over all sign patterns when there are at most 16 pairs; Monte-Carlo (with the +1 correction) above.
    """
    d = np.asarray(x, float) - np.asarray(y, float)
    d = d[np.isfinite(d)]
    if d.size == 0:
        return None
    observed = abs(d.mean())
    if d.size <= 16:
        signs = ((np.arange(2**d.size)[:, None] >> np.arange(d.size)) & 1) * 2 - 1
        return float(np.mean(np.abs((signs * d).mean(axis=1)) >= observed - 1e-12))
    rng = np.random.default_rng(seed)
    signs = rng.choice([-1.0, 1.0], size=(n_resamples, d.size))
    extreme = np.sum(np.abs((signs * d).mean(axis=1)) >= observed - 1e-12)
    return float((extreme + 1) / (n_resamples + 1))


LOW_N = 20  # below this many independent units a CI is marked "low n" in reports


def bounded_mean(values, low: float, high: float, clusters=None) -> MetricValue:
    """Mean of values bounded in [low, high] with a 95% interval that holds its level at small n.

    A t-interval (or a percentile bootstrap) collapses when a small sample happens to have little spread: a scorer
    with per-state ρ near 1 gives nine values of 1.0 and an interval [1, 1] that misses a true mean of 0.92 a third
    of the time (measured coverage 0.71–0.75 at n = 9). This interval adds one pseudo-observation of the largest
    variance a value in [low, high] with mean μ can have, (μ − low)(high − μ), to the sample variance, and keeps
    every μ with |mean − μ| ≤ t_{G−1} · sd(μ) / √G: a Wilson-type score interval, solved as a quadratic. It
    tends to the t-interval as n grows. ``tests/test_ci_coverage.py`` checks its coverage by simulation at the
    suites' sizes.

    ``clusters`` (one label per value): values sharing a label (a state visited by several evaluation points) are
    not independent; the variance is then the cluster-robust one and G is the number of clusters. Without labels,
    G = n and the variance is the sample variance.
    """
    from scipy import stats as sps

    x = np.asarray(values, float)
    finite = np.isfinite(x)
    if not finite.all():  # a NaN would make the mean NaN and the interval the whole range
        x = x[finite]
        clusters = None if clusters is None else np.asarray(clusters)[finite]
    n = x.size
    if n == 0:
        return MetricValue.undefined()
    mean = float(x.mean())
    if clusters is None:
        groups = n
        var = float(x.var(ddof=1)) if n > 1 else 0.0
    else:
        labels, inverse = np.unique(np.asarray(clusters), return_inverse=True)
        groups = labels.size
        resid = np.bincount(inverse, weights=x - mean, minlength=groups)  # Σ over a cluster of (x − mean)
        # Cluster-robust variance of the mean, scaled so that var / G is it (equals s² when clusters are single).
        var = float(groups / max(groups - 1, 1) * (resid**2).sum() / n**2 * groups) if groups > 1 else 0.0
    if groups < 2:
        return MetricValue(mean, None, None, n)
    k = 1.0  # pseudo-observations of the bound-maximal variance
    c = float(sps.t.ppf(0.5 + CONFIDENCE / 2, groups - 1)) ** 2 / groups
    w = c * k / (groups + k)
    # (mean − μ)² ≤ c · (G·var + k(μ − low)(high − μ)) / (G + k), as a μ² + b μ + d ≤ 0
    a2 = 1.0 + w
    b1 = -(2.0 * mean + w * (low + high))
    d0 = mean**2 - c * groups * var / (groups + k) + w * low * high
    disc = max(b1 * b1 - 4.0 * a2 * d0, 0.0)
    lo = (-b1 - np.sqrt(disc)) / (2.0 * a2)
    hi = (-b1 + np.sqrt(disc)) / (2.0 * a2)
    return MetricValue(mean, float(max(low, min(lo, mean))), float(min(high, max(hi, mean))), n)


def wilson_proportion(hits, clusters=None) -> MetricValue:
    """A share of successes with a Wilson score interval: the standard interval for a binomial proportion, which
    keeps its level near 0 and 1 where a percentile bootstrap does not (measured at n = 50 and a true share of
    0.96: bootstrap 0.86, Wilson 0.95).

    ``clusters`` (one label per hit): hits that share a label (one state visited by several evaluation points) are
    not independent, so the interval counts distinct labels, not hits; conservative when a label's hits differ.
    ``tests/test_ci_coverage.py`` checks the coverage by simulation at the suites' sizes."""
    from scipy import stats as sps

    x = np.asarray(hits, float)
    n = x.size
    if n == 0:
        return MetricValue.undefined()
    share = float(x.mean())
    units = n if clusters is None else int(np.unique(np.asarray(clusters)).size)
    z = float(sps.norm.ppf(0.5 + CONFIDENCE / 2))
    c = z * z / units
    centre = (share + c / 2) / (1 + c)
    half = z * np.sqrt(share * (1 - share) / units + c / (4 * units)) / (1 + c)
    # At a share of 0 or 1 the bound is the share itself; rounding would otherwise leave it a hair inside (2.8e-17).
    return MetricValue(share, float(min(share, max(0.0, centre - half))), float(max(share, min(1.0, centre + half))), n)
