"""MiniGrid / BabyAI: exact Q* by search, checked by hand, against an independent search and by greedy rollouts."""

import copy
from collections import deque

import numpy as np
import pytest
from pydantic import ValidationError

pytest.importorskip("minigrid")

from qval.qalign.envs.minigrid import ALL_ACTIONS, LEVELS, MiniGridEnv

GAMMA = 0.9
FWD = ALL_ACTIONS.index("move forward")


def make(level, **kw):
    return MiniGridEnv(MiniGridEnv.Params(level=level, **kw))


@pytest.fixture(scope="module")
def empty():
    return make("MiniGrid-Empty-5x5-v0", n_layouts=1)


@pytest.fixture(scope="module")
def doorkey():
    return make("MiniGrid-DoorKey-5x5-v0")


def test_empty_start_by_hand(empty):
    # Start (1, 1) facing east, goal (3, 3). Shortest: forward, forward, right, forward, forward = 5 actions.
    q = empty.reference_q(GAMMA)
    s = empty.starts[0]
    assert empty.keys[s][2:] == ((1, 1), 0, None)
    row = dict(zip(empty.actions(s), q[s]))
    assert row["move forward"] == pytest.approx(GAMMA**4)  # 5 actions
    assert row["turn right"] == pytest.approx(GAMMA**5)  # right, then f f left f f
    assert row["turn left"] == pytest.approx(GAMMA**6)  # left (north), right, then 5 more
    for noop in ("pick up", "drop", "toggle"):  # nothing to act on: a wasted step
        assert row[noop] == pytest.approx(GAMMA**5)


def test_empty_closed_form_everywhere(empty):
    """Independent BFS on (x, y, dir) with hand-written dynamics: Q = gamma ** (steps - 1) for every state."""
    q = empty.reference_q(GAMMA)
    goal, free = (3, 3), {(x, y) for x in range(1, 4) for y in range(1, 4)}
    vec = ((1, 0), (0, 1), (-1, 0), (0, -1))

    def move(x, y, d, a):
        if a == 0:
            return x, y, (d - 1) % 4
        if a == 1:
            return x, y, (d + 1) % 4
        if a == 2 and (x + vec[d][0], y + vec[d][1]) in free:
            return x + vec[d][0], y + vec[d][1], d
        return x, y, d

    states = [(x, y, d) for (x, y) in free - {goal} for d in range(4)]
    dist, changed = {}, True  # fewest actions to the goal, by Bellman-Ford relaxation (tiny)
    while changed:
        changed = False
        for s in states:
            best = min(1 if move(*s, a)[:2] == goal else 1 + dist.get(move(*s, a), 10**6) for a in range(6))
            if best < dist.get(s, 10**6):
                dist[s], changed = best, True
    seen = 0
    for sid, (_, _, pos, d, _) in enumerate(empty.keys):
        if pos == goal:
            continue
        seen += 1
        for a in range(6):
            nxt = move(*pos, d, a)
            steps = 1 if nxt[:2] == goal else 1 + dist[nxt]
            assert q[sid, a] == pytest.approx(GAMMA ** (steps - 1)), (pos, d, ALL_ACTIONS[a])
    assert seen == len(states)  # every non-goal (cell, dir) is reachable from the start


def greedy_success(env, q, state, limit=500):
    for _ in range(limit):
        state, reward, done = env.step(state, int(np.argmax(q[state])), None)
        if done:
            return reward == 1.0
    return False


@pytest.mark.parametrize(
    "level",
    [
        "MiniGrid-Empty-5x5-v0",
        "MiniGrid-DoorKey-5x5-v0",
        "MiniGrid-LavaGapS5-v0",
        "BabyAI-GoToObj-v0",
        "BabyAI-GoToRedBallGrey-v0",
    ],
)
def test_greedy_reaches_goal_from_every_start(level):
    env = make(level)
    q = env.reference_q(GAMMA)
    assert len(env.starts) == 4
    for s in env.starts:
        assert q[s].max() > 0 and greedy_success(env, q, s), (level, s)
    # and from every state that can still succeed
    for s in range(env.n_states):
        if q[s].max() > 0:
            assert greedy_success(env, q, s)


def test_doorkey_needs_the_key(doorkey):
    q = doorkey.reference_q(GAMMA)
    v = q.max(axis=1)
    toggle, pickup = ALL_ACTIONS.index("toggle"), ALL_ACTIONS.index("pick up")
    facing_locked = []
    for sid, (_layout, gid, (x, y), d, carrying) in enumerate(doorkey.keys):
        dx, dy = ((1, 0), (0, 1), (-1, 0), (0, -1))[d]
        ahead = doorkey.grids[gid][(y + dy) * doorkey.width + x + dx]
        if ahead != 0 and ahead[0] == 4 and ahead[2] == 2:  # a locked door ahead
            facing_locked.append(sid)
            if carrying is None:  # forward and toggle are wasted steps: Q = gamma * V < V
                assert q[sid, FWD] == pytest.approx(GAMMA * v[sid]) and q[sid, FWD] < v[sid]
                assert q[sid, toggle] < v[sid]
            else:  # with the key, toggling is the (unique) optimal action
                assert np.argmax(q[sid]) == toggle and q[sid, FWD] < q[sid, toggle]
    assert facing_locked
    # the greedy path from every start picks up the key before it reaches the goal
    for s in doorkey.starts:
        state, picked = s, False
        for _ in range(100):
            a = int(np.argmax(q[state]))
            picked |= a == pickup and doorkey.keys[doorkey.step(state, a, None)[0]][4] == ("key", "yellow")
            state, r, done = doorkey.step(state, a, None)
            if done:
                break
        assert done and r == 1.0 and picked
    assert "locked yellow door" in doorkey.describe(facing_locked[0])


