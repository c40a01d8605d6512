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


@dataclass(eq=False)
class Resampling:
    """Ratios of column sums over the same units (rows) to bootstrap: what ``bootstrap_ratios`` computes, as a
    request that ``bootstrap_ratios_many`` answers together with others (the metric stage gathers every ratio
    metric of many cells into one product per sample size)."""

    columns: np.ndarray  # (units, columns)
    ratios: list[tuple[int, ...]]
    n_boot: int = N_BOOT
    seed: int = 0


def bootstrap_ratios(
    columns: np.ndarray,
    ratios: list[tuple[int, ...]],
    n_boot: int = N_BOOT,
    seed: int = 0,
    dtype=None,
) -> list[MetricValue]:
    """Ratios of column sums over the same units (rows), all from one resampling.

    A ratio ``(i, j)`` is Σcolumns[:, i] / Σcolumns[:, j]; ``(i, j, k, l)`` is that divided by Σcolumns[:, k] /
    Σcolumns[:, l] (a policy's ratio over its baseline's, the units resampled together: a paired bootstrap). The
    values are float64 (pairwise) sums. The resampled sums are exact (``_exact_sums``), so they do not depend on
    which other columns or requests share the product: a metric back-filled alone gets the interval a full ingest
    gives it. ``dtype=np.float64`` instead multiplies the columns as they are in float64 (replay's rows, which
    share one product by construction, keep the digits they had).
    """
    if dtype is not None:
        return _float_product_ratios(np.asarray(columns, float), ratios, n_boot, seed, dtype)
    return bootstrap_ratios_many([Resampling(np.asarray(columns, float), ratios, n_boot, seed)])[0]


def _apply(ratios: list[tuple[int, ...]], sums: np.ndarray) -> np.ndarray:
    """sums: (..., columns) → (..., ratios)."""
    out = sums[..., [r[0] for r in ratios]] / sums[..., [r[1] for r in ratios]]
    for k, r in enumerate(ratios):
        if len(r) == 4:
            out[..., k] = out[..., k] / (sums[..., r[2]] / sums[..., r[3]])
    return out


def _point_values(columns: np.ndarray, ratios: list[tuple[int, ...]]) -> np.ndarray:
    # Each column summed on its own (numpy's pairwise sum), not columns.sum(axis=0), which adds row after row.
    with np.errstate(divide="ignore", invalid="ignore"):
        return _apply(ratios, np.array([columns[:, i].sum() for i in range(columns.shape[1])]))


def _with_intervals(values: np.ndarray, stats: np.ndarray | None, n: int) -> list[MetricValue]:
    out = []
    for k, value in enumerate(values):
        if stats is None or not np.isfinite(value):
            out.append(MetricValue(finite_or_none(value), None, None, n))
            continue
        lo, hi = _interval(stats[:, k])
        out.append(MetricValue(float(value), lo, hi, n))
    return out


def _float_product_ratios(columns: np.ndarray, ratios, n_boot: int, seed: int, dtype) -> list[MetricValue]:
    n = columns.shape[0]
    if n == 0:
        return [MetricValue.undefined() for _ in ratios]
    values = _point_values(columns, ratios)
    if n < 2:
        return _with_intervals(values, None, n)
    stacked = columns.astype(dtype)
    with np.errstate(divide="ignore", invalid="ignore"):
        stats = np.concatenate([_apply(ratios, block @ stacked) for block in _count_blocks(n, n_boot, seed, dtype)])
    return _with_intervals(values, stats, n)


def bootstrap_ratios_many(requests: list[Resampling]) -> list[list[MetricValue]]:
    """``bootstrap_ratios`` of each request, the requests of one (units, resamples, seed) sharing one product of
    the resample counts with all their columns: a product reads the whole count matrix however few its columns,
    so one per metric per cell was the bulk of ingest. Exact sums make the grouping invisible in the results."""
    out: list[list[MetricValue] | None] = [None] * len(requests)
    groups: dict[tuple[int, int, int], list[int]] = {}
    for i, r in enumerate(requests):
        n = r.columns.shape[0]
        if n == 0:
            out[i] = [MetricValue.undefined() for _ in r.ratios]
        elif n < 2:
            out[i] = _with_intervals(_point_values(r.columns, r.ratios), None, n)
        else:
            groups.setdefault((n, r.n_boot, r.seed), []).append(i)
    for (n, n_boot, seed), members in groups.items():
        sums = _exact_sums([requests[i].columns for i in members], n, n_boot, seed)
        for i, s in zip(members, sums, strict=True):
            r = requests[i]
            with np.errstate(divide="ignore", invalid="ignore"):
                out[i] = _with_intervals(_point_values(r.columns, r.ratios), _apply(r.ratios, s), n)
    return [o if o is not None else [] for o in out]


_F32_EXACT = 2.0**24  # below this, integer sums are exact in float32
# Bits of a column kept below its largest magnitude (each value is cut to a multiple of 2**-_KEPT_BITS of it, at
# least): a relative 1.5e-11, where float32 products kept 24 bits (6e-8). One float64 part holds them up to 131,071
# units, so a cell's float columns cost one product column each.
_KEPT_BITS = 36


