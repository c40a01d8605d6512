"""FrozenLake (gymnasium toy_text) with exact Q* by value iteration on its full transition table."""
from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict

from .base import Environment


class FrozenLakeParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    map: Literal["4x4", "8x8"] = "4x4"
    slippery: bool = False


class FrozenLakeEnv(Environment):
    name = "frozenlake"
    version = "1"
    Params = FrozenLakeParams
    action_names = ("left", "down", "right", "up")  # gymnasium's action order

    def __init__(self, params):
        super().__init__(params)
        import gymnasium as gym

        env = gym.make("FrozenLake-v1", map_name=params.map, is_slippery=params.slippery)
        self.P = env.unwrapped.P  # P[s][a] = [(prob, next_state, reward, terminated), ...]
        self.desc = [[c.decode() for c in row] for row in env.unwrapped.desc]
        self.n_rows, self.n_cols = len(self.desc), len(self.desc[0])
        self.n_states = self.n_rows * self.n_cols
        env.close()

    def reset(self, rng):
        return 0  # FrozenLake always starts top-left

    def step(self, state, action, rng):
        outcomes = self.P[state][action]
        probs = np.array([o[0] for o in outcomes])
        prob, nxt, reward, done = outcomes[int(rng.choice(len(outcomes), p=probs / probs.sum()))]
        return int(nxt), float(reward), bool(done)

    def is_terminal(self, state: int) -> bool:
        r, c = divmod(state, self.n_cols)
        return self.desc[r][c] in "HG"

    def reference_q(self, gamma, tol: float = 1e-12):
        q = np.zeros((self.n_states, len(self.action_names)))
        v = np.zeros(self.n_states)
        for _ in range(10_000):
            for s in range(self.n_states):
                for a in range(len(self.action_names)):
                    q[s, a] = sum(p * (r + (0.0 if done else gamma * v[s2])) for p, s2, r, done in self.P[s][a])
            # Terminal states have value 0: the episode has ended there.
            new_v = np.where([self.is_terminal(s) for s in range(self.n_states)], 0.0, q.max(axis=1))
            if np.max(np.abs(new_v - v)) < tol:
                v = new_v
                break
            v = new_v
        return q

    def describe(self, state):
        r, c = divmod(state, self.n_cols)
        rows = ["".join("A" if (i, j) == (r, c) else ch for j, ch in enumerate(row)) for i, row in enumerate(self.desc)]
        return "\n".join(rows) + f"\nYou (A) are at row {r + 1}, column {c + 1}."

    def task(self):
        slip = " The ice is slippery: a move can go sideways." if self.params.slippery else ""
        return ("Walk on the frozen lake from S to the goal G without falling into a hole H. F is safe ice. "
                "Rows are numbered from the top, columns from the left." + slip)
