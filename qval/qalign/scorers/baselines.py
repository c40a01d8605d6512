"""Baselines that bracket every method: the oracle (reference Q itself), random scores and a hand-written
heuristic (the env's own, e.g. minus the Manhattan distance to the goal after the action)."""

from __future__ import annotations

import zlib

import numpy as np

from .base import Scorer


class OracleQScorer(Scorer):
    """Scores are the reference Q: the upper bound of agreement (per-state ρ = 1 wherever Q has no ties)."""

    name = "oracle-q"
    family = "baseline"

    def score(self, point):
        return [c.ref_q for c in point.candidates]


class RandomScorer(Scorer):
    """Uniform random scores, seeded per point so re-runs and resumed runs give the same numbers."""

    name = "random"
    family = "baseline"

    def score(self, point):
        rng = np.random.default_rng([self.seed, zlib.crc32(point.point_id.encode())])
        return rng.random(len(point.candidates)).tolist()


class HeuristicScorer(Scorer):
    """The env's hand-written state value of the state each action leads to; a terminal success scores above
    everything and a terminal failure below."""

    name = "heuristic"
    family = "baseline"

    def score(self, point):
        out = []
        for c in point.candidates:
            if c.done:
                out.append(1e6 if c.reward > 0 else -1e6)
            else:
                out.append(float(self.env.heuristic(c.next_state)))
        return out
