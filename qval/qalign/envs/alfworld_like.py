"""``alfworld-like``: generated household tasks of ALFWorld's six types, with exact Q* from a breadth-first planner.

Not ALFWorld. The ``alfworld`` package (0.4.2) cannot run offline: its wheel ships the PDDL domain, the TextWorld
grammar and per-scene object lists, but every game (the ``traj_data.json`` and ``*.tw-pddl`` files of its train /
valid splits) is downloaded from GitHub releases by ``alfworld-download``, and its scenes come from AI2-THOR.

What this environment shares with ALFWorld: the six task types and their goal sentences, the object and
receptacle vocabulary, the command language ("go to X", "open X", "take X from Y", "move X to Y",
"clean/heat/cool X with Y", "use desklamp 1"), the action semantics of ALFWorld's PDDL domain (``household.py``
says which) and QVal's sparse success reward. What it does not share: ALFWorld's scenes and task instances (these
are small seeded rooms with a few receptacles and objects, so exact search is cheap), its exact observation
wording (here every observation says where the agent is, what it sees there and what it carries, instead of
only the last command's feedback) and its expert. No info commands ("look", "inventory", "examine") are
offered: they change nothing and the observation already holds what they would print.

Why not TextWorld's engine: its built-in logic has rooms and doors but no "go to a receptacle" step, no
clean/heat/cool and no lamp; and exact Q needs every reachable state (10^3-10^4 per game here), which
TextWorld's logic layer lists at about a millisecond per state (``textworld.py``), minutes per game. The
dynamics here are ALFWorld's own PDDL actions, written as a transition function over plain tuples.

Reference Q is exact: each layout's reachable states are enumerated breadth-first from its start, the distance
d(s) of every state to the nearest winning state is found by a backward breadth-first search, and
Q(s, a) = gamma ** d(s') with s' the state after a (1 when a wins). The game is deterministic and every action
costs one step, so this is the optimal return under QVal's reward (1 on the winning transition, 0 otherwise).
No state is a dead end (nothing breaks or is lost), so Q > 0 everywhere.

Episodes start at a layout drawn by ``reset``; layouts cycle through ``task_types``. QVal's ALFWorld uses a
40-step limit: set ``points.max_steps: 40`` in a suite (optimal plans of the default rooms are 3-10 commands).
"""

from __future__ import annotations

import hashlib
from collections import deque
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from ...errors import QvalError
from .base import Environment
from .household import HELD, TASK_TYPES, Layout, generate

TaskType = Literal[TASK_TYPES]  # type: ignore[valid-type]


class AlfWorldLikeParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    task_types: list[TaskType] = Field(default_factory=lambda: list(TASK_TYPES), min_length=1)
    n_layouts: int = Field(default=6, ge=1, le=1000)  # layout i has task type task_types[i % len(task_types)]
    seed: int = Field(default=0, ge=0)
    n_receptacles: int = Field(default=6, ge=3, le=12)  # at least the ones the task needs
    n_distractors: int = Field(default=1, ge=0, le=6)  # objects besides the target(s)
    # Candidates per state: all optimal actions plus a seeded sample of the others; None keeps all.
    max_actions: int | None = Field(default=12, ge=2, le=64)
    max_states: int = Field(default=200_000, ge=1)  # reachable states over all layouts (a guard on memory/time)


