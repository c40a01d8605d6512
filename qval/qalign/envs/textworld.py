"""TextWorld games (``pip install textworld==1.7.0``) with reference Q from TextWorld's winning policy.

A game is generated once from its Params (TextWorld's generator is deterministic given the seed) and compiled to
a .z8 story plus a .json game file, cached under ``$QVAL_CACHE/textworld`` so that every cell and worker reuses
it instead of recompiling (about 1-4 s per game).

Two layers, kept in lockstep exactly as TextWorld's own ``StateTracking`` wrapper does:

* dynamics and Q come from TextWorld's logic layer (``GameProgression``: facts, admissible actions, the quest's
  winning policy). It is pure Python, steps in about a millisecond and copies cheaply, so a Q row is computed by
  branching from the state's own progression instead of replaying the game for each candidate;
* text comes from the compiled story run by Jericho (the Z-machine), used only for ``describe``: a state's text is
  replayed from the nearest ancestor whose interpreter snapshot is cached (``get_state``/``set_state`` cost ~10 us).

States are command histories from the start of the game (the game is deterministic). Ids are given out as
histories are discovered: 0 for the start, else a 63-bit hash of the history, so that they do not depend on the
order of discovery. ``history(state)`` gives the commands back, ``state_of(history)`` the id.

Reference Q: Q(s, a) = gamma ** d, d = the number of commands from the state after a to winning (0 when a wins
the game; Q = 0 when a loses it). With QVal's sparse reward (1 on the winning transition) this is the return of
taking a and then playing optimally. d comes from TextWorld's ``policy_commands`` (the quest's action-dependency
tree, re-planned after every action: a detour pushes its reverse action, then the plan is greedily compressed),
with one repair: TextWorld routes the player back the way it came, and its generator's walkthroughs can take
the long way round a loop of rooms, so every run of moves in the plan is replaced by a shortest route between
the same rooms (``_policy_length``). Raw policy lengths were too long on ~1.6% of the states of noisy walks
(by 2-4 commands, up to 4 on the start state of an 8-room game). The repaired plan is still a valid plan, so
d is an upper bound; it equalled the breadth-first-search distance on every state compared (600 states of
15 games, d <= 6; the tests check more), and no state had a successor more than one step closer (4,230 states
of noisy walks in 18 games). Quest progress is tracked per history, as TextWorld does.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import tempfile
import warnings
from collections import OrderedDict
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from ...errors import QvalError
from .base import Environment

GENERATOR_VERSION = "1"  # enters the cache key: bump when the generation code changes for the same params
TEXTWORLD_VERSION = "1.7.0"  # the version this module was written against (games and private fields)
_PROGRESS_CACHE = 4096  # live GameProgression objects kept (others are rebuilt from an ancestor)
_SNAPSHOT_CACHE = 512  # Jericho snapshots kept (about 90 kB each)
_LOST = float("inf")  # distance of a state from which the tracked quest cannot be won: Q = gamma**inf = 0


def default_cache_dir() -> Path:
    from qval.models.base import cache_dir

    return cache_dir()


class _CommonParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    seed: int = Field(default=0, ge=0)  # game-generation seed: the game (map, objects, quest) is fixed by the params
    goal: Literal["detailed", "brief"] = "detailed"  # how the objective is worded (see each env)
    # Candidates per state: all optimal actions plus a deterministic, seeded sample of the others; None keeps all.
    max_actions: int | None = Field(default=12, ge=2, le=64)
    # Keep "look", "inventory" and "examine ..." (commands with no effect on the game state) as candidates.
    keep_info_commands: bool = False
    # A safety net, off by default: one Bellman backup, i.e. a successor's distance is min(its own, 1 + the
    # smallest among its successors). It fixes any state where a single step beats the plan, at about 10x the
    # cost of a row. With route shortening (see the module docstring) no such state was found in 4,230 checked.
    lookahead: bool = False


class TextWorldParams(_CommonParams):
    n_rooms: int = Field(default=5, ge=1, le=20)
    n_objects: int = Field(default=10, ge=0, le=50)  # at least this many objects
    quest_length: int = Field(default=6, ge=1, le=20)  # commands in the generated walkthrough (a win can be shorter)
    # No quest_breadth: with parallel sub-quests TextWorld's merged policy is not a shortest one (seed 0,
    # breadth 2: a 6-command policy for a 4-command win), so Q would be off.


class TextWorldSimpleParams(_CommonParams):
    test: bool = False  # TextWorld's held-out split: the food to cook gets a name unseen in the train split


class TextWorldBase(Environment):
    """Shared machinery; subclasses only say how to generate their game."""

    kind = ""

    def __init__(self, params, cache_dir: Path | None = None):
        super().__init__(params)
        try:
            import textworld  # imported here, so that qval loads (and lists) this plugin without it
        except ImportError as exc:
            raise QvalError(
                f"the '{self.name}' env needs TextWorld: pip install textworld=={TEXTWORLD_VERSION}"
            ) from exc
        from textworld.generator.game import Game, GameProgression
        from textworld.generator.inform7 import Inform7Game

        if textworld.__version__ != TEXTWORLD_VERSION:
            warnings.warn(
                f"qval's TextWorld env was written for textworld=={TEXTWORLD_VERSION}, found {textworld.__version__}",
                stacklevel=2,
            )
        self.cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
        self.game_dir = self._ensure_game()
        self.game = Game.load(str(self.game_dir / "game.json"))
        self._inform7 = Inform7Game(self.game)
        self._rules = list(self.game.kb.rules.values())
        self._constants = self.game.kb.types.constants_mapping
        self.objective = self.game.objective.strip()
        root = GameProgression(self.game)
        # Per state: parent id, the logic Action that led there, its command, and (won, lost, distance).
        self._parent: dict[int, int] = _StateTable({0: -1})
        self._action: dict[int, object] = {0: None}
        self._command: dict[int, str] = {0: ""}
        self._status: dict[int, tuple[bool, bool, float]] = _StateTable({0: self._status_of(root)})
        self._expanded: dict[int, tuple[tuple[str, ...], np.ndarray, tuple[int, ...]]] = {}
        self._root_progress = root
        self._progress: OrderedDict[int, object] = OrderedDict()
        self._zmachine = None
        self._snapshots: OrderedDict[int, tuple[str, object]] = OrderedDict()
        self._descriptions: dict[int, str] = {}
        self._backed: dict[int, float] = {}  # distance after the optional one-step backup, by state id
        self._warned = False

    # --- game generation and cache -------------------------------------------------------------------------

    def generation_options(self) -> dict:
        """The params that determine the game (not max_actions etc.): they key the cache."""
        raise NotImplementedError

    def build_game(self, options):
        """Generate a textworld.Game for ``options`` (a GameOptions with seeds set)."""
        raise NotImplementedError

    def _ensure_game(self) -> Path:
        gen = {
            "kind": self.kind,
            "generator": GENERATOR_VERSION,
            "textworld": TEXTWORLD_VERSION,
            **self.generation_options(),
        }
        digest = hashlib.sha256(json.dumps(gen, sort_keys=True).encode()).hexdigest()[:16]
        root = self.cache_dir / "textworld"
        final = root / f"{self.kind}-{digest}"
        if (final / "game.json").is_file() and (final / "game.z8").is_file():
            return final
        root.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}-", dir=root))
        try:
            self._compile(tmp)
            (tmp / "params.json").write_text(json.dumps(gen, indent=1, sort_keys=True))
            tmp.chmod(0o755)  # mkdtemp makes it private; the cache is shared like the model cache
            try:
                os.rename(tmp, final)  # atomic: readers see the whole folder or none of it
            except OSError:
                if not (final / "game.json").is_file():  # not a race lost to another process
                    raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return final

    def _compile(self, folder: Path) -> None:
        import textworld
        from textworld.generator import QuestGenerationError, compile_game

        options = textworld.GameOptions()
        options.seeds = self.params.seed
        options.path = str(folder / "game.z8")
        options.file_ext = ".z8"
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # tw-simple replays its walkthrough in Jericho, which warns
                game = self.build_game(options)
                compile_game(game, options)
        except QuestGenerationError as exc:
            raise QvalError(
                f"TextWorld cannot generate a quest for {self.params!r}: relax quest_length or add "
                f"rooms/objects ({exc})"
            ) from exc
        (folder / "game.ni").unlink(missing_ok=True)  # the Inform 7 source: not needed to play

    # --- logic layer: dynamics and reference Q -------------------------------------------------------------

    def _status_of(self, progress) -> tuple[bool, bool, float]:
        """(won, lost, d): d = length of TextWorld's winning policy, 0 once won, inf once lost or unwinnable."""
        if progress.completed:
            return True, False, 0.0
        if progress.failed:  # a fail event fired (e.g. eating the food to cook) or the quest became unfinishable
            return False, True, _LOST
        return False, False, self._policy_length(progress)

    def _policy_length(self, progress) -> float:
        """Length of TextWorld's winning policy with each run of moves replaced by a shortest route.

        TextWorld plans moves by walking back the way the player came (and its generator's walkthroughs can
        take the long way round a loop of rooms). A run of "go ..." commands only moves the player, so any
        route between the same two rooms through passable connections (``free`` both ways, tracked as the
        policy opens or closes doors) gives an equally valid plan: the length stays an upper bound.
        """
        policy = progress.winning_policy
        if policy is None:
            return _LOST
        free = {_names(f) for f in progress.state.facts if f.name == "free"}
        length, run = 0, None  # run: (first room, last room) of the current run of moves
        for action in policy:
            if action.name.startswith("go/"):
                origin = next(_names(f)[1] for f in action.removed if f.name == "at")
                target = next(_names(f)[1] for f in action.added if f.name == "at")
                run = (run[0] if run else origin, target)
                continue
            if run:
                length += _route_length(free, *run)
                run = None
            length += 1
            free -= {_names(f) for f in action.removed if f.name == "free"}
            free |= {_names(f) for f in action.added if f.name == "free"}
        if run:
            length += _route_length(free, *run)
        return float(length)

    def _advance(self, progress, action):
        """A copy of ``progress`` after ``action``: GameProgression.update without listing the next actions.

        GameProgression.copy() re-lists the initial state's actions (~1 ms) and update() lists the new ones
        (~2 ms); a Q row only needs the quest trees, so both are skipped and actions are listed on expansion.
        """
        from textworld.generator.game import GameProgression

        new = GameProgression.__new__(GameProgression)
        new.game = progress.game
        new.state = progress.state.copy()
        new._valid_actions = None
        new.quest_progressions = [qp.copy() for qp in progress.quest_progressions]
        new.state.apply(action)
        for qp in new.quest_progressions:
            qp.update(action, new.state)
        return new

    def _progress_of(self, state: int):
        if state == 0:
            return self._root_progress
        if state in self._progress:
            self._progress.move_to_end(state)
            return self._progress[state]
        chain, s = [], state
        while s != 0 and s not in self._progress:
            chain.append(s)
            s = self._parent[s]
        progress = self._progress_of(s)
        for s in reversed(chain):
            progress = self._advance(progress, self._action[s])
        self._remember_progress(state, progress)
        return progress

    def _remember_progress(self, state: int, progress) -> None:
        self._progress[state] = progress
        while len(self._progress) > _PROGRESS_CACHE:
            self._progress.popitem(last=False)

    def _admissible(self, progress) -> list[tuple[str, object]]:
        """(command, action) pairs, sorted by command; the first action wins a duplicate command, as in
        TextWorld's own env. Commands with no effect ("look", "inventory", "examine ...") are dropped unless
        keep_info_commands (or nothing else is left): describe() already shows the room and the inventory and
        task() the objective, so they only waste a step, and they would fill the max_actions slots."""
        actions = list(progress.state.all_applicable_actions(self._rules, self._constants))
        pairs = {}
        for command, action in zip(self._inform7.gen_commands_from_actions(actions), actions):
            pairs.setdefault(command, action)
        useful = {c: a for c, a in pairs.items() if a.added or a.removed}
        return sorted((pairs if self.params.keep_info_commands or not useful else useful).items())

    def _backup(self, status, successor_status) -> float:
        """min(policy length, 1 + the successors' shortest policy length); 0 / inf once won / lost."""
        won, lost, dist = status
        if won or lost or not successor_status:
            return dist
        return min(dist, 1.0 + min(s[2] for s in successor_status))

    def _effective(self, child: int, progress, status) -> float:
        """The distance a row uses for a successor (see ``lookahead``), cached by the successor's id."""
        if not self.params.lookahead:
            return status[2]
        if child not in self._backed:
            grandchildren = [self._status_of(self._advance(progress, a)) for _, a in self._admissible(progress)]
            self._backed[child] = self._backup(status, grandchildren)
        return self._backed[child]

    def _expand(self, state: int):
        """Candidates, their distances and child ids; computed once per state."""
        if state in self._expanded:
            return self._expanded[state]
        progress = self._progress_of(state)
        pairs = self._admissible(progress)
        won, lost, _ = self._status[state]
        children = [self._advance(progress, action) for _, action in pairs]
        status = [self._status_of(child) for child in children]
        if self.params.lookahead:
            self._backed.setdefault(state, self._backup(self._status[state], status))
        child_ids = [_child_id(state, command) for command, _ in pairs]
        effective = [self._effective(c, p, st) for c, p, st in zip(child_ids, children, status)]
        dist = self.distance(state)
        if not (won or lost) and min(effective) < dist - 1 and not self._warned:
            self._warned = True  # a successor is more than one step closer: the distances here are not shortest
            warnings.warn(
                f"{self.name}: {self.history(state)} is {dist:.0f} commands from winning by TextWorld's "
                f"policy but a successor is only {min(effective):.0f}: Q underestimates here",
                stacklevel=2,
            )
        keep = self._select(effective, state)
        commands, dists, ids = [], [], []
        for i in keep:
            command, action = pairs[i]
            child = child_ids[i]
            if child not in self._parent:
                self._parent[child] = state
                self._action[child] = action
                self._command[child] = command
                self._status[child] = status[i]
                self._remember_progress(child, children[i])
            elif (self._parent[child], self._command[child]) != (state, command):
                raise RuntimeError(f"state id collision between {self.history(child)} and {self.history(state)}")
            commands.append(command)
            dists.append(_LOST if (won or lost) else effective[i])  # a finished game pays nothing more
            ids.append(child)
        self._progress.pop(state, None)  # every child is built: this state's progression is no longer needed
        out = (tuple(commands), np.asarray(dists, float), tuple(ids))
        self._expanded[state] = out
        return out

    def _select(self, dists: list[float], state: int) -> list[int]:
        """Indices kept as candidates, in command order: all optimal ones, then a seeded sample of the rest.

        Keeping the optimal actions keeps max Q exact; the sample is seeded by the game seed and the state id
        (a hash of the history), so a state always offers the same candidates. Candidates stay sorted by
        command, so their position says nothing about which ones are optimal.
        """
        n, cap = len(dists), self.params.max_actions
        if cap is None or n <= cap:
            return list(range(n))
        best = min(dists)
        optimal = [i for i in range(n) if dists[i] == best and best != _LOST]
        rest = [i for i in range(n) if i not in optimal]
        digest = hashlib.sha256(f"{self.params.seed}\n{state}".encode()).digest()
        rng = np.random.default_rng(int.from_bytes(digest[:8], "little"))
        if len(optimal) >= cap:
            return sorted(rng.choice(optimal, size=cap, replace=False).tolist())
        return sorted(optimal + rng.choice(rest, size=cap - len(optimal), replace=False).tolist())

    # --- Environment API -----------------------------------------------------------------------------------

    def history(self, state: int) -> tuple[str, ...]:
        """The commands from the start of the game that lead to ``state``."""
        commands = []
        while state != 0:
            parent = self._parent[state]
            commands.append(self._command[state])
            state = parent
        return tuple(reversed(commands))

    def state_of(self, history) -> int:
        """The id of the state reached by a command history (each command must be a candidate on the way)."""
        state = 0
        for command in history:
            commands, _, ids = self._expand(state)
            state = ids[commands.index(command)]
        return state

    def successors(self, state: int) -> tuple[int, ...]:
        """The ids of the candidates' successors (in the order of actions(state))."""
        return self._expand(state)[2]

    @property
    def n_states(self) -> int:
        """States discovered so far."""
        return len(self._parent)

    def actions(self, state):
        return self._expand(state)[0]

    def reset(self, rng):
        return 0  # one fixed game per params: the episode always starts at its beginning

    def step(self, state, action, rng):
        won, lost, _ = self._status[state]
        if won or lost:
            return state, 0.0, True
        child = self._expand(state)[2][action]
        won, lost, _ = self._status[child]
        return child, 1.0 if won else 0.0, won or lost

    def reference_q(self, gamma):
        return _ReferenceQ(self, gamma)

    def distance(self, state: int) -> float:
        """Commands from ``state`` to winning as the reference counts them (0 if won, inf if lost): TextWorld's
        policy with its moves rerouted, then the one-step backup when ``lookahead``.
        Q(s, a) = gamma ** distance(successor)."""
        if not self.params.lookahead:
            return self._status[state][2]
        if state not in self._backed:
            self._expand(state)
        return self._backed[state]

    def policy_commands(self, state: int) -> list[str]:
        """TextWorld's own winning policy from ``state``, as commands (before rerouting: it can be longer than
        ``distance(state)``)."""
        policy = self._progress_of(state).winning_policy
        return [] if policy is None else self._inform7.gen_commands_from_actions(policy)

    def task(self, state):
        return self.objective or "Explore the house and find out what to do."

    def describe(self, state):
        """The last command and its feedback, then the room (``look``) and the inventory, as the game prints them."""
        if state in self._descriptions:
            return self._descriptions[state]
        feedback, snapshot = self._snapshot(state)
        won, lost, _ = self._status[state]
        if won or lost:  # the story has ended: "look" would only get the RESTART/QUIT prompt
            look = inventory = ""
            feedback = feedback.split("Would you like to RESTART")[0].strip()
        else:
            z = self._zmachine
            look = _clean(z.step("look")[0])
            z.set_state(snapshot)
            inventory = _clean(z.step("inventory")[0])
            z.set_state(snapshot)
        parts = []
        if state != 0:
            parts.append(f"> {self._command[state]}")
            if _squash(feedback) != _squash(look):  # a move already prints the new room
                parts.append(feedback)
        parts += [look, inventory]
        text = "\n\n".join(p for p in parts if p)
        self._descriptions[state] = text
        return text

    # --- text layer (Jericho) ------------------------------------------------------------------------------

    def _snapshot(self, state: int):
        """(cleaned feedback of the last command, interpreter snapshot) with the interpreter left at ``state``."""
        if self._zmachine is None:
            import jericho

            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # "not fully supported": Jericho's score tracking, unused here
                self._zmachine = jericho.FrotzEnv(str(self.game_dir / "game.z8"), 0)
                self._zmachine.reset()
            self._snapshots[0] = ("", self._zmachine.get_state())
        chain, s = [], state
        while s not in self._snapshots:
            chain.append(s)
            s = self._parent[s]
        feedback, snapshot = self._snapshots[s]
        self._snapshots.move_to_end(s)
        z = self._zmachine
        z.set_state(snapshot)
        for s in reversed(chain):
            feedback, snapshot = _clean(z.step(self._command[s])[0]), z.get_state()
            self._snapshots[s] = (feedback, snapshot)
        while len(self._snapshots) > _SNAPSHOT_CACHE:
            oldest = next(iter(self._snapshots))
            if oldest == 0:
                self._snapshots.move_to_end(0)  # the start is never evicted
                oldest = next(iter(self._snapshots))
            del self._snapshots[oldest]
        return feedback, snapshot

    def close(self) -> None:
        if self._zmachine is not None:
            self._zmachine.close()
            self._zmachine = None

    def __del__(self):
        with contextlib.suppress(Exception):  # at interpreter exit Jericho may already be gone
            self.close()


