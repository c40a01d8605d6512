"""Base class of scorers. A scorer returns one score per candidate; higher means a better action.

A score is a finite float, or ``Failed(reason)`` when the method could not produce one for that candidate (an
unparsable answer, a program that crashed). Failures are stored as NULL scores with the reason, never as zeros.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from ...plugin_base import Plugin
from ..points import EvalPoint

FAMILIES = ("direct", "code", "intrinsic", "ranking", "self-distillation", "embedding", "baseline")


@dataclass(frozen=True)
class Failed:
    reason: str


class ScoreError(Exception):
    """Raised by a scorer when a whole point cannot be scored; the message is recorded as the point's error."""


class Scorer(Plugin):
    family: ClassVar[str] = "baseline"
    uses_model: ClassVar[bool] = False  # False: the cell does not depend on the model (one cell, not one per model)
    batch_points: ClassVar[int] = 1  # points handed to score_batch at once (resume granularity too)
    env = None  # the cell's environment, set by the task before scoring (the heuristic baseline reads it)

    def __init__(self, params, model=None, seed: int = 0, temperature: float = 0.0, gamma: float = 0.95):
        self.params, self.model, self.seed, self.temperature, self.gamma = params, model, seed, temperature, gamma
        self.artifacts: dict = {}  # what the method produced besides scores (e.g. written programs), kept per cell

    def prepare(self, points: list[EvalPoint]) -> None:
        """Called once per cell with all its points (also on resume) before any scoring."""

    def score(self, point: EvalPoint) -> list[float | Failed]:
        raise NotImplementedError

    def score_batch(self, points: list[EvalPoint]) -> list[list[float | Failed] | BaseException]:
        """Scores of several points; override when a method gains from seeing them together. One point's error
        must not fail the others: return the exception in its place."""
        out = []
        for point in points:
            try:
                out.append(self.score(point))
            except Exception as exc:
                out.append(exc)
        return out
