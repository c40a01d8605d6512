"""MiniGrid / BabyAI levels with exact Q* by breadth-first search over the reachable states of a few layouts.

At construction each layout (one per seed) is reset, and every state reachable from its start is found by
restoring a snapshot of the unwrapped env and stepping each action. A state is keyed by what the dynamics
depend on: layout, agent position and direction, what the agent carries (type, colour) and the grid contents
(type, colour, door state per cell; pickup, drop and toggle change them). The step count is not part of the
key: MiniGrid's max_steps truncation and its step-dependent reward ``1 - 0.9 * steps / max_steps`` are not
used. Rewards are QVal's sparse success reward: 1 on the transition the level reports as success (goal
reached, BabyAI mission verified), 0 otherwise; failure terminals (lava) are 0. Q* then comes
from value iteration on the deterministic table, exact for any gamma.

Only levels with deterministic dynamics whose success does not need the ``done`` action are listed; ``done``
is left out of the action set (it does nothing in them).
"""

from __future__ import annotations

import pickle
import re
from collections import deque
from dataclasses import dataclass
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from .base import Environment

ALL_ACTIONS = ("turn left", "turn right", "move forward", "pick up", "drop", "toggle")  # MiniGrid actions 0-5
NAVIGATION = ALL_ACTIONS[:3]
GRID_PRESERVING = (0, 1, 2)
DIRECTIONS = ("right (east)", "down (south)", "left (west)", "up (north)")  # MiniGrid agent_dir 0..3
ARROWS = ">v<^"
# One character per object type; colours are named in the legend.
CHARS = {"empty": ".", "wall": "#", "floor": ".", "goal": "G", "lava": "~", "key": "K", "ball": "O", "box": "B"}
DOOR_CHARS = {0: "_", 1: "D", 2: "L"}  # MiniGrid door state: 0 open, 1 closed, 2 locked
DOOR_WORDS = {0: "open", 1: "closed", 2: "locked"}


@dataclass(frozen=True)
class Level:
    actions: Literal["all", "navigation"]
    hint: str  # how the level is won, in words the mission text leaves out


_GOTO = "To go to an object, stand in a cell next to it and face it."
LEVELS: dict[str, Level] = {
    "MiniGrid-Empty-5x5-v0": Level("all", "Reach the goal G."),
    "MiniGrid-Empty-Random-5x5-v0": Level("all", "Reach the goal G."),
    "MiniGrid-Empty-6x6-v0": Level("all", "Reach the goal G."),
    "MiniGrid-DoorKey-5x5-v0": Level(
        "all", "Pick up the key, face the locked door and toggle it to unlock it, then reach the goal G."
    ),
    "MiniGrid-DoorKey-6x6-v0": Level(
        "all", "Pick up the key, face the locked door and toggle it to unlock it, then reach the goal G."
    ),
    "MiniGrid-LavaGapS5-v0": Level("all", "Reach the goal G. Stepping into lava ~ ends the episode in failure."),
    "MiniGrid-LavaGapS6-v0": Level("all", "Reach the goal G. Stepping into lava ~ ends the episode in failure."),
    "MiniGrid-FourRooms-v0": Level("all", "Reach the goal G. Walls # separate four rooms joined by gaps."),
    "BabyAI-GoToObj-v0": Level("all", _GOTO),
    "BabyAI-GoToObjS4-v0": Level("all", _GOTO),
    "BabyAI-GoToRedBallNoDists-v0": Level("all", _GOTO),
    "BabyAI-GoToLocalS5N2-v0": Level("all", _GOTO),
    # Seven distractors that can be picked up, dropped anywhere and (boxes) toggled away: with every action one
    # layout alone has over 200,000 states, so this level defaults to navigation only (444 states for 4 layouts).
    "BabyAI-GoToRedBallGrey-v0": Level("navigation", _GOTO),
}


class MiniGridParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    level: Literal[tuple(LEVELS)] = "MiniGrid-DoorKey-5x5-v0"
    layout_seed: int = Field(default=0, ge=0)  # layouts are the resets with seeds layout_seed .. + n_layouts - 1
    n_layouts: int = Field(default=4, ge=1, le=1000)
    actions: Literal["level", "all", "navigation"] = "level"  # "level": the level's default (see LEVELS)
    max_states: int = Field(default=20_000, ge=1)


class _Snapshots:
    """Pickled copies of one layout's env without what stepping never changes.

    Unpickling the whole env per (state, action) spends most of its time on the spaces, the RNG and hundreds
    of walls. A snapshot leaves them out (they are put back from the layout's start env on loading), so it
    holds only the agent, the movable objects, doors and (BabyAI) the instruction verifier, which refer to
    each other and are copied together. Walls, goals, lava and floor never move and nothing can be dropped on
    them, so their cells are constant.
    """

    STATIC_ATTRS = ("observation_space", "action_space", "spec", "_np_random", "actions")
    STATIC_TYPES = ("wall", "goal", "lava", "floor")

    def __init__(self, u):
        self.attrs = {k: u.__dict__[k] for k in self.STATIC_ATTRS if k in u.__dict__}
        self.cells = [(i, v) for i, v in enumerate(u.grid.grid) if v is not None and v.type in self.STATIC_TYPES]
        self.static = {i for i, _ in self.cells}

    def dumps(self, u) -> bytes:
        d, cells = u.__dict__, u.grid.grid
        saved = {k: d.pop(k) for k in self.attrs}
        u.grid.grid = [None if i in self.static else v for i, v in enumerate(cells)]
        try:
            return pickle.dumps(u, protocol=pickle.HIGHEST_PROTOCOL)
        finally:
            u.grid.grid = cells
            d.update(saved)

    def loads(self, data: bytes):
        u = pickle.loads(data)
        u.__dict__.update(self.attrs)
        g = u.grid.grid
        for i, v in self.cells:
            g[i] = v
        return u


def _grid_key(grid) -> tuple:
    """Per-cell (type, colour, state) codes: exactly what grid.encode() holds, as a hashable tuple (faster)."""
    return tuple([0 if v is None else v.encode() for v in grid.grid])