class _StateTable(dict):
    """A per-state table whose missing keys get a message saying why a state id can be unknown."""

    def __missing__(self, state):
        raise KeyError(
            f"TextWorld state {state} is unknown to this env instance: states get ids as they are reached "
            f"from reset() with step(); use state_of(history) to replay a history in a fresh env"
        )


def _child_id(parent: int, command: str) -> int:
    """A state's id: 0 for the start, else a 63-bit hash of (parent id, command), i.e. of the whole history.

    Ids depend on the history only, never on the order in which states were discovered, so a state has the
    same id (and ``state_key``) in every cell, run and process, whatever was explored before.
    """
    digest = hashlib.blake2b(f"{parent}\x00{command}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1 or 1


class _ReferenceQ:
    """``q[state]`` = gamma ** d over ``actions(state)``; rows are computed on first use and kept."""

    def __init__(self, env: TextWorldBase, gamma: float):
        self.env, self.gamma = env, gamma

    def __getitem__(self, state) -> np.ndarray:
        return np.power(self.gamma, self.env._expand(int(state))[1])  # gamma ** inf = 0


def _names(fact) -> tuple[str, ...]:
    return tuple(v.name for v in fact.arguments)


def _route_length(free: set[tuple[str, str]], origin: str, target: str) -> int:
    """Fewest moves from room to room through connections passable both ways (breadth-first)."""
    frontier, seen, steps = [origin], {origin}, 0
    while frontier:
        if target in frontier:
            return steps
        frontier = [b for a in frontier for (x, b) in free if x == a and (b, a) in free and b not in seen]
        seen.update(frontier)
        steps += 1
    raise ValueError(f"no route from {origin} to {target} in TextWorld's own plan")


def _clean(text: str) -> str:
    """Drop the prompt and the status line the interpreter appends ("\\n>   -= Room =-0/3"), squeeze blank lines."""
    cut = text.rfind("\n>")
    if cut >= 0:
        text = text[:cut]
    return re.sub(r"\n{3,}", "\n\n", text).strip()


def _squash(text: str) -> str:
    return " ".join(text.split())


class TextWorldEnv(TextWorldBase):
    """A game from TextWorld's generic generator: random rooms, containers, keys and a quest of
    ``quest_length`` commands. goal = brief names only the quest's last action."""

    name = "textworld"
    version = "1"
    kind = "custom"
    Params = TextWorldParams

    def generation_options(self):
        p = self.params
        return {
            "seed": p.seed,
            "n_rooms": p.n_rooms,
            "n_objects": p.n_objects,
            "quest_length": p.quest_length,
            "goal": p.goal,
        }

    def build_game(self, options):
        from textworld.generator import make_game

        p = self.params
        options.nb_rooms = p.n_rooms
        options.nb_objects = p.n_objects
        options.chaining.min_length = options.chaining.max_length = options.chaining.max_depth = p.quest_length
        options.chaining.min_breadth = options.chaining.max_breadth = 1
        options.grammar.only_last_action = p.goal == "brief"
        return make_game(options)


class TextWorldSimpleEnv(TextWorldBase):
    """TextWorld's ``tw-simple`` challenge: a fixed six-room house; the seed hides the bedroom key and picks
    the food to put on the stove. Eating that food loses the game. Always built with sparse rewards: QVal pays
    only for winning, and TextWorld's dense/balanced variants add sub-quests that change what "won" means."""

    name = "textworld-simple"
    version = "1"
    kind = "simple"
    Params = TextWorldSimpleParams

    def generation_options(self):
        p = self.params
        return {"seed": p.seed, "goal": p.goal, "test": p.test}

    def build_game(self, options):
        import textworld.challenges

        make = textworld.challenges.CHALLENGES["tw-simple"][1]
        settings = {"rewards": "sparse", "goal": self.params.goal, "test": self.params.test}
        return make(settings=settings, options=options)
