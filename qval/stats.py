"""Statistics shared by all metrics: percentile bootstrap CIs over resampled units."""
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

    @classmethod
    def undefined(cls, n: int = 0) -> MetricValue:
        return cls(None, None, None, n)


def _finite_or_none(x) -> float | None:
    return float(x) if x is not None and np.isfinite(x) else None


def _interval(stats: np.ndarray) -> tuple[float | None, float | None]:
    stats = stats[np.isfinite(stats)]
    if stats.size == 0:
        return None, None
    alpha = (1 - CONFIDENCE) / 2
    lo, hi = np.quantile(stats, [alpha, 1 - alpha])
    return float(lo), float(hi)


def bootstrap_units(n_units: int, statistic: Callable[[np.ndarray], float], value: float | None,
                    n_boot: int = N_BOOT, seed: int = 0) -> MetricValue:
    """CI for a statistic of resampled units (states, samples), computed by calling ``statistic(indices)``."""
    if value is None or not np.isfinite(value) or n_units < 2:
        return MetricValue(_finite_or_none(value), None, None, n_units)
    rng = np.random.default_rng(seed)
    stats = np.array([statistic(rng.integers(0, n_units, n_units)) for _ in range(n_boot)], dtype=float)
    lo, hi = _interval(stats)
    return MetricValue(float(value), lo, hi, n_units)


def bootstrap_ratio(num: np.ndarray, den: np.ndarray, n_boot: int = N_BOOT, seed: int = 0,
                    num_b: np.ndarray | None = None, den_b: np.ndarray | None = None) -> MetricValue:
    """Ratio of sums Σnum/Σden over paired units, optionally divided by a second paired ratio Σnum_b/Σden_b.

    Units are resampled together (paired bootstrap), vectorised in chunks so a million-row cell stays fast.
    """
    num, den = np.asarray(num, float), np.asarray(den, float)
    n = num.size
    paired = num_b is not None

    def ratio(idx_sum):  # idx_sum(x) sums x over the resampled units
        r = idx_sum(num) / idx_sum(den)
        if paired:
            r = r / (idx_sum(np.asarray(num_b, float)) / idx_sum(np.asarray(den_b, float)))
        return r

    if n == 0:
        return MetricValue.undefined()
    with np.errstate(divide="ignore", invalid="ignore"):
        value = ratio(lambda x: x.sum())
        if n < 2 or not np.isfinite(value):
            return MetricValue(_finite_or_none(value), None, None, n)
        rng = np.random.default_rng(seed)
        per_chunk = max(1, _CHUNK // n)
        stats = []
        for start in range(0, n_boot, per_chunk):
            idx = rng.integers(0, n, (min(per_chunk, n_boot - start), n))
            stats.append(ratio(lambda x: x[idx].sum(axis=1)))
    lo, hi = _interval(np.concatenate(stats))
    return MetricValue(float(value), lo, hi, n)


def bootstrap_mean(values: np.ndarray, n_boot: int = N_BOOT, seed: int = 0) -> MetricValue:
    values = np.asarray(values, float)
    return bootstrap_ratio(values, np.ones_like(values), n_boot=n_boot, seed=seed)
