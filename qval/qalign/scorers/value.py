"""Scorers of state values and advantages (signals "v" and "advantage"), measured against V* and A*
(qval/qalign/value_metrics.py).

* oracle-v: V*(s) itself, the largest reference Q among the point's candidates (the metric's own reference);
* oracle-advantage: A*(s, a) = Q(s, a) − V*(s);
* direct-value: the model states the value of the state, as a number, on direct's prompt style (asked for 0 to 1).
"""

from __future__ import annotations

from ...prompts import load_prompt
from .base import Scorer, StateValueScorer
from .direct import _NumericScorer


class OracleVScorer(StateValueScorer):
    """The state's reference value: the largest reference Q among its candidates (V* when every legal action is a
    candidate and the labels are exact). The upper bound of v_spearman (ρ = 1 wherever V* varies)."""

    name = "oracle-v"
    family = "baseline"

    def value(self, point):
        return max(c.ref_q for c in point.candidates)


class OracleAdvantageScorer(Scorer):
    """Reference Q minus the state's reference value, per candidate: A* itself (0 for the best candidates)."""

    name = "oracle-advantage"
    family = "baseline"
    signal = "advantage"

    def score(self, point):
        best = max(c.ref_q for c in point.candidates)
        return [c.ref_q - best for c in point.candidates]


class DirectValueScorer(_NumericScorer, StateValueScorer):
    """Direct prompting for the state's value: one prompt per point (task and state, no action), the reply's number
    is the value. ``samples: k`` averages k sampled replies over those that parsed, as direct does; a point none of
    whose replies holds a number is a recorded failure."""

    name = "direct-value"
    version = "1-v1"

    def value(self, point):
        user = load_prompt("direct_value").format(task=point.task, observation=point.observation, gamma=self.gamma)
        return self.mean_of_samples(self.llm.chat(user), point, "value")
