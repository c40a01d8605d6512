"""alfworld-like: ALFWorld's six household task types, ALFWorld's commands and PDDL semantics, exact Q* by search.

The reference Q comes from a backward breadth-first search over each layout's states; the tests check it against
an independent forward search that only uses ``step`` (the dynamics), then through the real CLI.
"""

from __future__ import annotations

from collections import deque
from importlib import metadata

import numpy as np
import pytest
from conftest import ROOT, run_qval, write_suite

import qval.results as R
from qval.qalign.envs.alfworld_like import AlfWorldLikeEnv, AlfWorldLikeParams
from qval.qalign.envs.household import COLD, HELD, HOT, LAMP_STANDS, TASK_TYPES

GAMMA = 0.95
APPLIANCE = {
    "pick_clean_then_place_in_recep": "sinkbasin",
    "pick_heat_then_place_in_recep": "microwave",
    "pick_cool_then_place_in_recep": "fridge",
}
GOAL_WORDS = {
    "pick_and_place_simple": "put some",
    "pick_clean_then_place_in_recep": "put a clean",
    "pick_heat_then_place_in_recep": "put a hot",
    "pick_cool_then_place_in_recep": "put a cool",
    "look_at_obj_in_light": "under the desklamp",
    "pick_two_obj_and_place": "put two",
}


def make(task_type: str, **params) -> AlfWorldLikeEnv:
    return AlfWorldLikeEnv(AlfWorldLikeParams(task_types=[task_type], **params))


def shortest_win(env: AlfWorldLikeEnv, start: int) -> int:
    """Fewest steps from ``start`` to a winning transition, by forward breadth-first search over ``step`` alone
    (every admissible action: build the env with max_actions=None)."""
    seen, frontier = {start: 0}, deque([start])
    while frontier:
        state = frontier.popleft()
        for a in range(len(env.actions(state))):
            nxt, reward, done = env.step(state, a, None)
            if reward == 1.0:
                return seen[state] + 1
            if not done and nxt not in seen:
                seen[nxt] = seen[state] + 1
                frontier.append(nxt)
    raise AssertionError("no winning transition is reachable")


@pytest.mark.parametrize("task_type", TASK_TYPES)
def test_each_task_type_generates_a_solvable_game(task_type):
    env = make(task_type, n_layouts=3)
    q = env.reference_q(GAMMA)
    for start, layout in zip(env.starts, env.layouts):
        assert layout.task_type == task_type
        assert GOAL_WORDS[task_type] in env.task(start)
        if task_type in APPLIANCE:
            assert APPLIANCE[task_type] in layout.kinds
        if task_type == "look_at_obj_in_light":
            assert layout.kinds[layout.lamp] in LAMP_STANDS
        assert env.describe(start).startswith("You are in the middle of a room. Looking quickly around you")
        # Greedy in Q wins in exactly the planner's distance, reward 1 on the last step only.
        state, steps, rewards = start, 0, []
        while True:
            state, reward, done = env.step(state, int(np.argmax(q[state])), None)
            steps, rewards = steps + 1, rewards + [reward]
            if done:
                break
        assert rewards == [0.0] * (steps - 1) + [1.0]
        assert steps == env.distance(start) <= 40  # QVal's ALFWorld step limit
        if task_type == "look_at_obj_in_light":  # won holding the target, at the lamp, switched on
            assert "a desklamp 1 (on)" in env.describe(state) and "You are carrying: a " in env.describe(state)


@pytest.mark.parametrize("task_type", TASK_TYPES)
def test_optimal_q_equals_gamma_to_the_bfs_plan_length(task_type):
    """max Q(s0, ·) = gamma ** (L - 1) * 1 with L the shortest plan found by an independent forward search; and at
    states off the optimal path (a seeded random walk), the same holds."""
    env = make(task_type, n_layouts=2, max_actions=None)
    q = env.reference_q(GAMMA)
    rng = np.random.default_rng(0)
    for start in env.starts:
        state = start
        for _ in range(6):
            length = shortest_win(env, state)
            assert np.isclose(q[state].max(), GAMMA ** (length - 1) * 1.0)
            state, _, done = env.step(state, int(rng.integers(len(env.actions(state)))), None)
            if done:
                break
        # Each action's Q is gamma ** (distance of its successor): 1 for a winning one.
        row = q[start]
        for a in range(len(row)):
            nxt, reward, _ = env.step(start, a, None)
            expected = 1.0 if reward else GAMMA ** shortest_win(env, nxt)
            assert np.isclose(row[a], expected)


def test_max_actions_keeps_every_optimal_action_and_is_stable():
    full = make("pick_two_obj_and_place", max_actions=None)
    capped = make("pick_two_obj_and_place", max_actions=3)
    qf, qc = full.reference_q(GAMMA), capped.reference_q(GAMMA)
    rng = np.random.default_rng(1)
    state = capped.starts[0]
    assert len(full.actions(state)) > 3
    for _ in range(8):
        names = capped.actions(state)
        assert len(names) <= 3 and names == capped.actions(state) and list(names) == sorted(names)
        assert qc[state].max() == qf[state].max()  # the same state id in both: layouts and numbering are seeded
        state, _, done = capped.step(state, int(rng.integers(len(names))), None)
        if done:
            break


