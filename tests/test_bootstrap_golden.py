"""The ratio bootstraps give the values and intervals they gave before they were merged into one implementation.

``tests/golden/bootstrap_ratios.json`` holds (as float.hex) what ``bootstrap_mean_ratio``, ``bootstrap_ratio`` and
``bootstrap_ratios`` returned, on fixed data and seeds, before ``bootstrap_ratio`` and ``bootstrap_mean_ratio``
became wrappers of ``bootstrap_ratios`` (regenerate only for an intended change: ``python
tests/test_bootstrap_golden.py > tests/golden/bootstrap_ratios.json``). The sizes cover one resample block
(n = 2, 7, 300), several blocks (5000: 2,000,000 // n rows a block) and counts too large to cache (25000).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from qval import stats

GOLDEN = Path(__file__).parent / "golden" / "bootstrap_ratios.json"
SIZES = (2, 7, 300, 5000)
UNCACHED = 25000  # n × N_BOOT above stats._CACHE_LIMIT: resampled block by block, nothing kept


def _hex(mv: stats.MetricValue) -> list:
    return [None if x is None else float(x).hex() for x in (mv.value, mv.ci_low, mv.ci_high)] + [mv.n]


def _data(n: int):
    rng = np.random.default_rng(n)
    a, b = rng.gamma(2.0, 3.0, n), rng.uniform(0.5, 2.0, n)
    c, d = rng.poisson(4, n).astype(float), rng.integers(1, 6, n).astype(float)
    return a, b, c, d


def outputs() -> dict[str, list]:
    """Every case, in a fixed order from empty caches (a cached count matrix is multiplied whole, an uncached one
    block by block, so the order is part of the fixture)."""
    stats._counts_cache.clear()
    stats._counts64[:] = [None, None]
    out: dict[str, list] = {}
    for n in SIZES:
        a, b, c, d = _data(n)
        for seed in (0, 3):
            out[f"mean_ratio n={n} seed={seed}"] = _hex(
                stats.bootstrap_mean_ratio(a, b, a.mean() / b.mean(), seed=seed)
            )
            out[f"ratio n={n} seed={seed}"] = _hex(stats.bootstrap_ratio(a, b, seed=seed))
            ones = np.ones(n)
            out[f"double n={n} seed={seed}"] = _hex(stats.bootstrap_ratio(a, ones, num_b=c, den_b=ones, seed=seed))
            family = stats.bootstrap_ratios(np.stack([a, b, c, d], 1), [(0, 1), (2, 3), (2, 1)], seed=seed)
            out[f"ratios n={n} seed={seed}"] = [_hex(m) for m in family]
            out[f"mean n={n} seed={seed}"] = _hex(stats.bootstrap_mean(c, seed=seed))
    a, b, c, d = _data(UNCACHED)
    out[f"mean_ratio n={UNCACHED} seed=0"] = _hex(stats.bootstrap_mean_ratio(a, b, a.mean() / b.mean()))
    out[f"ratio n={UNCACHED} seed=0"] = _hex(stats.bootstrap_ratio(a, b))
    return out


def test_ratio_bootstraps_unchanged():
    want, got = json.loads(GOLDEN.read_text()), outputs()
    assert got.keys() == want.keys()
    for key in want:
        assert got[key] == want[key], key


if __name__ == "__main__":
    json.dump(outputs(), sys.stdout, indent=1)
    print()
