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
        samples = samples[samples["score"].notna()]
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


def per_state_spearman_values(samples: pd.DataFrame) -> np.ndarray:
    return per_state_spearman_by_state(samples).to_numpy(float)


def per_state_spearman_by_state(samples: pd.DataFrame) -> pd.Series:
    """Spearman ρ within each state over its candidates.

    A state is skipped when its reference Q values are all equal (nothing to order) or a score is missing, as in
    QVal. A method that gives all candidates the same score expresses no preference: ρ = 0 for that state, rather
    than skipping it (skipping would reward abstaining).
    """
    from scipy import stats as sps

    values = {}
    for state, group in samples.groupby("sample_id", sort=True):
        score, ref = group["score"].to_numpy(float), group["ref_q"].to_numpy(float)
        if len(ref) < 2 or np.all(ref == ref[0]) or np.isnan(score).any():
            continue
        values[state] = 0.0 if np.all(score == score[0]) else float(sps.spearmanr(score, ref).statistic)
    return pd.Series(values, dtype=float)


class PerStateSpearman(Metric):
    name = "per_state_spearman"
    track = "qalign"
    label = "mean over states of the Spearman ρ between scores and reference Q of that state's candidates; n = states"

    def compute(self, samples, baseline=None, cell=None):
        values = per_state_spearman_values(samples)
        if values.size == 0:
            return MetricValue.undefined()
        return bootstrap_units(values.size, lambda idx: float(values[idx].mean()), float(values.mean()))
