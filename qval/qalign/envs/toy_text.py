"""gymnasium toy_text environments with exact Q* by value iteration on their full transition tables.

Rewards are re-expressed as QVal's sparse success reward: 1 on the transition that completes the task, 0
otherwise, discounted by gamma. Gymnasium's own shaped rewards (-1 per step, -10, -100) are not used.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from .base import Environment


class ToyTextEnv(Environment):
    gym_id = ""

    def __init__(self, params):
        super().__init__(params)
        import gymnasium as gym

        env = gym.make(self.gym_id, **self.make_kwargs())
        self.unwrapped = env.unwrapped
        self.P = env.unwrapped.P  # P[s][a] = [(prob, next_state, reward, terminated), ...]
        self.n_states = env.observation_space.n
        self.initial = np.asarray(getattr(env.unwrapped, "initial_state_distrib", np.eye(self.n_states)[0]), float)
        self.max_episode_steps = env.spec.max_episode_steps if env.spec else None  # gymnasium's step limit
        env.close()

    def make_kwargs(self) -> dict:
        return {}

    def is_success(self, state: int, next_state: int, reward: float, done: bool) -> bool:
        raise NotImplementedError

    def transitions(self, state: int, action: int):
        """(prob, next state, sparse reward, episode ends) for each outcome."""
        for prob, nxt, reward, done in self.P[state][action]:
            success = self.is_success(state, int(nxt), float(reward), bool(done))
            yield prob, int(nxt), 1.0 if success else 0.0, bool(done) or success

    def reset(self, rng):
        return int(rng.choice(self.n_states, p=self.initial / self.initial.sum()))

    def step(self, state, action, rng):
        outcomes = list(self.transitions(state, action))
        probs = np.array([o[0] for o in outcomes])
        _, nxt, reward, done = outcomes[int(rng.choice(len(outcomes), p=probs / probs.sum()))]
        return nxt, reward, done

    def reference_q(self, gamma, tol: float = 1e-12):
        n_actions = len(self.action_names)
        table = [[list(self.transitions(s, a)) for a in range(n_actions)] for s in range(self.n_states)]
        v = np.zeros(self.n_states)
        q = np.zeros((self.n_states, n_actions))
        for _ in range(100_000):
            for s in range(self.n_states):
                for a in range(n_actions):
                    q[s, a] = sum(p * (r + (0.0 if done else gamma * v[s2])) for p, s2, r, done in table[s][a])
            new_v = q.max(axis=1)
            delta = np.max(np.abs(new_v - v))
            v = new_v
            if delta < tol:
                break
        return q


class FrozenLakeParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    map: Literal["4x4", "8x8", "random", "custom"] = "4x4"
    slippery: bool = False
    size: int = Field(default=6, ge=3, le=20)  # for map = random
    map_seed: int = Field(default=0, ge=0)  # for map = random
    desc: list[str] | None = None  # for map = custom: rows of S, F, H, G

    @model_validator(mode="after")
    def _custom(self):
        if (self.map == "custom") != (self.desc is not None):
            raise ValueError("give 'desc' exactly when map is 'custom'")
        if self.desc is not None:
            if len({len(r) for r in self.desc}) != 1 or not all(set(r) <= set("SFHG") for r in self.desc):
                raise ValueError("desc rows must have equal length and use only S, F, H, G")
            text = "".join(self.desc)
            if text.count("S") != 1 or "G" not in text:
                raise ValueError("desc needs exactly one S and at least one G")
        return self


class FrozenLakeEnv(ToyTextEnv):
    """Gymnasium's FrozenLake-v1 (4x4, 8x8, seeded random or custom map): reach G without falling into a hole,
    optionally slippery; exact Q* by value iteration.

    The only one of the three toy-text envs whose moves can be stochastic, and the only one with failure states: a hole
    ends the episode with reward 0. Unlike gymnasium's default the ice is not slippery unless ``slippery: true`` (then a
    move can go sideways, and Q* accounts for it). Gymnasium's reward (1 on reaching G) already is QVal's sparse success
    reward. ``heuristic`` is minus the Manhattan distance to the nearest G."""

    name = "frozenlake"
    version = "2"
    gym_id = "FrozenLake-v1"
    Params = FrozenLakeParams
    action_names = ("left", "down", "right", "up")  # gymnasium's action order

    def make_kwargs(self):
        p = self.params
        if p.map == "custom":
            return {"desc": p.desc, "is_slippery": p.slippery}
        if p.map == "random":
            from gymnasium.envs.toy_text.frozen_lake import generate_random_map

            return {"desc": generate_random_map(size=p.size, seed=p.map_seed), "is_slippery": p.slippery}
        return {"map_name": p.map, "is_slippery": p.slippery}

    def __init__(self, params):
        super().__init__(params)
        self.desc = [[c.decode() for c in row] for row in self.unwrapped.desc]
        self.n_cols = len(self.desc[0])

    def is_success(self, state, next_state, reward, done):
        return reward > 0  # gymnasium pays 1 exactly on reaching G

    def heuristic(self, state):
        r, c = divmod(state, self.n_cols)
        goals = [(i, j) for i, row in enumerate(self.desc) for j, ch in enumerate(row) if ch == "G"]
        return -float(min(abs(r - i) + abs(c - j) for i, j in goals))

    def describe(self, state):
        r, c = divmod(state, self.n_cols)
        rows = ["".join("A" if (i, j) == (r, c) else ch for j, ch in enumerate(row)) for i, row in enumerate(self.desc)]
        return "\n".join(rows) + f"\nYou (A) are at row {r + 1}, column {c + 1}."

    def task(self, state):
        slip = " The ice is slippery: a move can go sideways." if self.params.slippery else ""
        return (
            "Walk on the frozen lake from S to the goal G without falling into a hole H. F is safe ice. "
            "Rows are numbered from the top, columns from the left." + slip
        )


class CliffWalkingEnv(ToyTextEnv):
    """Gymnasium's CliffWalking-v1, a deterministic 4x12 grid: walk to G along a cliff that sends you back to the start;
    exact Q* by value iteration.

    Gymnasium's rewards (-1 per step, -100 for the cliff) are replaced by QVal's sparse success reward (1 on reaching G,
    0 otherwise, discounted by gamma), so no move ends the episode in failure: stepping onto the cliff costs only the
    discounting of the steps it loses. ``heuristic`` is minus the Manhattan distance to G."""

    name = "cliffwalking"
    gym_id = "CliffWalking-v1"
    action_names = ("up", "right", "down", "left")
    ROWS, COLS, GOAL = 4, 12, 47

    def is_success(self, state, next_state, reward, done):
        return next_state == self.GOAL

    def heuristic(self, state):
        r, c = divmod(state, self.COLS)
        return -float(abs(r - 3) + abs(c - 11))

    def describe(self, state):
        r, c = divmod(state, self.COLS)
        rows = []
        for i in range(self.ROWS):
            row = ["C" if i == 3 and 0 < j < 11 else ("G" if (i, j) == (3, 11) else ".") for j in range(self.COLS)]
            if i == r:
                row[c] = "A"
            rows.append(" ".join(row))
        return "\n".join(rows) + f"\nYou (A) are at row {r + 1}, column {c + 1}."

    def task(self, state):
        return (
            "Reach the goal G in the bottom-right corner. Stepping onto the cliff C sends you back to the start "
            "(bottom-left). '.' is safe ground. Rows are numbered from the top, columns from the left."
        )


class TaxiEnv(ToyTextEnv):
    """Gymnasium's Taxi-v4 (500 states, deterministic): pick the passenger up, then drop them off at the destination, a
    two-stage task; exact Q* by value iteration.

    Gymnasium's shaped rewards (-1 per step, -10 for an illegal pick-up or drop-off, +20 for the drop-off) are replaced
    by QVal's sparse success reward: 1 on the correct drop-off, 0 otherwise, discounted by gamma. ``heuristic`` is minus
    the Manhattan length of the remaining route (walls ignored) plus pick-up and drop-off."""

    name = "taxi"
    gym_id = "Taxi-v4"
    action_names = ("south", "north", "east", "west", "pickup", "dropoff")
    LOCATIONS = ("R", "G", "Y", "B")

    def is_success(self, state, next_state, reward, done):
        return done and reward > 0  # the only terminal transition is a correct drop-off (+20 in gymnasium)

    def heuristic(self, state):
        """Minus the Manhattan length of the remaining route (walls ignored), plus pick-up and drop-off."""
        row, col, passenger, dest = self.unwrapped.decode(state)
        locs = self.unwrapped.locs
        to_dest = abs(locs[dest][0] - (row if passenger == 4 else locs[passenger][0])) + abs(
            locs[dest][1] - (col if passenger == 4 else locs[passenger][1])
        )
        to_passenger = 0 if passenger == 4 else abs(row - locs[passenger][0]) + abs(col - locs[passenger][1]) + 1
        return -float(to_passenger + to_dest + 1)

    def describe(self, state):
        row, col, passenger, dest = self.unwrapped.decode(state)
        grid = [[c.decode() for c in line] for line in self.unwrapped.desc.tolist()]
        grid[1 + row][2 * col + 1] = "T"
        where = "in the taxi" if passenger == 4 else f"waiting at {self.LOCATIONS[passenger]}"
        return (
            "\n".join("".join(line) for line in grid)
            + f"\nThe taxi (T) is at row {row + 1}, column {col + 1}. The passenger is {where}; "
            f"the destination is {self.LOCATIONS[dest]}."
        )

    def task(self, state):
        return (
            "Drive the taxi to the passenger, pick them up, drive to the destination and drop them off. "
            "'|' is a wall; R, G, Y, B are the four stands."
        )
