"""Metrics of scorer-guided episodes (``qalign_guided`` cells, qval/qalign/guided.py): success, discounted return and
regret against exact V*. One value per episode; episodes are independent (each has its own seeded streams), so
n = episodes and the intervals treat them as independent draws."""

from __future__ import annotations

import numpy as np

from ..metrics.base import Metric, MetricView
from ..stats import MetricValue, bounded_mean, wilson_proportion
from .signals import RANKS_ACTIONS

# The episode's summary sits on its last step's row.
VIEW = MetricView(
    columns={
        "cell_id": "cell_id",
        "sample_id": "sample_id",
        "state_key": "state_key",
        "v_star": "v_star",
        "episode_return": "episode_return",
        "success": "success",
        "steps": "steps",
        "failed_steps": "failed_steps",
    },
    keep="last",
    order="cell_id, sample_id",
)

_HOW = (
    "episodes from seeded start states, the agent taking at each step the scorer's top-scored candidate (every "
    "legal action, or best-of-N's draws; ties by a seeded draw; a failed score counts as -inf) up to the step limit"
)


class _Guided(Metric):
    track = "qalign_guided"
    reads = ("v_star", "episode_return", "success")
    signals: tuple[str, ...] = RANKS_ACTIONS  # a V scorer has no guided cells (track.py): these do not fit it


class GuidedSuccess(_Guided):
    name = "guided_success"
    label = f"share of {_HOW} that reach the goal; n = episodes, Wilson 95% interval"

    def compute(self, samples, baseline=None, cell=None):
        if samples.empty:
            return MetricValue.undefined(0)
        return wilson_proportion(samples["success"].fillna(False).to_numpy(bool))


class GuidedReturn(_Guided):
    name = "guided_return"
    label = (
        f"mean discounted return (the section's gamma; sparse success reward 1, so in [0, 1]) of {_HOW}; "
        "n = episodes, small-n 95% interval for a mean bounded in [0, 1]"
    )

    def compute(self, samples, baseline=None, cell=None):
        return _bounded(samples["episode_return"].to_numpy(float), 0.0, 1.0)


class GuidedRegret(_Guided):
    name = "guided_regret"
    higher_is_better = False
    reference = 0.0  # the optimal policy's expected regret
    label = (
        f"mean of V*(s0) − discounted return (exact V* of the episode's start state) over {_HOW}; 0 for the "
        "oracle on deterministic environments, an estimate of expected regret on stochastic ones (the oracle's "
        "is 0 in expectation); n = episodes, small-n 95% interval for a mean bounded in [-1, 1]"
    )

    def compute(self, samples, baseline=None, cell=None):
        regret = samples["v_star"].to_numpy(float) - samples["episode_return"].to_numpy(float)
        return _bounded(regret, -1.0, 1.0)


def _bounded(values: np.ndarray, low: float, high: float) -> MetricValue:
    """``bounded_mean`` within [low, high], the range of qval's sparse success reward. A third-party environment
    with other rewards can leave it: the bounds then widen to the values seen, so the interval still holds the mean
    (clipped to the stated bounds it would exclude it)."""
    finite = values[np.isfinite(values)]
    if finite.size:
        low, high = min(low, float(finite.min())), max(high, float(finite.max()))
    return bounded_mean(values, low, high)
