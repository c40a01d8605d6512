"""Coverage of the small-n interval for per-state means (stats.bounded_mean), checked by simulation.

The data-generating process is the suites' own: states with four candidate actions whose reference Q values are
discounted distances 0.95^k with ties (as on FrozenLake and MiniGrid), scored by a method that is the negative
distance plus Gaussian noise; the per-state statistic is Spearman ρ (ties averaged). From sharp (ρ ≈ 0.93, values
piled at 1, the case where a t-interval or a percentile bootstrap collapses) to noisy (ρ ≈ 0.08). The true mean
comes from 200,000 simulated states. Sample sizes are those the suites use: 9 states (qval-v1-mini), 19 (distinct
FrozenLake-8x8 states in qval-v1) and 50.
"""

import numpy as np
import pandas as pd
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


@pytest.mark.parametrize("n", [50, 100, 300])
def test_wilson_share_holds_its_level_near_the_bounds(n):
    """pooled_sign_agreement's interval (stats.wilson_proportion) at the pooled metrics' sizes (50 pairs at least,
    as in QVal) and at shares up to 0.99: QVal's sign agreement is about 0.96, where a percentile bootstrap
    covers 0.86 at n = 50. Points are single or repeated visits of a state (clusters share the outcome)."""
    from qval.stats import wilson_proportion

    rng = np.random.default_rng(20261206 + n)
    for share in (0.5, 0.9, 0.96, 0.99):
        hits_single = hits_clustered = 0
        for _ in range(REPLICATIONS):
            x = rng.random(n) < share
            v = wilson_proportion(x)
            hits_single += v.ci_low <= share <= v.ci_high
            visits = rng.integers(1, 4, n // 2)  # each state visited 1-3 times, the same action each time
            outcome = np.repeat(rng.random(visits.size) < share, visits)
            v = wilson_proportion(outcome, np.repeat(np.arange(visits.size), visits))
            hits_clustered += v.ci_low <= share <= v.ci_high
        # Wilson's coverage oscillates with n and the share (0.91-0.97 measured here); never far below 95%.
        for hits in (hits_single, hits_clustered):
            assert 0.89 <= hits / REPLICATIONS <= 0.99, (n, share, hits / REPLICATIONS)


# ------------------------------------------------------------------------ pooled correlations (clustered points)

POOLED_REPLICATIONS = 120  # coverage to about ±2% (one standard error): enough to tell 0.95 from the 0.09-0.80
POOLED_NOISES = (1.0, 10.0)  # pooled ρ ≈ 0.96 and ≈ 0.32


def _pooled_states(g: int, noise: float, rng):
    """Scores and reference Q of g states' four candidates (the per-state simulation's: discounted distances with
    ties), and the behaviour policy's action there: greedy in Q, random with probability 0.1 (qval-v1's ε)."""
    d = rng.integers(2, 14, g)[:, None]
    k = rng.permuted(np.concatenate([d - 1, d + 1, d + 1, d], axis=1), axis=1)
    walls = rng.random(g) < 0.4
    i, j = rng.integers(0, 4, g), rng.integers(0, 4, g)
    k[walls, i[walls]] = k[walls, j[walls]]
    ref, score = 0.95**k, -k + rng.normal(0.0, noise, k.shape)
    greedy = np.argmax(ref + 1e-9 * rng.random(ref.shape), axis=1)
    return score, ref, greedy


def _pooled_cell(points: int, states: int, noise: float, rng) -> pd.DataFrame:
    """One cell's behaviour rows: ``points`` evaluation points on ``states`` distinct states, visited unevenly
    (each at least once, the rest by Dirichlet(2) shares, as qval-v1's FrozenLake 8x8 visits 19 states 1-28
    times); a revisit may take another action (ε), a scorer scores a state the same way each time."""
    score, ref, greedy = _pooled_states(states, noise, rng)
    state = np.repeat(np.arange(states), 1 + rng.multinomial(points - states, rng.dirichlet(np.full(states, 2.0))))
    action = np.where(rng.random(points) < 0.1, rng.integers(0, 4, points), greedy[state])
    return pd.DataFrame(
        {
            "sample_id": [f"e{p:04d}" for p in range(points)],
            "state_key": state.astype(str),
            "score": score[state, action],
            "ref_q": ref[state, action],
            "is_behaviour": True,
        }
    )


@pytest.mark.parametrize("metric", ["pooled_spearman", "pooled_kendall"])
def test_pooled_correlations_hold_their_level_at_the_suites_sizes(metric):
    """pooled_spearman / pooled_kendall's percentile bootstrap over states, at qval-v1's sizes: 250 points per cell
    (50 episodes, ≤ 5 points each) on 19 distinct states (FrozenLake 8x8; CliffWalking has 27) and on 112 (Taxi).
    The smaller suites have under 50 points, where the pooled metrics are undefined. The truth is the statistic
    over 200,000 points each on its own state. Coverage measured in this test's configuration: 0.94-0.99 for both
    metrics; resampling points instead (the interval before) covers 0.33-0.48 at 19 states and 0.74-0.85 at 112.
    Not asserted: near a perfect scorer (noise 0.3, pooled ρ ≈ 0.996) the sample ρ's small bias exceeds its spread
    and Spearman's interval covers 0.2-0.8 (Kendall's: 0.99), measured with 100 replications."""
    from qval.qalign.metrics import PooledKendall, PooledSpearman

    compute = {"pooled_spearman": PooledSpearman, "pooled_kendall": PooledKendall}[metric]().compute
    statistic = {
        "pooled_spearman": lambda x, y: sps.spearmanr(x, y).statistic,
        "pooled_kendall": lambda x, y: sps.kendalltau(x, y).statistic,
    }[metric]
    rng = np.random.default_rng(20261207)
    for noise in POOLED_NOISES:
        score, ref, greedy = _pooled_states(200_000, noise, rng)
        action = np.where(rng.random(greedy.size) < 0.1, rng.integers(0, 4, greedy.size), greedy)
        rows = np.arange(greedy.size)
        truth = statistic(score[rows, action], ref[rows, action])
        for states in (19, 112):
            covered = 0
            for _ in range(POOLED_REPLICATIONS):
                v = compute(_pooled_cell(250, states, noise, rng))
                assert v.n == 250 and v.n_states == states
                covered += v.ci_low <= truth <= v.ci_high
            coverage = covered / POOLED_REPLICATIONS
            assert coverage >= 0.90, f"{metric}, {states} states, noise={noise}: coverage {coverage:.3f}"
