"""TextWorld envs: Q from the (shortest) walkthrough after each command, checked by greedy play, by hand and
across processes. Games are generated once per session into a temporary cache (a few seconds each)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from qval.qalign.envs.textworld import TextWorldEnv, TextWorldSimpleEnv

GAMMA = 0.9
CLASSES = [TextWorldEnv, TextWorldSimpleEnv]
IDS = [c.name for c in CLASSES]


@pytest.fixture(scope="session")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("qval-cache")


@pytest.fixture(autouse=True)
def _qval_cache(cache, monkeypatch):
    monkeypatch.setenv("QVAL_CACHE", str(cache))  # check_env builds with the default cache dir


@pytest.fixture(scope="session")
def envs(cache):
    """One default env of each kind, shared (their caches of rows are part of what is tested)."""
    return {cls.name: cls(cls.Params(), cache_dir=cache) for cls in CLASSES}


def _walk_greedy(env, q, limit):
    state, steps = env.reset(np.random.default_rng(0)), 0
    while steps < limit:
        state, reward, done = env.step(state, int(np.argmax(q[state])), np.random.default_rng(0))
        steps += 1
        if done:
            return reward, steps
    return 0.0, steps


@pytest.mark.parametrize("cls", CLASSES, ids=IDS)
def test_greedy_in_q_wins_within_the_walkthrough(cls, envs):
    env = envs[cls.name]
    walkthrough = env.policy_commands(0)
    assert walkthrough and env.distance(0) == len(walkthrough)  # the default games' walkthroughs are shortest
    reward, steps = _walk_greedy(env, env.reference_q(GAMMA), len(walkthrough))
    assert reward == 1.0 and steps == len(walkthrough)


@pytest.mark.parametrize("seed", [1, 2, 3])
@pytest.mark.parametrize("cls", CLASSES, ids=IDS)
def test_greedy_wins_on_other_games(cls, seed, cache):
    env = cls(cls.Params(seed=seed, max_actions=4), cache_dir=cache)
    length = env.distance(0)
    assert length <= len(env.policy_commands(0))
    assert _walk_greedy(env, env.reference_q(GAMMA), len(env.policy_commands(0))) == (1.0, length)


@pytest.mark.parametrize("cls", CLASSES, ids=IDS)
def test_q_of_the_first_walkthrough_command(cls, envs):
    env = envs[cls.name]
    walkthrough = env.policy_commands(0)
    row = env.reference_q(GAMMA)[0]
    first = env.actions(0).index(walkthrough[0])
    assert row[first] == pytest.approx(GAMMA ** (len(walkthrough) - 1))
    assert row[first] == pytest.approx(row.max())


@pytest.mark.parametrize("cls", CLASSES, ids=IDS)
def test_useless_actions_have_lower_q(cls, cache):
    env = cls(cls.Params(keep_info_commands=True, max_actions=None), cache_dir=cache)
    row, actions, d = env.reference_q(GAMMA)[0], env.actions(0), len(env.policy_commands(0))
    assert "look" in actions and "inventory" in actions
    # "look" changes nothing: it wastes exactly one step.
    look = row[actions.index("look")]
    assert look == pytest.approx(GAMMA**d) and look < row.max() == pytest.approx(GAMMA ** (d - 1))
    assert (row < row.max()).any()


def test_info_commands_are_dropped_by_default(envs):
    env = envs["textworld-simple"]
    for state in (0, env.step(0, int(np.argmax(env.reference_q(GAMMA)[0])), None)[0]):
        actions = env.actions(state)
        assert not {"look", "inventory"} & set(actions)
        assert not any(a.startswith("examine ") for a in actions)


def test_losing_move_is_terminal_with_zero_q(envs):
    """tw-simple is lost by eating the food that should go on the stove."""
    env = envs["textworld-simple"]
    walkthrough = env.policy_commands(0)
    state = env.state_of(walkthrough[:-1])  # holding the food, next to the stove
    food = walkthrough[-1].removeprefix("put ").removesuffix(" on stove")
    actions, row = env.actions(state), env.reference_q(GAMMA)[state]
    eat = actions.index(f"eat {food}")
    assert row[eat] == 0.0 and row.max() == 1.0
    nxt, reward, done = env.step(state, eat, None)
    assert (reward, done) == (0.0, True)
    assert "You lost" in env.describe(nxt)


@pytest.mark.parametrize("cls", CLASSES, ids=IDS)
def test_check_env(cls):
    from qval.testing import check_env

    check_env(cls)


@pytest.mark.parametrize("cls", CLASSES, ids=IDS)
def test_a_second_construction_reuses_the_cached_game(cls, cache):
    first = cls(cls.Params(seed=7), cache_dir=cache)  # generates (or finds) the game
    game = (first.game_dir / "game.z8").stat().st_mtime_ns
    env = cls(cls.Params(seed=7, max_actions=5), cache_dir=cache)  # max_actions does not change the game
    assert env.game_dir == first.game_dir and (env.game_dir / "game.z8").stat().st_mtime_ns == game  # not rebuilt
    assert len([p for p in (cache / "textworld").iterdir() if p.name.startswith(f"{cls.kind}-")]) >= 1
    assert not [p for p in (cache / "textworld").iterdir() if p.name.startswith(".")], "temp dirs left behind"
    assert sorted(p.name for p in env.game_dir.iterdir()) == ["game.json", "game.z8", "params.json"]


def test_two_processes_generate_the_same_game_once(tmp_path):
    code = (
        "from pathlib import Path; from qval.qalign.envs.textworld import TextWorldEnv; "
        f"print(TextWorldEnv(TextWorldEnv.Params(seed=11), cache_dir=Path({str(tmp_path)!r})).game_dir)"
    )
    procs = [subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=300)[0].strip() for p in procs]
    assert all(p.returncode == 0 for p in procs) and outs[0] == outs[1]
    assert [p.name for p in (tmp_path / "textworld").iterdir()] == [Path(outs[0]).name]


@pytest.mark.parametrize("cls", CLASSES, ids=IDS)
def test_collect_points(cls, envs):
    from qval.qalign.points import collect_points

    env = envs[cls.name]
    kwargs = {"episodes": 4, "epsilon": 0.4, "max_points_per_episode": 3, "max_steps": 20, "seed": 0}
    points = collect_points(env, env.reference_q(0.95), **kwargs)
    assert len(points) == 12
    for p in points:
        assert 1 <= len(p.candidates) <= 12
        assert all(0.0 <= c.ref_q <= 1.0 for c in p.candidates)
        assert p.observation and p.task == env.objective
        assert env.state_of(env.history(p.state)) == p.state
    assert not env._warned, "a successor was more than one step closer than TextWorld's policy said"
    fresh = cls(cls.Params(), cache_dir=env.cache_dir)  # same points from a fresh env: ids and text are stable
    again = collect_points(fresh, fresh.reference_q(0.95), **kwargs)
    assert [(p.point_id, p.state, p.observation, p.candidates) for p in again] == [
        (p.point_id, p.state, p.observation, p.candidates) for p in points
    ]


def test_max_actions_keeps_the_optimal_actions(cache):
    env = TextWorldSimpleEnv(TextWorldSimpleEnv.Params(max_actions=3), cache_dir=cache)
    full = TextWorldSimpleEnv(TextWorldSimpleEnv.Params(max_actions=None), cache_dir=cache)
    q, qf = env.reference_q(GAMMA), full.reference_q(GAMMA)
    state, rng = env.reset(None), np.random.default_rng(0)
    for _ in range(15):
        actions = env.actions(state)
        assert len(actions) <= 3 and list(actions) == sorted(actions)
        same = full.state_of(env.history(state))
        assert q[state].max() == pytest.approx(qf[same].max())  # the best action is never dropped
        assert set(actions) <= set(full.actions(same))
        state, _, done = env.step(state, int(rng.integers(len(actions))), rng)
        if done:
            break


def test_params_are_strict():
    from pydantic import ValidationError

    with pytest.raises(ValidationError):
        TextWorldEnv.Params(rooms=3)
    with pytest.raises(ValidationError):
        TextWorldEnv.Params(quest_breadth=2)  # not offered: TextWorld's plans for parallel sub-quests are too long
    with pytest.raises(ValidationError):
        TextWorldSimpleEnv.Params(n_rooms=3)  # the house is fixed


def _bfs_distance(env, state, limit):
    """Shortest number of state-changing commands to win, by breadth-first search over TextWorld's fact sets
    (independent of TextWorld's quest tracking); None past ``limit``."""
    game = env.game
    quests = [q for q in game.quests if q.win_events and not q.optional]

    def won(st):
        return all(any(e.is_triggering(st) for e in q.win_events) for q in quests)

    def lost(st):
        return any(e.is_triggering(st) for q in game.quests for e in q.fail_events)

    start = env._progress_of(state).state
    if won(start):
        return 0
    frontier, seen = [start], {frozenset(start.facts)}
    for depth in range(1, limit + 1):
        nxt = []
        for st in frontier:
            for action in st.all_applicable_actions(env._rules, env._constants):
                if not action.added and not action.removed:
                    continue
                child = st.copy()
                child.apply(action)
                key = frozenset(child.facts)
                if key in seen:
                    continue
                seen.add(key)
                if won(child):
                    return depth
                if not lost(child):
                    nxt.append(child)
        frontier = nxt
    return None


def test_policy_length_is_the_shortest_path(envs):
    """TextWorld's policy is only guaranteed to be a plan; check it is a shortest one on and off the walkthrough."""
    env = envs["textworld-simple"]
    rng, state, checked = np.random.default_rng(3), 0, 0
    for _ in range(6):  # a noisy walk; at each state check the state and two of its successors
        for s in (state, *rng.choice(env.successors(state), size=2, replace=False)):
            d = env.distance(int(s))
            if np.isfinite(d):
                assert _bfs_distance(env, int(s), int(d) + 1) == d
                checked += 1
        state, _, done = env.step(state, int(rng.integers(len(env.actions(state)))), rng)
        if done:
            break
    assert checked >= 6


def test_unknown_state_ids_fail_clearly(envs):
    env = envs["textworld"]
    for call in (env.actions, env.describe, env.history, lambda s: env.step(s, 0, None)):
        with pytest.raises(KeyError, match="unknown to this env instance"):
            call(12345)


def test_moves_are_rerouted_along_a_shortest_route(cache):
    """Custom seed 4 has a loop of rooms: after "go west" TextWorld plans to walk back east and round (5 commands)
    where going south leads straight on (3 commands)."""
    env = TextWorldEnv(TextWorldEnv.Params(seed=4), cache_dir=cache)
    state = env.state_of(["go west"])
    assert len(env.policy_commands(state)) == 5
    assert env.distance(state) == 3 == _bfs_distance(env, state, 5)
    row, actions = env.reference_q(GAMMA)[state], env.actions(state)
    assert actions[int(np.argmax(row))] == "go south" and row.max() == pytest.approx(GAMMA**2)


def test_lookahead_agrees_on_the_default_games(cache):
    """The optional one-step backup finds nothing to improve once moves are rerouted."""
    for cls in CLASSES:
        plain, backed = cls(cls.Params(), cache_dir=cache), cls(cls.Params(lookahead=True), cache_dir=cache)
        rng, state = np.random.default_rng(5), 0
        for _ in range(12):
            assert np.array_equal(plain.reference_q(GAMMA)[state], backed.reference_q(GAMMA)[state])
            state, _, done = plain.step(state, int(rng.integers(len(plain.actions(state)))), rng)
            if done:
                break
