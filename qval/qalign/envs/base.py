"""Base class of environments: text for an LLM, legal actions, a transition step, and reference Q."""
from __future__ import annotations

from typing import ClassVar

import numpy as np

from ...plugin_base import Plugin


class Environment(Plugin):
    """A small MDP rendered as text. Subclasses with exact dynamics give exact Q*."""

    action_names: ClassVar[tuple[str, ...]] = ()

    def __init__(self, params):
        self.params = params

    def reset(self, rng: np.random.Generator) -> int:
        raise NotImplementedError

    def step(self, state: int, action: int, rng: np.random.Generator) -> tuple[int, float, bool]:
        """(next state, reward, terminal)."""
        raise NotImplementedError

    def reference_q(self, gamma: float) -> np.ndarray:
        """Q[state, action] of the reference (optimal) policy."""
        raise NotImplementedError

    def describe(self, state: int) -> str:
        """The observation an LLM sees."""
        raise NotImplementedError

    def task(self) -> str:
        """The goal, in words."""
        raise NotImplementedError
