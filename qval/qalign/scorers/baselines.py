"""Baselines that bracket every method: the oracle (reference Q itself) and random scores."""
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
