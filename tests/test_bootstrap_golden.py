"""The ratio bootstraps give the values and intervals they gave before they were merged into one implementation,
and before their resampled sums became exact.

``tests/golden/bootstrap_ratios_float32.json`` holds (as float.hex) what ``bootstrap_mean_ratio``,
``bootstrap_ratio`` and ``bootstrap_ratios`` returned, on fixed data and seeds, before ``bootstrap_ratio`` and
``bootstrap_mean_ratio`` became wrappers of ``bootstrap_ratios``, when the resampled sums were a float32 product.
``tests/golden/bootstrap_ratios.json`` holds what they return since those sums are exact (``stats._exact_sums``),
bit for bit (regenerate only for an intended change: ``python tests/test_bootstrap_golden.py >
tests/golden/bootstrap_ratios.json``). The sizes cover one resample block (n = 2, 7, 300), several blocks (5000:
2,000,000 // n rows a block) and counts too large to cache (25000).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from qval import stats

GOLDEN = Path(__file__).parent / "golden" / "bootstrap_ratios.json"
FLOAT32_ERA = Path(__file__).parent / "golden" / "bootstrap_ratios_float32.json"
# How far an interval bound computed from float32 products of float data (its sums rounded to 24 bits, the ratio
# divided in float32) may lie from the exact one: a few float32 ulps (2**-24 ≈ 6e-8); measured at most 3.6e-7.
FLOAT32_NOISE = 1e-6
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


def test_ratio_bootstraps_bit_for_bit():
    assert outputs() == json.loads(GOLDEN.read_text())


def test_exact_sums_moved_intervals_by_float32_noise_only():
    """Against the float32-era record: values bit for bit, intervals within FLOAT32_NOISE (relative) where a sum
    of non-integer data was rounded in float32 (bit for bit where every column was an integer that float32 held
    exactly, apart from the ratio's float32 division), and bootstrap_mean_ratio's (a float64 product) bit for bit."""
    want, got = json.loads(FLOAT32_ERA.read_text()), outputs()
    assert got.keys() == want.keys()
    moved = 0
    for key in want:
        pairs = zip(got[key], want[key], strict=True) if key.startswith("ratios ") else [(got[key], want[key])]
        for new, old in pairs:
            if not key.startswith("ratios "):
                assert new[0] == old[0], key  # the value is a float64 pairwise sum, as before
            assert new[3] == old[3], key
            for bound_new, bound_old in zip(new[1:3], old[1:3], strict=True):
                if key.startswith("mean_ratio"):
                    assert bound_new == bound_old, key
                    continue
                assert (bound_new is None) == (bound_old is None), key
                if bound_new is not None:
                    x, y = float.fromhex(bound_new), float.fromhex(bound_old)
                    assert abs(x - y) <= FLOAT32_NOISE * abs(y), (key, x, y)
                    moved += x != y
    assert moved > 0


def test_requests_answered_together_equal_alone():
    """Exact sums do not depend on the product they share: a request answered with others (of its own size and
    of other sizes, float and integer columns) gets the same bits as alone, which lets the metric stage batch a
    full ingest's metrics while a back-fill computes one."""
    rng = np.random.default_rng(11)
    requests = []
    for n in (40, 40, 3000, 3000, 3000):
        a, b = rng.gamma(2.0, 3.0, n), rng.uniform(0.5, 2.0, n)
        c, d = rng.poisson(4, n).astype(float), rng.integers(1, 6, n).astype(float) * 1e6  # wide integers
        requests.append(stats.Resampling(np.stack([a, b, c, d], 1), [(0, 1), (2, 3), (0, 1, 2, 3)]))
    together = stats.bootstrap_ratios_many(requests)
    for request, answer in zip(requests, together, strict=True):
        assert stats.bootstrap_ratios_many([request])[0] == answer
        single = stats.bootstrap_ratios_many([stats.Resampling(request.columns[:, :2], [(0, 1)])])[0][0]
        assert single == answer[0]


def test_ratio_bootstraps_unchanged():
    """Bit for bit, but for one intended change: ``bootstrap_ratios`` summed its columns with columns.sum(axis=0),
    which adds row after row, where ``bootstrap_ratio`` used numpy's pairwise sum of each array; the merged code
    sums each column pairwise, so a family's values now equal ``bootstrap_ratio``'s (as its docstring always said)
    and move from the recorded ones at n ≥ 300, within the row-after-row sum's error bound (about n·ε relative). Their intervals: test_exact_sums_moved_intervals_by_float32_noise_only."""
    want, got = json.loads(FLOAT32_ERA.read_text()), outputs()
    assert got.keys() == want.keys()
    moved = 0
    for key in want:
        if not key.startswith("ratios "):
            assert got[key][0] == want[key][0], key  # intervals: test_exact_sums_moved_intervals_by_float32_noise_only
            continue
        n = int(key.split()[1][2:])
        a, b, c, d = _data(n)
        pairwise = [a.sum() / b.sum(), c.sum() / d.sum(), c.sum() / b.sum()]
        for k, (new, old) in enumerate(zip(got[key], want[key], strict=True)):
            assert new[3] == old[3], (key, k)  # n: bit for bit (intervals: the test above)
            value, recorded = float.fromhex(new[0]), float.fromhex(old[0])
            assert value == pairwise[k], (key, k)
            assert abs(value - recorded) <= 2 * n * np.finfo(float).eps * abs(recorded), (key, k)
            moved += value != recorded
        assert got[key][0][0] == got[key.replace("ratios", "ratio")][0]  # the family's (0, 1) is bootstrap_ratio's
    assert moved > 0  # the fixture records the old row-after-row sums: this test would notice a silent revert


if __name__ == "__main__":
    json.dump(outputs(), sys.stdout, indent=1)
    print()