def test_babyai_missions_differ_by_layout():
    env = make("BabyAI-GoToObj-v0")
    assert len(set(env.missions)) > 1
    assert len({env.task(s) for s in env.starts}) > 1
    assert env.missions[0] in env.task(env.starts[0]).lower()
    # GoToRedBallGrey's mission is the same in every layout (only the room differs)
    assert set(make("BabyAI-GoToRedBallGrey-v0").missions) == {"go to the red ball"}


def _naive_table(level, seed):
    """Reference BFS exactly as specified: deep-copy the unwrapped env, step it (with observations), key by
    grid.encode() bytes, agent pos/dir and what is carried."""
    import gymnasium as gym

    env = gym.make(level)
    env.reset(seed=seed)

    def key(u):
        c = None if u.carrying is None else (u.carrying.type, u.carrying.color)
        return u.grid.encode().tobytes(), (int(u.agent_pos[0]), int(u.agent_pos[1])), int(u.agent_dir), c

    start = env.unwrapped
    table, queue, seen = {}, deque([start]), {key(start)}
    while queue:
        u = queue.popleft()
        row = []
        for a in range(6):
            c = copy.deepcopy(u)
            c.step_count = 0
            _, r, term, _, _ = c.step(a)
            row.append((key(c), float(term and r > 0), bool(term)))
            if not term and key(c) not in seen:
                seen.add(key(c))
                queue.append(c)
        table[key(u)] = row
    return key(start), table


@pytest.mark.parametrize(
    "level", ["MiniGrid-DoorKey-5x5-v0", "BabyAI-GoToObj-v0", "MiniGrid-LavaGapS5-v0", "BabyAI-GoToLocalS5N2-v0"]
)
def test_snapshot_bfs_matches_deepcopy_bfs(level):
    env = make(level, n_layouts=1, layout_seed=3, actions="all")

    def naive_key(sid):
        _, gid, pos, d, carrying = env.keys[sid]
        arr = np.zeros((env.width, env.height, 3), dtype="uint8")
        for i, code in enumerate(env.grids[gid]):
            y, x = divmod(i, env.width)
            arr[x, y] = (1, 0, 0) if code == 0 else code
        return arr.tobytes(), pos, d, carrying

    start, table = _naive_table(level, 3)
    assert naive_key(env.starts[0]) == start
    expanded = {}
    for sid in range(env.n_states):
        if not (env.done[sid].all() and (env.next[sid] == sid).all()):
            expanded[naive_key(sid)] = [
                (naive_key(int(env.next[sid, a])), env.reward[sid, a], env.done[sid, a]) for a in range(6)
            ]
    assert expanded == table


def test_grid_preserving_shortcut_is_exact(monkeypatch):
    for level, acts in [("MiniGrid-DoorKey-5x5-v0", "all"), ("BabyAI-GoToLocalS5N2-v0", "all")]:
        fast = make(level, actions=acts)
        monkeypatch.setattr(MiniGridEnv, "check_grid", True)
        slow = make(level, actions=acts)
        monkeypatch.setattr(MiniGridEnv, "check_grid", False)
        assert fast.keys == slow.keys and (fast.next == slow.next).all() and (fast.done == slow.done).all()


def test_max_states_guard():
    with pytest.raises(ValueError, match="max_states"):
        make("BabyAI-GoToRedBallGrey-v0", actions="all", max_states=300)


def test_navigation_only_action_set():
    env = make("BabyAI-GoToRedBallGrey-v0")
    assert env.actions(env.starts[0]) == ("turn left", "turn right", "move forward")
    assert env.reference_q(GAMMA).shape == (env.n_states, 3)


def test_check_env_and_points():
    from qval.qalign.points import collect_points
    from qval.testing import check_env

    check_env(MiniGridEnv)
    for level in ("MiniGrid-DoorKey-5x5-v0", "BabyAI-GoToObj-v0"):
        env = make(level)
        q = env.reference_q(0.95)
        points = collect_points(env, q, episodes=4, epsilon=0.3, max_points_per_episode=3, max_steps=50, seed=0)
        assert points and all(len(p.candidates) == len(env.actions(p.state)) for p in points)
        assert all(p.observation and p.task for p in points)
        again = collect_points(env, q, episodes=4, epsilon=0.3, max_points_per_episode=3, max_steps=50, seed=0)
        assert [p.point_id for p in again] == [p.point_id for p in points]


def test_heuristic():
    env = make("MiniGrid-Empty-5x5-v0", n_layouts=1)
    by_pos = {env.keys[s][2]: env.heuristic(s) for s in range(env.n_states)}
    assert by_pos[(1, 1)] == -4.0 and by_pos[(3, 2)] == -1.0
    dk = make("MiniGrid-DoorKey-5x5-v0")
    assert all(np.isfinite(dk.heuristic(s)) for s in range(dk.n_states))
    s = dk.starts[0]
    assert dk.heuristic(s) < max(dk.heuristic(t) for t in range(dk.n_states) if dk.keys[t][4] is not None)
    go = make("BabyAI-GoToObj-v0")
    assert all(go.heuristic(s) > -go.width - go.height for s in range(go.n_states))  # the target was found


def test_levels_param_is_closed():
    with pytest.raises(ValidationError):
        MiniGridEnv.Params(level="MiniGrid-Dynamic-Obstacles-5x5-v0")
    with pytest.raises(ValidationError):
        MiniGridEnv.Params(bogus=1)
    assert set(LEVELS) >= {"MiniGrid-Empty-5x5-v0", "MiniGrid-DoorKey-5x5-v0", "BabyAI-GoToRedBallGrey-v0"}
