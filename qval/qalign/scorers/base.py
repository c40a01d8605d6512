"""Base class of scorers. A scorer returns one finite float per candidate; higher means a better action."""
from __future__ import annotations

from typing import ClassVar

from ...plugin_base import Plugin
from ..points import EvalPoint

FAMILIES = ("direct", "code", "intrinsic", "ranking", "self-distillation", "embedding", "baseline")


class Scorer(Plugin):
    family: ClassVar[str] = "baseline"
    uses_model: ClassVar[bool] = False  # False: the cell does not depend on the model (one cell, not one per model)

    def __init__(self, params, model=None, seed: int = 0, temperature: float = 0.0):
        self.params, self.model, self.seed, self.temperature = params, model, seed, temperature

    def score(self, point: EvalPoint) -> list[float]:
        raise NotImplementedError