class AlfWorldLikeEnv(Environment):
    """Household tasks of ALFWorld's six types (pick and place, clean, heat, cool, examine in light, pick two) in
    small generated rooms, with ALFWorld's commands and exact Q* by breadth-first search. Not ALFWorld's games."""

    name = "alfworld-like"
    version = "1"
    Params = AlfWorldLikeParams

    def __init__(self, params):
        super().__init__(params)
        p = params
        self.layouts: list[Layout] = [
            generate(p.task_types[i % len(p.task_types)], p.seed, i, p.n_receptacles, p.n_distractors)
            for i in range(p.n_layouts)
        ]
        self.keys: list[tuple] = []  # state id -> (layout, world state)
        self.starts: list[int] = []
        self._commands: list[tuple[str, ...]] = []  # all admissible commands, sorted
        self._next: list[tuple[int, ...]] = []
        self._won: list[bool] = []
        for index, layout in enumerate(self.layouts):
            self.starts.append(self._explore(index, layout))
        self.n_states = len(self.keys)
        self._distance = self._distances()
        self._candidates: dict[int, list[int]] = {}

    # --- planner ---------------------------------------------------------------------------------------------

    def _explore(self, index: int, layout: Layout) -> int:
        """Number every state reachable from the layout's start (breadth-first); returns the start's id.
        Winning states are terminal: they are numbered but not expanded."""
        ids: dict[tuple, int] = {}

        def intern(world) -> int:
            sid = ids.get(world)
            if sid is None:
                if len(self.keys) >= self.params.max_states:
                    raise QvalError(
                        f"alfworld-like: more than max_states={self.params.max_states} reachable states; lower "
                        f"n_layouts, n_receptacles or n_distractors, or raise max_states"
                    )
                sid = ids[world] = len(self.keys)
                self.keys.append((index, world))
                self._won.append(layout.won(world))
                self._commands.append(())
                self._next.append(())
            return sid

        start = intern(layout.start)
        frontier = deque([start])
        while frontier:
            sid = frontier.popleft()
            if self._won[sid]:
                continue
            pairs = sorted(layout.transitions(self.keys[sid][1]))
            children = []
            for _, world in pairs:
                known = len(self.keys)
                child = intern(world)
                if child == known:  # new
                    frontier.append(child)
                children.append(child)
            self._commands[sid] = tuple(c for c, _ in pairs)
            self._next[sid] = tuple(children)
        return start

    def _distances(self) -> np.ndarray:
        """Commands from each state to its layout's nearest win: a backward breadth-first search from every
        winning state over the reversed transitions (exact: the game is deterministic with unit costs)."""
        parents: list[list[int]] = [[] for _ in range(self.n_states)]
        for sid, children in enumerate(self._next):
            for child in children:
                parents[child].append(sid)
        dist = np.full(self.n_states, np.inf)
        frontier = deque(sid for sid in range(self.n_states) if self._won[sid])
        for sid in frontier:
            dist[sid] = 0.0
        while frontier:
            sid = frontier.popleft()
            for parent in parents[sid]:
                if dist[parent] == np.inf:
                    dist[parent] = dist[sid] + 1.0
                    frontier.append(parent)
        return dist

    def distance(self, state: int) -> float:
        """Fewest commands from ``state`` to winning (0 once won)."""
        return float(self._distance[state])

    def _selected(self, state: int) -> list[int]:
        """Indices of the candidates among all admissible commands: every optimal one, then a seeded sample of
        the others, in command order (so a candidate's position says nothing about its value)."""
        if state in self._candidates:
            return self._candidates[state]
        n, cap = len(self._commands[state]), self.params.max_actions
        keep = list(range(n))
        if cap is not None and n > cap:
            dists = self._distance[list(self._next[state])]
            optimal = [i for i in range(n) if dists[i] == dists.min()]
            rest = [i for i in range(n) if dists[i] != dists.min()]
            digest = hashlib.sha256(f"{self.params.seed}\n{state}".encode()).digest()
            rng = np.random.default_rng(int.from_bytes(digest[:8], "little"))
            if len(optimal) >= cap:
                keep = sorted(rng.choice(optimal, size=cap, replace=False).tolist())
            else:
                keep = sorted(optimal + rng.choice(rest, size=cap - len(optimal), replace=False).tolist())
        self._candidates[state] = keep
        return keep

    # --- Environment API -------------------------------------------------------------------------------------

    def actions(self, state):
        if self._won[state]:
            return ("look",)  # the episode has ended; a terminal state still offers one (inert) action
        commands = self._commands[state]
        return tuple(commands[i] for i in self._selected(state))

    def successor(self, state: int, action: int) -> int:
        return self._next[state][self._selected(state)[action]]

    def reset(self, rng):
        return self.starts[int(rng.integers(len(self.starts)))]

    def step(self, state, action, rng):
        if self._won[state]:
            return state, 0.0, True
        child = self.successor(state, action)
        won = self._won[child]
        return child, 1.0 if won else 0.0, won

    def reference_q(self, gamma):
        return _ReferenceQ(self, gamma)

    def layout_of(self, state: int) -> Layout:
        return self.layouts[self.keys[state][0]]

    def task(self, state):
        return "Your task is to: " + self.layout_of(state).goal_text()

    def describe(self, state):
        return self.layout_of(state).describe(self.keys[state][1])

    def heuristic(self, state):
        """Minus the stages left, counted from the objects alone: per target still needed, taking it (unless
        held), its treatment at the appliance (clean/heat/cool, unless done) and putting it down (or, for the
        lamp task, holding it under the lamp switched on). It ignores where the agent stands and what is closed."""
        layout = self.layout_of(state)
        _, pos, _, props, lamp_on = self.keys[state][1]
        if self._won[state]:
            return 0.0
        need = layout.needed_property()
        targets = [i for i, t in enumerate(layout.types) if t == layout.target]
        if layout.task_type == "look_at_obj_in_light":
            held = any(pos[i] == HELD for i in targets)
            return -float((0 if held else 1) + (0 if lamp_on else 1) + 1)
        costs = []
        for i in targets:
            placed = pos[i] >= 0 and layout.kinds[pos[i]] == layout.place
            treated = props[i] & need == need
            if placed and treated:
                costs.append(0)
            else:
                costs.append((0 if pos[i] == HELD else 1) + (0 if treated else 1) + 1)
        wanted = 2 if layout.task_type == "pick_two_obj_and_place" else 1
        return -float(sum(sorted(costs)[:wanted]))


class _ReferenceQ:
    """``q[state]`` = gamma ** d(successor) over ``actions(state)``; 0 on a terminal state."""

    def __init__(self, env: AlfWorldLikeEnv, gamma: float):
        self.env, self.gamma = env, gamma

    def __getitem__(self, state) -> np.ndarray:
        env, state = self.env, int(state)
        if env._won[state]:
            return np.zeros(1)
        children = [env._next[state][i] for i in env._selected(state)]
        return np.power(self.gamma, env._distance[children])


__all__ = ["AlfWorldLikeEnv", "AlfWorldLikeParams"]
