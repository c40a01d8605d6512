"""Evaluation points: states visited by an ε-noisy optimal behaviour policy, with labelled candidate actions.

Following QVal: trajectories from the behaviour policy, the first/last turns discarded, up to a fixed number of
points per trajectory chosen at random (seeded), and candidate actions per state: every legal action where there
are few, else the behaviour's own action plus a seeded sample of the others. Each candidate carries the outcome of
taking it (the next observation), which methods like SDPO, Δbelief and embeddings read.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

MAX_HISTORY = 8  # earlier (observation, action) turns kept per point: enough for GVL-style context


@dataclass(frozen=True)
class Candidate:
    index: int  # the action's index in env.actions(state)
    action: str
    ref_q: float
    outcome: str = ""  # what the agent sees after taking the action (one sampled transition)
    done: bool = False
    next_state: int = -1  # the env's id of that state
    reward: float = 0.0


@dataclass(frozen=True)
class EvalPoint:
    point_id: str  # stable sample id: episode and turn
    state: int
    observation: str
    task: str
    candidates: tuple[Candidate, ...]
    history: tuple[tuple[str, str], ...] = ()  # earlier (observation, action) turns, oldest first
    behaviour_action: int = -1  # index of the action the behaviour policy took here

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> EvalPoint:
        return cls(
            **{
                **data,
                "candidates": tuple(Candidate(**c) for c in data["candidates"]),
                "history": tuple(tuple(h) for h in data["history"]),
            }
        )


def outcome_text(env, next_state: int, reward: float, done: bool) -> str:
    if done:
        return "The episode ended: the task was completed." if reward > 0 else "The episode ended without success."
    return env.describe(next_state)


def collect_points(
    env,
    q,
    episodes: int,
    epsilon: float,
    max_points_per_episode: int,
    max_steps: int,
    seed: int,
    label=None,
    discard_early: int = 0,
    discard_late: int = 0,
    max_candidates: int | None = None,
    behaviour: str = "optimal",
    actor=None,
    limit: int | None = None,
) -> list[EvalPoint]:
    # ``behaviour`` is the suite's setting (stored with the points); ``actor`` is what carries it out.
    """Deterministic given the seed: the same cell always scores the same points.

    ``label(state) -> Q values`` labels the candidates; by default the reference Q row. The behaviour policy is
    ε-noisy around ``actor(env, state, rng) -> action`` (default: greedy in Q*, i.e. scripted optimal).

    ``limit`` stops after that many points, which are the first ``limit`` of the full collection: every random
    stream, label and actor call up to a point happens in the same order either way, and stopping only leaves out
    what comes after.
    """
    rng = np.random.default_rng(seed)
    outcome_rng = np.random.default_rng([seed, 2])  # its own stream: outcomes do not shift the trajectories
    label = label or (lambda s: q[s])
    points = []
    for ep in range(episodes):
        state, visited = env.reset(rng), []
        for t in range(max_steps):
            n_actions = len(env.actions(state))
            if rng.random() < epsilon:
                action = int(rng.integers(n_actions))
            else:
                action = actor(env, state, rng) if actor is not None else int(np.argmax(q[state]))
            visited.append((t, state, action))
            state, _, done = env.step(state, action, rng)
            if done:
                break
        usable = visited[discard_early : len(visited) - discard_late]
        if not usable:
            continue
        chosen = rng.choice(len(usable), size=min(max_points_per_episode, len(usable)), replace=False)
        for i in sorted(chosen):
            t, s, taken = usable[i]
            values = np.asarray(label(s), float)
            names = env.actions(s)
            indices = _candidate_indices(len(names), taken, max_candidates, rng)
            cands = []
            for a in indices:
                nxt, reward, done = env.step(s, a, outcome_rng)
                cands.append(
                    Candidate(
                        a, names[a], float(values[a]), outcome_text(env, nxt, reward, done), done, nxt, float(reward)
                    )
                )
            start = max(0, discard_early + i - MAX_HISTORY)
            history = tuple((env.describe(hs), env.actions(hs)[ha]) for _, hs, ha in visited[start : discard_early + i])
            points.append(
                EvalPoint(f"e{ep:04d}t{t:04d}", s, env.describe(s), env.task(s), tuple(cands), history, taken)
            )
            if limit is not None and len(points) >= limit:
                return points
    return points


def _candidate_indices(n: int, taken: int, max_candidates: int | None, rng) -> list[int]:
    if max_candidates is None or n <= max_candidates:
        return list(range(n))
    others = [a for a in range(n) if a != taken]
    picked = rng.choice(len(others), size=max_candidates - 1, replace=False)
    return sorted([taken, *(others[j] for j in picked)])
