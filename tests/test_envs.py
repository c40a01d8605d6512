"""Environments: exact Q* against published values, Monte-Carlo reference Q converging to it."""

import numpy as np
import pytest

from qval.qalign.envs.toy_text import CliffWalkingEnv, FrozenLakeEnv, TaxiEnv
from qval.qalign.points import collect_points
from qval.qalign.reference import monte_carlo_q


def test_slippery_frozenlake_matches_published_q_star():
    env = FrozenLakeEnv(FrozenLakeEnv.Params(slippery=True))
    # Value reported in the offline-assets reference for slippery 4x4 (γ = 0.99).
    assert env.reference_q(0.99)[0] == pytest.approx([0.542, 0.528, 0.528, 0.522], abs=5e-4)


def test_deterministic_frozenlake_q_is_gamma_to_the_remaining_steps():
    env = FrozenLakeEnv(FrozenLakeEnv.Params())
    q = env.reference_q(0.95)
    # From the start, the shortest path to G takes 6 moves: the first optimal move is worth 0.95**5.
    assert q[0].max() == pytest.approx(0.95**5)
    # Next to a hole (state 4 → 5 is a hole), moving right into it is worth nothing.
    assert q[4, 2] == 0.0


def test_custom_and_random_maps():
    env = FrozenLakeEnv(FrozenLakeEnv.Params(map="custom", desc=["SFG", "HFF"]))
    assert env.reference_q(0.9)[0, 2] == pytest.approx(0.9)  # right, right reaches G: 1 discounted once
    a = FrozenLakeEnv(FrozenLakeEnv.Params(map="random", size=5, map_seed=3))
    b = FrozenLakeEnv(FrozenLakeEnv.Params(map="random", size=5, map_seed=3))
    assert a.desc == b.desc and len(a.desc) == 5
    with pytest.raises(ValueError):
        FrozenLakeEnv.Params(map="custom", desc=["SFX"])


def test_taxi_and_cliffwalking_have_sparse_success_q():
    taxi = TaxiEnv(TaxiEnv.Params())
    q = taxi.reference_q(0.95)
    assert q.max() == pytest.approx(1.0)  # a correct drop-off, the only rewarded transition
    assert q.min() >= 0.0
    cliff = CliffWalkingEnv(CliffWalkingEnv.Params())
    qc = cliff.reference_q(0.95)
    start = 36
    assert qc[start, 0] > qc[start, 1]  # stepping right from the start falls off the cliff (back to start)
    for env in (taxi, cliff):
        points = collect_points(env, env.reference_q(0.95), 2, 0.2, 2, 200, seed=0)
        assert points and all(len(p.candidates) == len(env.action_names) for p in points)


def test_monte_carlo_reference_converges_to_exact_q():
    env = FrozenLakeEnv(FrozenLakeEnv.Params(slippery=True))
    q = env.reference_q(0.95)
    rng = np.random.default_rng(0)
    estimate = monte_carlo_q(env, 0, q, 0.95, rollouts=4000, agg="mean", max_steps=200, rng=rng)
    assert estimate == pytest.approx(q[0], abs=0.02)
    # With deterministic dynamics a single rollout of the optimal policy is exact (QVal's FrozenLake setting).
    det = FrozenLakeEnv(FrozenLakeEnv.Params())
    qd = det.reference_q(0.95)
    one = monte_carlo_q(det, 0, qd, 0.95, rollouts=1, agg="max", max_steps=100, rng=rng)
    assert one == pytest.approx(qd[0])


def test_llm_actor_collects_points_and_plays_monte_carlo_rollouts(smollm, tmp_path):
    """SmolLM2 as the behaviour policy and as the MC reference policy: deterministic, and on a deterministic map
    its greedy rollouts can never beat exact Q* (so every MC label is <= Q*, with equality where it plays well)."""
    import numpy as np

    from qval.qalign.actor import LLMActor
    from qval.qalign.points import collect_points
    from qval.qalign.reference import monte_carlo_q

    env = FrozenLakeEnv(FrozenLakeEnv.Params())
    q = env.reference_q(0.95)
    actor = LLMActor(smollm)
    first = collect_points(env, q, 2, 0.2, 2, 12, seed=5, actor=actor)
    again = collect_points(env, q, 2, 0.2, 2, 12, seed=5, actor=actor)
    assert first == again and first
    state = first[0].state
    labels = monte_carlo_q(
        env, state, q, 0.95, rollouts=2, agg="max", max_steps=12, rng=np.random.default_rng(0), actor=actor
    )
    assert labels.shape == (4,) and np.all(labels <= q[state] + 1e-12)


def test_llm_actor_makes_every_cell_per_model(tmp_path):
    from qval.api import plan_suite

    suite = tmp_path / "s.yaml"
    suite.write_text(
        "name: actor\nmodels: [smollm2-135m-instruct]\nqalign:\n  envs: [frozenlake]\n"
        "  methods: [oracle-q, action-logprob]\n  points: {behaviour: llm}\n"
    )
    plan = plan_suite(suite)
    assert all(c.model == "smollm2-135m-instruct" for c in plan.cells.values())  # oracle too: points depend on it
    bad = tmp_path / "bad.yaml"
    bad.write_text(suite.read_text().replace("points: {behaviour: llm}", "reference: {policy: llm}"))
    with pytest.raises(Exception, match="needs Monte-Carlo labels"):
        plan_suite(bad)
