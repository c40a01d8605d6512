"""Evaluation points: states visited by an ε-noisy optimal behaviour policy, every legal action a candidate."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Candidate:
    index: int
    action: str
    ref_q: float


@dataclass(frozen=True)
class EvalPoint:
    point_id: str  # stable sample id: episode and turn
    state: int
    observation: str
    task: str
    candidates: tuple[Candidate, ...]


def collect_points(env, q: np.ndarray, episodes: int, epsilon: float, max_points_per_episode: int,
                   max_steps: int, seed: int, label=None) -> list[EvalPoint]:
    """Deterministic given the seed: the same cell always scores the same points.

    ``label(state) -> Q values`` labels the candidates; by default the exact Q* row.
    """
    rng = np.random.default_rng(seed)
    label = label or (lambda s: q[s])
    points = []
    for ep in range(episodes):
        state, visited = env.reset(rng), []
        for t in range(max_steps):
            visited.append((t, state))
            greedy = int(np.argmax(q[state]))
            action = int(rng.integers(len(env.actions(state)))) if rng.random() < epsilon else greedy
            state, _, done = env.step(state, action, rng)
            if done:
                break
        chosen = rng.choice(len(visited), size=min(max_points_per_episode, len(visited)), replace=False)
        for i in sorted(chosen):
            t, s = visited[i]
            values = label(s)
            cands = tuple(Candidate(a, name, float(values[a])) for a, name in enumerate(env.actions(s)))
            points.append(EvalPoint(f"e{ep:04d}t{t:04d}", s, env.describe(s), env.task(s), cands))
    return points
