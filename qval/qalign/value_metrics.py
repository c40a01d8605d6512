"""Agreement of state-value and advantage signals with their own references: V* and A*.

V*(s) is the largest reference Q among the point's candidates. With exact labels and every legal action a
candidate (the suite check refuses ``points.max_candidates`` with these metrics) that is exactly max_a Q*(s, a); with
Monte-Carlo labels it is the largest candidate label, an estimate of V under the reference policy (biased upwards
by the max, as QVal's max-of-rollouts labels are). A*(s, a) = Q(s, a) − V*(s) with the same labels.

Per-state Spearman of an advantage equals that of Q (V(s) shifts every candidate of a state alike), and is computed
by the per-state metrics; only the pooled correlation says something of its own, so that is the metric here. CIs
resample distinct states, as the pooled Q metrics' do (``metrics._Pooled``).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..metrics.base import Metric
from ..stats import MetricValue, bootstrap_clusters
from . import resampled
from .metrics import MIN_POOLED_PAIRS, _n_states, _spearman, _state_clusters
from .signals import applies, cell_settings


def with_references(samples: pd.DataFrame) -> pd.DataFrame:
    """The rows with V* (``v_star``: the point's largest reference Q, over all its candidates whatever their scores)
    and A* (``a_star``) beside them."""
    v_star = samples.groupby("sample_id", sort=False)["ref_q"].transform("max")
    return samples.assign(v_star=v_star, a_star=samples["ref_q"] - v_star)


def state_values(samples: pd.DataFrame) -> pd.DataFrame:
    """One row per evaluation point: its V signal (the value a V scorer stored on each of its candidates' rows),
    V* and its state; points whose value failed are left out."""
    rows = with_references(samples)
    columns = {"score": "first", "v_star": "first"}
    if "state_key" in rows:
        columns["state_key"] = "first"
    points = rows.groupby("sample_id", sort=True).agg(columns).reset_index()
    return points[points["score"].notna()]


class _PooledSignal(Metric):
    """Spearman ρ of a signal against its reference, pooled over rows; CI resampling distinct states."""

    track = "qalign"
    reference = 0.0  # no correlation
    reads = ("sample_id", "state_key", "score", "ref_q")
    needs_all_actions = True  # V* is a max over every legal action (signals.section_problems)
    signals: tuple[str, ...] = ()

    def pairs(self, samples: pd.DataFrame) -> tuple[pd.DataFrame, str]:
        """The rows to correlate and the name of their reference column."""
        raise NotImplementedError

    def compute(self, samples, baseline=None, cell=None):
        if not applies(self, cell) or (cell_settings(cell).get("points") or {}).get("max_candidates") is not None:
            return MetricValue.undefined()  # another signal, or candidates sampled so that V* is unknown
        rows, ref_column = self.pairs(samples)
        if len(rows) < MIN_POOLED_PAIRS:
            return MetricValue.undefined(len(rows), _n_states(rows))
        score, ref = rows["score"].to_numpy(float), rows[ref_column].to_numpy(float)
        if np.all(score == score[0]) or np.all(ref == ref[0]):
            return MetricValue.undefined(len(rows), _n_states(rows))  # a constant side orders nothing
        value = _spearman(score, ref)
        result = bootstrap_clusters(
            _state_clusters(rows), lambda weights: resampled.spearman(score, ref, weights), value
        )
        return MetricValue(result.value, result.ci_low, result.ci_high, len(rows), _n_states(rows))


_STATES_CI = "percentile bootstrap CI resampling distinct states (a revisited state's points together)"
_OTHERS = "NULL for scorers of another signal"


class VSpearman(_PooledSignal):
    name = "v_spearman"
    signals = ("v",)
    label = (
        "Spearman ρ between a V scorer's value of each evaluation point's state and V*(s), the largest reference Q "
        "among the point's candidates (every legal action: exact V* under exact labels, the largest candidate "
        "label under Monte-Carlo ones); one pair per point, pooled; qval's own; null below 50 points; "
        f"n = evaluation points, n_states = distinct states; {_STATES_CI}; {_OTHERS}"
    )

    def pairs(self, samples):
        return state_values(samples), "v_star"


class AdvantageSpearman(_PooledSignal):
    name = "advantage_spearman"
    signals = ("advantage",)
    label = (
        "Spearman ρ between an advantage scorer's scores and A*(s, a) = Q(s, a) − V*(s) (V*: the largest reference "
        "Q among the point's candidates), pooled over every candidate of every evaluation point (within a state it "
        "ranks as Q does: per_state_spearman covers that); qval's own; null below 50 pairs; "
        f"n = (point, candidate) pairs; {_STATES_CI}; {_OTHERS}"
    )

    def pairs(self, samples):
        rows = with_references(samples)
        return rows[rows["score"].notna()].sort_values("sample_id", kind="stable"), "a_star"
