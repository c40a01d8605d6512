"""Coverage of the small-n interval for per-state means (stats.bounded_mean), checked by simulation.

The data-generating process is the suites' own: states with four candidate actions whose reference Q values are
discounted distances 0.95^k with ties (as on FrozenLake and MiniGrid), scored by a method that is the negative
distance plus Gaussian noise; the per-state statistic is Spearman ρ (ties averaged). From sharp (ρ ≈ 0.93, values
piled at 1, the case where a t-interval or a percentile bootstrap collapses) to noisy (ρ ≈ 0.08). The true mean
comes from 200,000 simulated states. Sample sizes are those the suites use: 9 states (qval-v1-mini), 19 (distinct
FrozenLake-8x8 states in qval-v1) and 50.
"""

import numpy as np
import pytest
from scipy import stats as sps

from qval.stats import bounded_mean

REPLICATIONS = 600
NOISES = (0.1, 0.3, 1.0, 3.0, 10.0)


def per_state_rho(n: int, noise: float, rng) -> np.ndarray:
    """Spearman ρ of n simulated states, vectorised (rank correlation = Pearson of average ranks)."""
    d = rng.integers(2, 14, n)[:, None]
    k = np.concatenate([d - 1, d + 1, d + 1, d], axis=1)
    k = rng.permuted(k, axis=1)
    walls = rng.random(n) < 0.4  # a wall: two candidates lead to the same cell (tied labels)
    i, j = rng.integers(0, 4, n), rng.integers(0, 4, n)
    k[walls, i[walls]] = k[walls, j[walls]]
    k = k[~np.all(k == k[:, :1], axis=1)]  # a state with all labels equal is skipped, as in QVal
    score = -k + rng.normal(0.0, noise, k.shape)
    rq, rs = sps.rankdata(-k, axis=1), sps.rankdata(score, axis=1)  # label order: higher Q = smaller k
    rq, rs = rq - rq.mean(1, keepdims=True), rs - rs.mean(1, keepdims=True)
    return (rq * rs).sum(1) / np.sqrt((rq**2).sum(1) * (rs**2).sum(1))


@pytest.mark.parametrize("n", [9, 19, 50])
def test_bounded_mean_holds_its_level_at_the_suites_sizes(n):
    rng = np.random.default_rng(20261206)
    for noise in NOISES:
        truth = per_state_rho(200_000, noise, rng).mean()
        covered = 0
        for _ in range(REPLICATIONS):
            sample = per_state_rho(n + 4, noise, rng)[:n]  # a few extra: all-tied states are dropped
            v = bounded_mean(sample, -1.0, 1.0)
            covered += v.ci_low <= truth <= v.ci_high
        coverage = covered / REPLICATIONS
        assert coverage >= 0.93, f"n={n}, noise={noise}: coverage {coverage:.3f} of the 95% interval"


def test_bounded_mean_reduces_to_a_t_interval_for_large_n_and_clusters_repeated_states():
    rng = np.random.default_rng(1)
    x = rng.uniform(-1, 1, 4000)
    v = bounded_mean(x, -1.0, 1.0)
    half = sps.t.ppf(0.975, x.size - 1) * x.std(ddof=1) / np.sqrt(x.size)
    assert v.ci_low == pytest.approx(x.mean() - half, abs=2e-4)
    assert v.ci_high == pytest.approx(x.mean() + half, abs=2e-4)
    # The same 30 states each seen twice are 30 units, not 60: the interval is that of the 30.
    y = rng.uniform(-1, 1, 30)
    once = bounded_mean(y, -1.0, 1.0)
    twice = bounded_mean(np.r_[y, y], -1.0, 1.0, clusters=np.r_[np.arange(30), np.arange(30)])
    assert (twice.ci_low, twice.ci_high) == pytest.approx((once.ci_low, once.ci_high), abs=1e-12)
    assert twice.n == 60
    # Nine perfect states: the interval is not [1, 1] (a t-interval's), it leaves room for a mean below 1.
    assert bounded_mean(np.ones(9), -1.0, 1.0).ci_low < 0.95
