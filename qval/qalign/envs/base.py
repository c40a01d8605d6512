"""Base class of environments: text for an LLM, legal actions, a transition step, and reference Q.

States are ints: tabular envs use their own state index; envs with richer states (MiniGrid, TextWorld) number
the states they discover and keep the mapping, so points, labels and stored rows stay plain integers.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from ...plugin_base import Plugin


class Environment(Plugin):
    """A small MDP rendered as text. Subclasses with exact dynamics give exact Q*."""

    action_names: ClassVar[tuple[str, ...]] = ()  # the fixed action set of envs whose actions do not vary by state

    def __init__(self, params):
        self.params = params

    def actions(self, state: int) -> tuple[str, ...]:
        """The legal actions in this state, in a fixed order (candidate i is action i)."""
        return self.action_names

    def reset(self, rng: np.random.Generator) -> int:
        raise NotImplementedError

    def step(self, state: int, action: int, rng: np.random.Generator) -> tuple[int, float, bool]:
        """(next state, reward, terminal) after the action with index ``action`` in ``actions(state)``."""
        raise NotImplementedError

    def reference_q(self, gamma: float):
        """Q of the reference (optimal) policy: ``q[state]`` is an array over ``actions(state)``.

        Tabular envs return a [states, actions] array; others any object indexable by state.
        """
        raise NotImplementedError

    def describe(self, state: int) -> str:
        """The observation an LLM sees."""
        raise NotImplementedError

    def heuristic(self, state: int) -> float:
        """A hand-written value of a state for the heuristic baseline (e.g. minus the distance to the goal).
        Optional: envs without one make the heuristic scorer fail with a clear message."""
        raise NotImplementedError(f"environment {self.name!r} has no hand-written heuristic")

    def task(self, state: int) -> str:
        """The goal, in words (it may depend on the episode, e.g. a BabyAI mission)."""
        raise NotImplementedError
