"""Reference Q for labelling candidates: exact (value iteration) or Monte-Carlo, as in QVal.

Monte-Carlo: from the state, force the candidate action, then follow the reference policy (greedy in exact Q*,
i.e. a scripted optimal policy, or an LLM actor) for N rollouts; the label is the mean or the max of the discounted returns.
QVal's headline label is the max (approximating best-of-N); with stochastic dynamics the mean converges to Q^π.
"""

from __future__ import annotations

import numpy as np


def rollout_return(
    env, state: int, action: int, q_star, gamma: float, max_steps: int, rng: np.random.Generator, actor=None
) -> float:
    total, discount = 0.0, 1.0
    for _ in range(max_steps):
        state, reward, done = env.step(state, action, rng)
        total += discount * reward
        if done:
            break
        discount *= gamma
        action = actor(env, state, rng) if actor is not None else int(np.argmax(q_star[state]))
    return total


def monte_carlo_q(
    env, state: int, q_star, gamma: float, rollouts: int, agg: str, max_steps: int, rng: np.random.Generator, actor=None
) -> np.ndarray:
    """MC estimate of Q(state, ·) under the reference policy: ``actor`` (e.g. an LLM actor), else greedy in Q*."""
    out = np.zeros(len(env.actions(state)))
    for a in range(len(out)):
        returns = [rollout_return(env, state, a, q_star, gamma, max_steps, rng, actor) for _ in range(rollouts)]
        out[a] = max(returns) if agg == "max" else float(np.mean(returns))
    return out