def _split(column: np.ndarray, n: int) -> tuple[np.ndarray, list[float], bool]:
    """A column as integer-valued parts times powers of two (column = Σ parts[:, k] · units[k], bits that lie more
    than ``_KEPT_BITS`` (or as many more as the parts hold) below the largest value cut off), each part small enough that any resample of
    n units sums it exactly in float32 (third item True) or float64. An exact sum does not depend on the order
    of its additions, hence not on the product it is computed in. A column with a NaN or an infinity is used as
    it is (its resampled sums are not finite whatever the order)."""
    if column.size == 0 or not np.isfinite(column).all():
        return column[:, None], [1.0], False
    largest = float(np.abs(column).max())
    if largest == 0.0:
        return column[:, None], [1.0], True
    whole = bool((column == np.trunc(column)).all())
    if whole and n * largest < _F32_EXACT:
        return column[:, None], [1.0], True
    bits = 53 - int(n).bit_length()  # n · 2**bits ≤ 2**53: a resample's sum of a part stays exact
    if whole and largest < 2.0**bits:
        return column[:, None], [1.0], False
    top = int(np.frexp(largest)[1])  # largest < 2**top
    parts, units, rest = [], [], column
    for k in range(1, -(-_KEPT_BITS // bits) + 1):
        unit = float(np.ldexp(1.0, top - k * bits))
        if unit == 0.0:  # below the smallest subnormal: nothing left to represent
            break
        part = np.trunc(rest / unit)  # exact: a power-of-two scaling, then dropping the fraction
        parts.append(part)
        units.append(unit)
        rest = rest - part * unit  # exact: part · unit holds rest's leading bits
    return np.stack(parts, axis=1), units, False


def _exact_sums(requests: list[np.ndarray], n: int, n_boot: int, seed: int) -> list[np.ndarray]:
    """Per request (an (n, columns) array), its columns' sums over each resample of its n units, (n_boot,
    columns), exactly (``_split``); float32 parts in one float32 product, the others in one float64 product."""
    narrow: list[np.ndarray] = []
    wide: list[np.ndarray] = []
    layout: list[list[tuple[bool, int, list[float]]]] = []  # per request, per column: (narrow?, first part, units)
    width = {True: 0, False: 0}  # parts so far in the float32 and the float64 product
    for columns in requests:
        mine = []
        for j in range(columns.shape[1]):
            parts, units, small = _split(columns[:, j], n)
            mine.append((small, width[small], units))
            width[small] += parts.shape[1]
            (narrow if small else wide).append(parts)
        layout.append(mine)
    sums32 = _product(narrow, n, n_boot, seed, np.float32)
    sums64 = _product(wide, n, n_boot, seed, np.float64)
    out = []
    for mine in layout:
        sums = []
        for small, first, units in mine:
            block = sums32 if small else sums64
            total = block[:, first].astype(np.float64) * units[0]
            for k in range(1, len(units)):
                total = total + block[:, first + k] * units[k]
            sums.append(total)
        out.append(np.stack(sums, axis=1))
    return out


def _product(parts: list[np.ndarray], n: int, n_boot: int, seed: int, dtype) -> np.ndarray:
    if not parts:
        return np.empty((n_boot, 0), dtype)
    stacked = np.empty((n, sum(p.shape[1] for p in parts)), dtype)  # filled in place: no float64 copy of it all
    at = 0
    for p in parts:
        stacked[:, at : at + p.shape[1]] = p
        at += p.shape[1]
    blocks = [block @ stacked for block in _count_blocks(n, n_boot, seed, dtype)]
    return blocks[0] if len(blocks) == 1 else np.concatenate(blocks)


def ratio_request(num, den, num_b=None, den_b=None, n_boot: int = N_BOOT, seed: int = 0) -> Resampling:
    """Ratio of sums Σnum/Σden over paired units, optionally divided by a second paired ratio Σnum_b/Σden_b, as
    a request for ``bootstrap_ratios_many``."""
    arrays = [np.asarray(a, float) for a in (num, den) + ((num_b, den_b) if num_b is not None else ())]
    ratio = (0, 1, 2, 3) if len(arrays) == 4 else (0, 1)
    return Resampling(np.stack(arrays, axis=1), [ratio], n_boot, seed)


def mean_request(values, n_boot: int = N_BOOT, seed: int = 0) -> Resampling:
    """The mean of values (Σvalues/Σ1) as a request for ``bootstrap_ratios_many``."""
    values = np.asarray(values, float)
    return ratio_request(values, np.ones_like(values), n_boot=n_boot, seed=seed)


def bootstrap_ratio(num, den, n_boot: int = N_BOOT, seed: int = 0, num_b=None, den_b=None) -> MetricValue:
    """``ratio_request``'s ratio with its CI."""
    return bootstrap_ratios_many([ratio_request(num, den, num_b, den_b, n_boot, seed)])[0][0]


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
    return bootstrap_ratios_many([mean_request(values, n_boot, seed)])[0][0]


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
