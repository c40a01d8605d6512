"""Agreement between a method's scores and reference Q: pooled and per-state rank correlations.

Pooled correlations mix between-state value differences with within-state action quality; per-state Spearman
measures only the latter. They are different statistics and are labelled apart. CIs resample *states*.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from ..metrics.base import Metric
from ..stats import MetricValue, bootstrap_units

MIN_POOLED_PAIRS = 50  # QVal's rule: fewer pairs give no pooled correlation


def _by_state(samples: pd.DataFrame) -> list[tuple[np.ndarray, np.ndarray]]:
    groups = []
    for _, g in samples.groupby("sample_id", sort=True):
        groups.append((g["score"].to_numpy(float), g["ref_q"].to_numpy(float)))
    return groups


class _Pooled(Metric):
    track = "qalign"

    def _corr(self, score: np.ndarray, ref: np.ndarray) -> float:
        raise NotImplementedError

    def compute(self, samples, baseline=None, cell=None):
        samples = samples[samples["score"].notna() & samples["ref_q"].notna()]  # QVal: drop a null on either side
        if len(samples) < MIN_POOLED_PAIRS:
            return MetricValue.undefined(len(samples))
        groups = _by_state(samples)

        def stat(idx):
            score = np.concatenate([groups[i][0] for i in idx])
            ref = np.concatenate([groups[i][1] for i in idx])
            return self._corr(score, ref)

        value = stat(np.arange(len(groups)))
        result = bootstrap_units(len(groups), stat, value)
        return MetricValue(result.value, result.ci_low, result.ci_high, len(samples))


class PooledSpearman(_Pooled):
    name = "pooled_spearman"
    label = "Spearman ρ pooled over all (state, action) pairs; n = pairs, CI resamples states"

    def _corr(self, score, ref):
        from scipy import stats as sps  # imported on use: decode-only ingests never pay for scipy

        return float(sps.spearmanr(score, ref).statistic)


class PooledKendall(_Pooled):
    name = "pooled_kendall"
    label = "Kendall τ-b pooled over all (state, action) pairs; n = pairs, CI resamples states"

    def _corr(self, score, ref):
        from scipy import stats as sps

        return float(sps.kendalltau(score, ref, variant="b").statistic)


class PooledPearson(_Pooled):
    name = "pooled_pearson"
    label = ("Pearson r pooled over all (state, action) pairs (QVal reports it; skewed labels make it unreliable); "
             "n = pairs, CI resamples states")

    def _corr(self, score, ref):
        from scipy import stats as sps

        if np.all(score == score[0]) or np.all(ref == ref[0]):
            return float("nan")  # undefined for a constant vector, as scipy warns
        return float(sps.pearsonr(score, ref).statistic)


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

    return pd.Series({state: 0.0 if np.all(score == score[0]) else float(sps.spearmanr(score, ref).statistic)
                      for state, score, ref in _rankable_states(samples)}, dtype=float)


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
    """The mean over states of a per-state value; the CI resamples states."""

    track = "qalign"

    def values(self, samples: pd.DataFrame) -> np.ndarray:
        raise NotImplementedError

    def compute(self, samples, baseline=None, cell=None):
        values = self.values(samples)
        if values.size == 0:
            return MetricValue.undefined()
        return bootstrap_units(values.size, lambda idx: float(values[idx].mean()), float(values.mean()))


class PerStateSpearman(_PerStateMean):
    name = "per_state_spearman"
    label = "mean over states of the Spearman ρ between scores and reference Q of that state's candidates; n = states"

    def values(self, samples):
        return per_state_spearman_by_state(samples).to_numpy(float)


class StoredPerStateSpearman(_PerStateMean):
    """per_state_spearman of cells that store only per-state ρ (track "qalign_state": imported QVal rankings)."""

    name = "per_state_spearman"
    track = "qalign_state"
    label = PerStateSpearman.label

    def values(self, samples):
        return samples["value"].dropna().to_numpy(float)


# Per-state metrics by name: the report pairs two methods on the states they share.
BY_STATE = {"per_state_spearman": per_state_spearman_by_state, "pairwise_accuracy": pairwise_accuracy_by_state,
            "top1": top1_by_state}


class PairwiseAccuracy(_PerStateMean):
    name = "pairwise_accuracy"
    label = ("per-state share of candidate pairs (with different reference Q) that the scores order correctly, "
             "score ties count ½; chance = 0.5; n = states")

    def values(self, samples):
        return pairwise_accuracy_by_state(samples).to_numpy(float)


class Top1(_PerStateMean):
    name = "top1"
    label = "per-state chance that the top-scored candidate is an optimal one (ties split evenly); n = states"

    def values(self, samples):
        return top1_by_state(samples).to_numpy(float)
