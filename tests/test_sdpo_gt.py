"""sdpo-gt is QVal's oracle ablation: per candidate, the optimal policy's continuation from the state the candidate
leads to (not the best action at the current state, which is sdpo-best-action)."""

import numpy as np

from qval.qalign.envs.toy_text import FrozenLakeEnv
from qval.qalign.points import collect_points
from qval.qalign.scorers.base import Scorer, ScorerContext
from qval.qalign.scorers.sdpo import SDPOBestActionScorer, SDPOOracleScorer


def _scorer(cls, env):
    scorer = cls.__new__(cls)  # hint() needs no model (no request layer): only the env, gamma and seed
    Scorer.__init__(scorer, cls.Params(), ScorerContext(env=env, gamma=0.95, seed=0))
    return scorer


def test_expert_continuation_from_each_candidates_result():
    env = FrozenLakeEnv(FrozenLakeEnv.Params(map="4x4"))
    q = env.reference_q(0.95)
    points = collect_points(env, q, episodes=6, epsilon=0.3, max_points_per_episode=3, max_steps=50, seed=0)
    scorer = _scorer(SDPOOracleScorer, env)
    checked = 0
    for point in points:
        hints = [scorer.hint(point, c) for c in point.candidates]
        for c, hint in zip(point.candidates, hints):
            assert "after the candidate move has already been executed" in hint
            if c.done:
                continue
            # The expert's first move is the argmax of Q* at the candidate's resulting state.
            expert = env.actions(c.next_state)[int(np.argmax(q[c.next_state]))]
            assert f"Best next expert move after candidate result: {expert}" in hint
            if q[c.next_state].max() > 0:
                # Deterministic lake: the optimal rollout reaches the goal in k moves, and Q*(s') = 0.95^(k-1).
                k = round(np.log(q[c.next_state].max()) / np.log(0.95)) + 1
                assert f"Expert moves from candidate result to success: {k}" in hint
                checked += 1
        if len({c.next_state for c in point.candidates}) > 1:
            assert len(set(hints)) > 1  # per candidate, not one line for the whole state
    assert checked > 5
    best = _scorer(SDPOBestActionScorer, env)
    point = points[0]
    top = max(point.candidates, key=lambda c: c.ref_q).action
    assert {best.hint(point, c) for c in point.candidates} == {f"An expert would now play: {top}\n"}