class MiniGridEnv(Environment):
    """Any level in LEVELS (param ``level``), several layouts, exact Q* by BFS + value iteration."""

    name = "minigrid"
    version = "1"
    Params = MiniGridParams
    action_names = ALL_ACTIONS
    check_grid = False  # tests set True to re-encode the grid after every action (no GRID_PRESERVING shortcut)

    def __init__(self, params):
        super().__init__(params)
        import gymnasium as gym
        import minigrid  # noqa: F401  (registers the MiniGrid and BabyAI ids)

        level = LEVELS[params.level]
        mode = level.actions if params.actions == "level" else params.actions
        self._actions = ALL_ACTIONS if mode == "all" else NAVIGATION
        n_actions = len(self._actions)
        env = gym.make(params.level)
        base = env.unwrapped
        self.width, self.height = base.width, base.height
        self.grids: list[tuple] = []  # interned grid keys
        grid_ids: dict[tuple, int] = {}
        self.keys: list[tuple] = []  # state id -> (layout, grid id, (x, y), dir, carrying (type, colour) or None)
        ids: dict[tuple, int] = {}
        self.missions: list[str] = []
        self.starts: list[int] = []
        nxt, rew, done = [], [], []  # per state: lists over actions (filled for expanded states)

        def key_of(layout, u, gid=None):
            if gid is None:
                g = _grid_key(u.grid)
                gid = grid_ids.setdefault(g, len(grid_ids))
                if gid == len(self.grids):
                    self.grids.append(g)
            carrying = None if u.carrying is None else (u.carrying.type, u.carrying.color)
            return layout, gid, (int(u.agent_pos[0]), int(u.agent_pos[1])), int(u.agent_dir), carrying

        def intern(key):
            sid = ids.get(key)
            if sid is None:
                if len(ids) >= params.max_states:
                    raise ValueError(
                        f"{params.level} with {params.n_layouts} layouts and actions={mode!r} has more than "
                        f"max_states={params.max_states} reachable states; lower n_layouts, use "
                        f"actions='navigation', or raise max_states"
                    )
                sid = ids[key] = len(self.keys)
                self.keys.append(key)
                for table in (nxt, rew, done):
                    table.append(None)
            return sid

        for layout in range(params.n_layouts):
            obs, _ = env.reset(seed=params.layout_seed + layout)
            self.missions.append(obs["mission"])
            base.step_count = 0
            start = intern(key_of(layout, base))
            self.starts.append(start)
            snaps = _Snapshots(base)
            frontier, queued = deque([(start, snaps.dumps(base))]), {start}
            while frontier:
                sid, snap = frontier.popleft()
                row_n, row_r, row_d = [], [], []
                for a in range(n_actions):
                    u = snaps.loads(snap)
                    u.gen_obs = _no_obs  # the observation is not needed to step; it costs 20x the step
                    _, reward, terminated, _, _ = u.step(a)
                    success = terminated and reward > 0  # step_count is 1 here, so success pays > 0
                    # Turning and moving never change the grid (MiniGrid's step only edits it on pick up, drop
                    # and toggle), so they keep the parent's grid id: encoding a 19x19 grid is the main cost.
                    same_grid = self.keys[sid][1] if a in GRID_PRESERVING and not self.check_grid else None
                    s2 = intern(key_of(layout, u, same_grid))
                    row_n.append(s2)
                    row_r.append(1.0 if success else 0.0)
                    row_d.append(bool(terminated))
                    if not terminated and s2 not in queued:
                        u.step_count = 0
                        del u.gen_obs
                        queued.add(s2)
                        frontier.append((s2, snaps.dumps(u)))
                nxt[sid], rew[sid], done[sid] = row_n, row_r, row_d
        env.close()
        # States reached only by a terminal transition are never expanded: they end the episode where they stand.
        for sid in range(len(self.keys)):
            if nxt[sid] is None:
                nxt[sid], rew[sid], done[sid] = [sid] * n_actions, [0.0] * n_actions, [True] * n_actions
        self.next = np.asarray(nxt, dtype=np.int64)
        self.reward = np.asarray(rew, dtype=float)
        self.done = np.asarray(done, dtype=bool)
        self.n_states = len(self.keys)

    # --- dynamics -------------------------------------------------------------------------------------------
    def actions(self, state):
        return self._actions

    def reset(self, rng):
        return self.starts[int(rng.integers(len(self.starts)))]

    def step(self, state, action, rng):
        return int(self.next[state, action]), float(self.reward[state, action]), bool(self.done[state, action])

    def reference_q(self, gamma):
        """Value iteration on the deterministic table; exact: it stops when an update changes nothing."""
        v = np.zeros(self.n_states)
        cont = gamma * ~self.done
        q = self.reward.copy()
        for _ in range(self.n_states + 2):
            q = self.reward + cont * v[self.next]
            new_v = q.max(axis=1)
            if np.array_equal(new_v, v):
                break
            v = new_v
        return q

    # --- text ----------------------------------------------------------------------------------------------
    def _cell(self, grid, x, y):
        return grid[y * self.width + x]

    def describe(self, state):
        _, gid, (ax, ay), adir, carrying = self.keys[state]
        grid = self.grids[gid]
        from minigrid.core.constants import IDX_TO_COLOR, IDX_TO_OBJECT

        def words(code):
            if code == 0:
                return "nothing (empty floor)"
            kind, color, st = IDX_TO_OBJECT[code[0]], IDX_TO_COLOR[code[1]], code[2]
            if kind == "door":
                return f"the {DOOR_WORDS[st]} {color} door"
            if kind in ("wall", "goal", "lava"):
                return {"wall": "a wall", "goal": "the goal", "lava": "lava"}[kind]
            return f"the {color} {kind}"

        rows, legend = [], {}
        for y in range(self.height):
            row = []
            for x in range(self.width):
                code = self._cell(grid, x, y)
                if (x, y) == (ax, ay):
                    row.append(ARROWS[adir])
                    continue
                if code == 0:
                    row.append(".")
                    continue
                kind = IDX_TO_OBJECT[code[0]]
                ch = DOOR_CHARS[code[2]] if kind == "door" else CHARS.get(kind, "?")
                row.append(ch)
                if kind in ("key", "ball", "box", "door"):
                    legend.setdefault(ch, []).append(f"{words(code)} at row {y + 1}, column {x + 1}")
            rows.append(" ".join(row))
        dx, dy = ((1, 0), (0, 1), (-1, 0), (0, -1))[adir]
        ahead = words(self._cell(grid, ax + dx, ay + dy))
        held = "nothing" if carrying is None else f"the {carrying[1]} {carrying[0]}"
        kinds = {c for r in rows for c in r.split()}
        key = [f"{ARROWS[adir]} you", "# wall", ". floor"]
        key += [
            f"{c} {n}"
            for c, n in (
                ("G", "goal"),
                ("~", "lava"),
                ("K", "key"),
                ("O", "ball"),
                ("B", "box"),
                ("D", "closed door"),
                ("L", "locked door"),
                ("_", "open door"),
            )
            if c in kinds
        ]
        objects = "".join(f"\n{ch}: " + "; ".join(items) for ch, items in legend.items())
        return (
            "\n".join(rows)
            + f"\nLegend: {', '.join(key)}.{objects}"
            + f"\nYou are at row {ay + 1}, column {ax + 1}, facing {DIRECTIONS[adir]}. "
            f"Ahead of you is {ahead}. You are carrying {held}."
        )

    def heuristic(self, state):
        """Minus the Manhattan distance (walls ignored) to the current subgoal, minus a grid size per subgoal
        still ahead: the key while a door is locked and nothing is carried, then the locked door, then the goal
        or (BabyAI) the objects the mission names."""
        from minigrid.core.constants import IDX_TO_COLOR, IDX_TO_OBJECT

        layout, gid, (ax, ay), _, carrying = self.keys[state]
        cells = [
            (i % self.width, i // self.width, IDX_TO_OBJECT[c[0]], IDX_TO_COLOR[c[1]], c[2])
            for i, c in enumerate(self.grids[gid])
            if c != 0
        ]
        locked = [c for c in cells if c[2] == "door" and c[4] == 2]
        if locked and carrying is None:
            targets, stages = [c for c in cells if c[2] == "key"], 2
        elif locked:
            targets, stages = locked, 1
        else:
            m = re.match(r"go to (?:the|a) (?:(red|green|blue|purple|yellow|grey) )?(\w+)", self.missions[layout])
            if m:
                targets = [c for c in cells if c[2] == m.group(2) and m.group(1) in (None, c[3])]
            else:
                targets = [c for c in cells if c[2] == "goal"]
            stages = 0
        if not targets:
            return float(-(stages + 1) * (self.width + self.height))
        dist = min(abs(x - ax) + abs(y - ay) for x, y, *_ in targets)
        return float(-dist - stages * (self.width + self.height))

    def task(self, state):
        mission = self.missions[self.keys[state][0]]
        return (
            f"{mission[0].upper()}{mission[1:]}. {LEVELS[self.params.level].hint} "
            "'turn left' and 'turn right' turn you in place; 'move forward' moves one cell the way you face"
            + ("; 'pick up', 'drop' and 'toggle' act on the cell ahead of you" if len(self._actions) > 3 else "")
            + ". Rows are numbered from the top, columns from the left."
        )


def _no_obs():
    return None
