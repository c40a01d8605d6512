"""The rollout track's metrics: what they read (its view) and how each is computed, with n and a 95% CI."""

from __future__ import annotations

from qval.metrics.base import Metric, MetricView
from qval.stats import bootstrap_mean, wilson_proportion

VIEW = MetricView(
    columns={"cell_id": "cell_id", "sample_id": "sample_id", "ret": "discounted_return", "success": "success"},
    keep="error IS NULL",
    order="cell_id, sample_id",
)


class MeanReturn(Metric):
    """Mean discounted return per episode, with a bootstrap CI over episodes."""

    track = "rollout"
    label = "mean discounted return per episode (n = episodes)"
    reads = ("ret",)

    def compute(self, samples, baseline=None, cell=None):
        return bootstrap_mean(samples["ret"].to_numpy(float))


class SuccessRate(Metric):
    """Share of episodes that reached the goal, with a Wilson interval (n = episodes)."""

    track = "rollout"
    label = "share of episodes reaching the goal (n = episodes)"
    reads = ("success",)

    def compute(self, samples, baseline=None, cell=None):
        return wilson_proportion(samples["success"].to_numpy(bool))
