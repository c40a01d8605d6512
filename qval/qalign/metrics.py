"""Agreement between a method's scores and reference Q: pooled and per-state rank correlations.

Pooled correlations mix between-state value differences with within-state action quality; per-state Spearman
measures only the latter. They are different statistics and are labelled apart. CIs resample *states*.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..metrics.base import Metric, MetricView
from ..stats import MetricValue, bootstrap_clusters, bounded_mean, wilson_proportion
from . import resampled
from .signals import applies

# What Q-alignment metrics read. A failed candidate keeps its row with a NULL score: pooled metrics drop it, and a
# state with a failed candidate is skipped by the per-state metrics (as QVal skips states with a NaN) rather than
# silently ranked over the candidates that happened to succeed.
VIEW = MetricView(
    columns={
        "cell_id": "cell_id",
        "sample_id": "sample_id",
        "state_key": "state_key",
        "candidate": "candidate",
        "score": "CASE WHEN error IS NULL THEN score END",
        "ref_q": "ref_q",
        "is_behaviour": "is_behaviour",
    },
    keep="TRUE",
    order="cell_id, sample_id, candidate",
)
# Cells that store only per-state values (imported QVal rankings).
STATE_VIEW = MetricView(
    columns={"cell_id": "cell_id", "sample_id": "sample_id", "state_key": "state_key", "value": "value"},
    keep="error IS NULL",
    order="cell_id, sample_id",
)

MIN_POOLED_PAIRS = 50  # QVal's rule (evaluate.py): fewer than 50 usable pairs give no pooled correlation


def _state_clusters(samples: pd.DataFrame) -> np.ndarray:
    """One label per row: its state, so that the evaluation points of a revisited state form one cluster; a point
    without a state key (rows written before qval stored it) is its own state."""
    if "state_key" not in samples:
        return pd.factorize(samples["sample_id"].astype(str))[0]
    keys = samples["state_key"].astype(object)
    keys = keys.where(keys.notna(), "point:" + samples["sample_id"].astype(str))
    return pd.factorize(keys)[0]


def _n_states(samples: pd.DataFrame) -> int | None:
    return int(samples["state_key"].nunique()) if "state_key" in samples else None


class _Pooled(Metric):
    """One correlation over (score, reference Q) pairs pooled across evaluation points.

    The CI resamples states, not points: qval-v1's 250 points per cell visit only 19-27 distinct states on
    FrozenLake and CliffWalking (a deterministic environment's near-greedy trajectories repeat), and the points of a
    state carry the same pairs. Resampling points as if independent covered a 95% target 9-55% of the time there
    and 75-88% on Taxi's 112 states; resampling states covers 94-99%, but for a near-perfect scorer (pooled ρ above
    0.99, where Spearman's interval under-covers: ``tests/test_ci_coverage.py``). Each resample is weights on the
    pairs, computed as array operations (``resampled.py``)."""

    track = "qalign"
    reference = 0.0  # no correlation
    behaviour_only = True  # QVal's rows: the action the behaviour policy took at each point, one per point
    version = 2  # 2: CI resamples states (1 resampled evaluation points)
    # Scores pooled across states against Q*: an advantage or a state value is another quantity (signals.py).
    signals: tuple[str, ...] = ("q",)

    def _corr(self, score: np.ndarray, ref: np.ndarray) -> float:
        raise NotImplementedError

    def _resampled(self, score: np.ndarray, ref: np.ndarray, weights: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def rows(self, samples: pd.DataFrame) -> pd.DataFrame:
        if self.behaviour_only:
            if "is_behaviour" not in samples:
                return samples.iloc[0:0]
            # NULL is_behaviour: rows written before qval stored it; they cannot be told apart, so none are used.
            samples = samples[samples["is_behaviour"].fillna(False).astype(bool)]
        return samples[samples["score"].notna() & samples["ref_q"].notna()]  # QVal: drop a null on either side

    def compute(self, samples, baseline=None, cell=None):
        if not applies(self, cell):
            return MetricValue.undefined()
        if not self.behaviour_only and len(samples) and samples.groupby("sample_id").size().max() == 1:
            # One row per point (e.g. imported QVal cells): "every candidate" would silently be QVal's statistic.
            return MetricValue.undefined(len(samples), _n_states(samples))
        samples = self.rows(samples)
        if len(samples) < MIN_POOLED_PAIRS:
            return MetricValue.undefined(len(samples), _n_states(samples))
        samples = samples.sort_values("sample_id", kind="stable")  # the pairs in a fixed order, whatever the query's
        score, ref = samples["score"].to_numpy(float), samples["ref_q"].to_numpy(float)
        value = self._corr(score, ref)
        clusters = _state_clusters(samples)
        result = bootstrap_clusters(clusters, lambda weights: self._resampled(score, ref, weights), value)
        return MetricValue(result.value, result.ci_low, result.ci_high, len(samples), _n_states(samples))


def _spearman(score, ref):
    from scipy import stats as sps  # imported on use: decode-only ingests never pay for scipy

    return float(sps.spearmanr(score, ref).statistic)


def _kendall(score, ref):
    from scipy import stats as sps

    return float(sps.kendalltau(score, ref, variant="b").statistic)


def _pearson(score, ref):
    from scipy import stats as sps

    if np.all(score == score[0]) or np.all(ref == ref[0]):
        return float("nan")  # undefined for a constant vector, as scipy warns
    return float(sps.pearsonr(score, ref).statistic)


_QVAL_ROWS = (
    "over the behaviour policy's own action at each evaluation point (one pair per point, QVal's pooled "
    "statistic for pointwise methods; null below 50 pairs as in QVal); n = points, percentile bootstrap CI "
    "resampling distinct states (a revisited state's points together)"
)
_ALL_ROWS = (
    "over every candidate action of every evaluation point (qval's own statistic, not QVal's: it also "
    "ranks the alternatives); null below 50 pairs; n = (point, candidate) pairs, percentile bootstrap CI "
    "resampling distinct states (a revisited state's points together)"
)


class PooledSpearman(_Pooled):
    name = "pooled_spearman"
    label = f"Spearman ρ pooled {_QVAL_ROWS}"
    _corr = staticmethod(_spearman)
    _resampled = staticmethod(resampled.spearman)


class PooledKendall(_Pooled):
    name = "pooled_kendall"
    label = f"Kendall τ-b pooled {_QVAL_ROWS}"
    _corr = staticmethod(_kendall)
    _resampled = staticmethod(resampled.kendall)


class PooledPearson(_Pooled):
    name = "pooled_pearson"
    label = f"Pearson r pooled {_QVAL_ROWS} (skewed labels make Pearson unreliable)"
    _corr = staticmethod(_pearson)
    _resampled = staticmethod(resampled.pearson)


class PooledSignAgreement(_Pooled):
    """QVal's sign agreement (the formula qval_import's check reproduces from QVal's stored numbers): the share of
    pooled pairs whose score and reference Q have the same numpy sign, so a zero agrees only with a zero. A share
    near 1 is common, where a percentile bootstrap under-covers, so the interval is Wilson's over distinct states."""

    name = "pooled_sign_agreement"
    reference = None  # chance depends on the labels' signs: QVal's reference Q is never negative (about 0.96 there)
    label = (
        "QVal's sign agreement: the share of the behaviour policy's (score, reference Q) pairs, one per evaluation "
        "point, whose signs agree (a zero matches only a zero); null below 50 pairs as in QVal; n = points, "
        "Wilson 95% interval over distinct states (coverage checked by simulation). Reference Q ≥ 0 in QVal's "
        "environments makes it mostly the share of non-negative scores, not an ordering measure"
    )

    def compute(self, samples, baseline=None, cell=None):
        if not applies(self, cell):
            return MetricValue.undefined()
        samples = self.rows(samples)
        if len(samples) < MIN_POOLED_PAIRS:
            return MetricValue.undefined(len(samples), _n_states(samples))
        agree = np.sign(samples["score"].to_numpy(float)) == np.sign(samples["ref_q"].to_numpy(float))
        states = _state_clusters(samples) if "state_key" in samples else None
        value = wilson_proportion(agree, states)
        return MetricValue(value.value, value.ci_low, value.ci_high, len(samples), _n_states(samples))


class PooledSpearmanAll(_Pooled):
    name = "pooled_spearman_all"
    behaviour_only = False
    label = f"Spearman ρ pooled {_ALL_ROWS}"
    _corr = staticmethod(_spearman)
    _resampled = staticmethod(resampled.spearman)


class PooledKendallAll(_Pooled):
    name = "pooled_kendall_all"
    behaviour_only = False
    label = f"Kendall τ-b pooled {_ALL_ROWS}"
    _corr = staticmethod(_kendall)
    _resampled = staticmethod(resampled.kendall)


class PooledPearsonAll(_Pooled):
    name = "pooled_pearson_all"
    behaviour_only = False
    label = f"Pearson r pooled {_ALL_ROWS}"
    _corr = staticmethod(_pearson)
    _resampled = staticmethod(resampled.pearson)


def _rankable_states(samples: pd.DataFrame):
    """(state, score, ref) per state that has something to order and no missing score (QVal skips the others)."""
    for state, group in samples.groupby("sample_id", sort=True):
        score, ref = group["score"].to_numpy(float), group["ref_q"].to_numpy(float)
        if len(ref) >= 2 and not np.all(ref == ref[0]) and not np.isnan(score).any():
            yield state, score, ref


def per_state_spearman_by_state(samples: pd.DataFrame) -> pd.Series:
    """Spearman ρ within each state over its candidates.

    A state is skipped when its reference Q values are all equal (nothing to order) or a score is missing, as in
    QVal. A method that gives all candidates the same score expresses no preference: ρ = 0 for that state, rather
    than skipping it (skipping would reward abstaining).
    """
    from scipy import stats as sps

    return pd.Series(
        {
            state: 0.0 if np.all(score == score[0]) else float(sps.spearmanr(score, ref).statistic)
            for state, score, ref in _rankable_states(samples)
        },
        dtype=float,
    )


def pairwise_accuracy_by_state(samples: pd.DataFrame) -> pd.Series:
    """Per state: the fraction of candidate pairs with different reference Q that the scores order the same way
    (a tie in score counts one half: no preference is a coin flip, not a win)."""
    out = {}
    for state, score, ref in _rankable_states(samples):
        i, j = np.triu_indices(len(ref), k=1)
        keep = ref[i] != ref[j]
        agree = np.sign(score[i] - score[j])[keep] * np.sign(ref[i] - ref[j])[keep]
        out[state] = float(np.mean(np.where(agree == 0, 0.5, agree > 0)))
    return pd.Series(out, dtype=float)


def top1_by_state(samples: pd.DataFrame) -> pd.Series:
    """Per state: the chance that the top-scored candidate (ties broken uniformly) has the best reference Q."""
    out = {}
    for state, score, ref in _rankable_states(samples):
        top = score == score.max()
        out[state] = float(np.mean(ref[top] == ref.max()))
    return pd.Series(out, dtype=float)


class _PerStateMean(Metric):
    """The mean over evaluation points of a per-point value (each point ranks its state's candidates).

    n counts evaluation points; n_states the distinct states behind them (a state the behaviour policy visited
    several times is one state). Points of one state are not independent, so the interval treats each distinct
    state as one cluster: ``stats.bounded_mean``, a small-n interval whose coverage is checked by simulation.
    """

    track = "qalign"
    bounds: tuple[float, float] = (-1.0, 1.0)
    stores_units = True
    reference = 0.0  # no correlation; metrics on another scale set their own
    # Within a state an advantage orders the actions as Q does (A = Q − V(s)); a state value orders nothing.
    signals: tuple[str, ...] = ("q", "advantage")

    def by_point(self, samples: pd.DataFrame) -> pd.Series:
        raise NotImplementedError

    def compute(self, samples, baseline=None, cell=None):
        return self.compute_with_units(samples, baseline, cell)[0]

    def compute_with_units(self, samples, baseline=None, cell=None):
        if not applies(self, cell):
            return MetricValue.undefined(), None
        per_point = self.by_point(samples)
        if per_point.empty:
            return MetricValue.undefined(0, 0), None
        keys = _state_keys(samples, per_point.index)
        value = bounded_mean(per_point.to_numpy(float), *self.bounds, clusters=keys)
        units = pd.DataFrame(
            {
                "unit": per_point.index.astype(str),
                "cluster": pd.Series(keys).astype(str).to_numpy(),
                "value": per_point.to_numpy(float),
            }
        )
        return MetricValue(value.value, value.ci_low, value.ci_high, value.n, int(pd.Series(keys).nunique())), units


def _state_keys(samples: pd.DataFrame, points: pd.Index) -> np.ndarray:
    """The state of each evaluation point (its sample id where no state key is stored)."""
    if "state_key" not in samples:
        return points.to_numpy()
    keys = samples.drop_duplicates("sample_id").set_index("sample_id")["state_key"]
    return keys.reindex(points).fillna(pd.Series(points, index=points)).to_numpy()


_PER_POINT_N = (
    "n = evaluation points, n_states = distinct states among them; 95% interval clustered by state "
    "(small-n Wilson-type t-interval, coverage checked by simulation)"
)


class PerStateSpearman(_PerStateMean):
    name = "per_state_spearman"
    label = (
        "mean over evaluation points of the Spearman ρ between scores and reference Q of the point's candidate "
        f"actions (QVal's per-state ρ for ranking-style methods); {_PER_POINT_N}"
    )

    def by_point(self, samples):
        return per_state_spearman_by_state(samples)


class StoredPerStateSpearman(_PerStateMean):
    """per_state_spearman of cells that store only per-state ρ (track "qalign_state": imported QVal rankings)."""

    name = "per_state_spearman"
    track = "qalign_state"
    label = PerStateSpearman.label

    def by_point(self, samples):
        kept = samples[samples["value"].notna()]
        return pd.Series(kept["value"].to_numpy(float), index=kept["sample_id"].to_numpy())


# Per-state metrics by name: the report pairs two methods on the states they share.
BY_STATE = {
    "per_state_spearman": per_state_spearman_by_state,
    "pairwise_accuracy": pairwise_accuracy_by_state,
    "top1": top1_by_state,
}


class PairwiseAccuracy(_PerStateMean):
    name = "pairwise_accuracy"
    bounds = (0.0, 1.0)
    reference = 0.5  # chance
    label = (
        "mean over evaluation points of the share of candidate pairs (with different reference Q) that the "
        f"scores order correctly, score ties count ½; chance = 0.5; qval's own; {_PER_POINT_N}"
    )

    def by_point(self, samples):
        return pairwise_accuracy_by_state(samples)


class Top1(_PerStateMean):
    name = "top1"
    bounds = (0.0, 1.0)
    reference = None  # chance depends on each state's number of candidates
    label = (
        "mean over evaluation points of the chance that the top-scored candidate is an optimal one (ties split "
        f"evenly); qval's own; {_PER_POINT_N}"
    )

    def by_point(self, samples):
        return top1_by_state(samples)