def test_alfworld_pddl_semantics():
    """Cooling undoes heating (alfred.pddl's CoolObject), a closed receptacle offers neither take nor move, and
    the appliance verb is offered only at its appliance with the object in hand."""
    env = make("pick_heat_then_place_in_recep", max_actions=None)
    layout = env.layouts[0]
    target = layout.types.index(layout.target)
    fridge = layout.kinds.index("fridge")
    microwave = layout.kinds.index("microwave")
    _, pos, opened, props, lamp = layout.start
    held = pos[:target] + (HELD,) + pos[target + 1 :]
    name = layout.objects[target]
    heated = dict(layout.transitions((microwave, held, opened, props, lamp)))[f"heat {name} with microwave 1"]
    assert heated[3][target] == HOT
    at_fridge = dict(layout.transitions((fridge, held, opened, heated[3], lamp)))
    assert f"move {name} to fridge 1" not in at_fridge  # closed
    cooled = at_fridge[f"cool {name} with fridge 1"]
    assert cooled[3][target] == COLD  # cool and no longer hot
    opened_fridge = at_fridge["open fridge 1"]
    assert f"move {name} to fridge 1" in dict(layout.transitions(opened_fridge))
    nowhere_near = dict(layout.transitions((fridge, held, opened, props, lamp)))
    assert not any(c.startswith("heat ") for c in nowhere_near)
    empty_handed = dict(layout.transitions((microwave, pos, opened, props, lamp)))
    assert not any(c.startswith("heat ") for c in empty_handed)


def test_descriptions_show_what_is_seen_and_carried():
    env = make("pick_clean_then_place_in_recep", max_actions=None)
    q = env.reference_q(GAMMA)
    state, texts = env.starts[0], []
    while True:
        texts.append(env.describe(state))
        state, _, done = env.step(state, int(np.argmax(q[state])), None)
        if done:
            break
    final = env.describe(state)
    assert any("You are carrying: a " in t for t in texts)
    assert "(clean)" in final and "You are not carrying anything." in final


def test_params_are_strict_and_the_state_guard_says_what_to_change():
    with pytest.raises(ValueError):
        AlfWorldLikeParams(task_type="pick_and_place_simple")
    with pytest.raises(ValueError):
        AlfWorldLikeParams(task_types=["cook"])
    with pytest.raises(Exception, match="lower n_layouts, n_receptacles or n_distractors"):
        make("pick_two_obj_and_place", max_states=100)


def test_check_env():
    from qval.testing import check_env

    check_env(AlfWorldLikeEnv)


# --- through the real CLI ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cli_env(tmp_path_factory) -> dict[str, str]:
    """The environment for ``run_qval``. alfworld-like is declared in pyproject.toml; a qval installed before that
    line was added (``pip install -e .`` re-reads it) lacks the entry point, so it is exposed the way an install
    would: a dist-info on PYTHONPATH declaring it (as tests/path_plugins.py does for plugin packages)."""
    if any(ep.name == "alfworld-like" for ep in metadata.entry_points(group="qval.envs")):
        return {}
    site = tmp_path_factory.mktemp("site")
    info = site / "qval_alfworld_like-0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: qval-alfworld-like\nVersion: 0\n")
    (info / "entry_points.txt").write_text(
        "[qval.envs]\nalfworld-like = qval.qalign.envs.alfworld_like:AlfWorldLikeEnv\n"
    )
    import os

    return {"PYTHONPATH": os.pathsep.join(p for p in (str(site), str(ROOT), os.environ.get("PYTHONPATH", "")) if p)}


def test_plugins_check_cli(cli_env):
    proc = run_qval("plugins", "--check", "alfworld-like", env=cli_env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "7 checks passed" in proc.stdout


def test_model_free_suite_oracle_has_per_state_rho_one(tmp_path, cli_env):
    suite = write_suite(
        tmp_path / "s.yaml",
        """\
        name: alfworld-like-mf
        seeds: [0]
        models: [smollm2-135m-instruct]
        qalign:
          envs: [{name: alfworld-like, params: {n_layouts: 6}}]
          methods: [oracle-q, random, heuristic]
          points: {episodes: 6, epsilon: 0.3, max_points_per_episode: 3, max_steps: 40}
        """,
    )
    results = tmp_path / "results"
    proc = run_qval("run", suite, "--results", results, env=cli_env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    frame = R.metrics(results, suite="alfworld-like-mf")
    rho = frame[frame.metric == "per_state_spearman"].set_index("method")
    assert set(rho.index) == {"oracle-q", "random", "heuristic"}
    assert rho.loc["oracle-q", "value"] == 1.0 and rho.loc["oracle-q", "n"] >= 10
    assert (rho["status"] == "done").all() and (rho["n_failed"] == 0).all()
    assert rho.loc["random", "value"] < 1.0
