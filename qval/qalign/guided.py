"""Scorer-guided agents: does a scorer that agrees with Q* also act well? Run one ``qalign_guided`` cell.

From seeded start states the agent takes, at each step, the candidate action its scorer scores highest (ties broken
by a seeded draw), until the episode ends or the step limit is reached. The candidates are every legal action, or,
with ``best_of_n: N``, QVal's guided-action test (``GuidedActor`` in its test_time_scaling.py): N actions drawn at
each step (uniformly from the legal ones, with replacement, as QVal's N independent actor samples; duplicates are
scored once) among which the scorer picks.

Each step is scored exactly like an evaluation point (an ``EvalPoint`` of the current state: its candidates with
exact Q*, one sampled outcome each, the episode's earlier turns), through the same time limit and checks as
``task.py``. A candidate the scorer failed on counts as -inf; a step where every candidate failed takes a uniformly
drawn candidate, as QVal's actor falls back when all scores are NaN. Such steps are counted (``failed_steps``).

Random streams, per episode, each its own: the start state, the transitions actually taken, the candidates' shown
outcomes, and the agent's draws (ties, best-of-N). On a stochastic environment (slippery FrozenLake) the transition
taken is therefore drawn apart from the outcome the scorer was shown: a scorer cannot pick the action whose sampled
slide happened to go well. Regret there is V*(s0) minus one sampled return, whose expectation under the optimal
policy is 0 (up to the step limit's truncation): its mean over episodes estimates expected regret, with a CI.
"""

from __future__ import annotations

import numpy as np

from ..cell import Cell
from ..models import transcript
from ..registry import REGISTRY
from .points import MAX_HISTORY, Candidate, EvalPoint, outcome_text
from .scorers.base import ScorerContext, build_scorer
from .task import prepare_scorer, safe_text, score_points


def step_limit(env, guided: dict, fallback: int) -> int:
    """The section's ``guided.max_steps``, else the environment's own limit (gymnasium's ``max_episode_steps``,
    e.g. 100 on FrozenLake, 200 on Taxi), else ``points.max_steps``."""
    return int(guided.get("max_steps") or getattr(env, "max_episode_steps", None) or fallback)


def choose(scores: list[float | None], rng: np.random.Generator) -> int:
    """The index of the highest score, ties broken uniformly by ``rng``; a missing score counts as -inf, and with
    none at all the choice is uniform."""
    values = np.array([-np.inf if s is None else float(s) for s in scores])
    if not np.isfinite(values).any():
        return int(rng.integers(len(values)))
    best = np.flatnonzero(values == values.max())
    return int(best[0]) if len(best) == 1 else int(rng.choice(best))


def candidate_indices(n_actions: int, best_of_n: int | None, rng: np.random.Generator) -> list[int]:
    """Every legal action, or best-of-N: N uniform draws with replacement, each distinct action once."""
    if best_of_n is None:
        return list(range(n_actions))
    return sorted({int(a) for a in rng.integers(n_actions, size=best_of_n)})


def episode_streams(seed: int, episode: int) -> dict[str, np.random.Generator]:
    return {
        name: np.random.default_rng([seed, 7 + k, episode])
        for k, name in enumerate(("start", "moves", "outcomes", "agent"))
    }


def make_point(env, q, state: int, point_id: str, indices: list[int], history: list, rng) -> EvalPoint:
    names, values = env.actions(state), np.asarray(q[state], float)
    cands = []
    for a in indices:
        nxt, reward, done = env.step(state, a, rng)
        cands.append(
            Candidate(a, names[a], float(values[a]), outcome_text(env, nxt, reward, done), done, nxt, float(reward))
        )
    return EvalPoint(
        point_id, state, env.describe(state), env.task(state), tuple(cands), tuple(history[-MAX_HISTORY:]), -1
    )


def run_episode(env, q, gamma: float, seed: int, episode: int, max_steps: int, best_of_n: int | None, score):
    """One guided episode's rows. ``score(point) -> (scores, errors, requests)`` scores one step's point."""
    rng = episode_streams(seed, episode)
    state = env.reset(rng["start"])
    v_star = float(np.max(np.asarray(q[state], float)))
    rows: list[dict] = []
    history: list[tuple[str, str]] = []  # earlier (observation, action) turns
    ret, success, failed = 0.0, False, 0
    for t in range(max_steps):
        indices = candidate_indices(len(env.actions(state)), best_of_n, rng["agent"])
        point = make_point(env, q, state, f"e{episode:04d}t{t:04d}", indices, history, rng["outcomes"])
        scores, errors, requests = score(point)
        problems = [e for e in errors if e is not None]
        failed += bool(problems)
        pick = point.candidates[choose(scores, rng["agent"])]
        nxt, reward, done = env.step(state, pick.index, rng["moves"])
        ret += gamma**t * reward
        success = success or (done and reward > 0)  # the sparse success reward is paid on the winning transition
        rows.append(
            {
                "sample_id": f"e{episode:04d}",
                "step": t,
                "state_key": str(state),
                "candidates": [c.action for c in point.candidates],
                "scores": scores,
                "ref_q": [c.ref_q for c in point.candidates],
                "action": pick.action,
                "reward": float(reward),
                "done": bool(done),
                "error": "; ".join(dict.fromkeys(problems)) if problems else None,
                "requests": requests or None,
                "last": False,
            }
        )
        history.append((point.observation, pick.action))
        state = nxt
        if done:
            break
    rows[-1].update(last=True, v_star=v_star, episode_return=ret, success=success, steps=len(rows), failed_steps=failed)
    return rows


def run_guided_cell(cell: Cell, model, writer, emit, timeout_per_point_s: float | None = None) -> tuple[int, int, dict]:
    """Returns (episodes, episodes with a failed step, manifest extras)."""
    env_cls = REGISTRY.get("envs", cell.dataset)
    scorer_cls = REGISTRY.get("scorers", cell.method)
    env = env_cls(env_cls.Params.model_validate(cell.dataset_params))
    gamma, guided = cell.settings["gamma"], cell.settings["guided"]
    episodes = guided["episodes"] if cell.limit is None else min(guided["episodes"], cell.limit)
    max_steps = step_limit(env, guided, cell.settings["fallback_max_steps"])
    q = env.reference_q(gamma)
    seed = int(cell.seed or 0)  # planned cells always carry both; only imported ones may lack them
    context = ScorerContext(env=env, model=model, seed=seed, temperature=float(cell.temperature or 0.0), gamma=gamma)
    scorer = build_scorer(scorer_cls, scorer_cls.Params.model_validate(cell.method_params), context)
    # prepare() gets every episode's start point (codegen writes its programs from the first one); its requests are
    # the cell's, stored also when it fails.
    starts = []
    for ep in range(episodes):
        rng = episode_streams(seed, ep)
        s0 = env.reset(rng["start"])
        starts.append(make_point(env, q, s0, f"e{ep:04d}t0000", list(range(len(env.actions(s0)))), [], rng["outcomes"]))
    prepare_scorer(scorer, cell, starts, writer, timeout_per_point_s)
    done = writer.done_sample_ids()
    todo = [ep for ep in range(episodes) if f"e{ep:04d}" not in done]
    emit(
        "cell_start",
        cell=cell.cell_id,
        total=episodes,
        done=episodes - len(todo),
        limit_s=timeout_per_point_s * max_steps if timeout_per_point_s else None,
    )
    errored: set[str] = set()  # episodes where the scorer raised or timed out at some step

    def score(point: EvalPoint):
        with transcript.recording() as requests:
            outcome = score_points(scorer, [point], cell, timeout_per_point_s)[0]
        if isinstance(outcome, BaseException):
            errored.add(point.point_id[:5])  # the episode's sample id
            message = f"{type(outcome).__name__}: {safe_text(outcome)}"
            return [None] * len(point.candidates), [message] * len(point.candidates), requests
        return outcome[0], outcome[1], requests

    failed = 0
    for ep in todo:
        rows = run_episode(env, q, gamma, seed, ep, max_steps, guided.get("best_of_n"), score)
        failed += rows[-1]["failed_steps"] > 0
        writer.add_sample(rows)
        emit("sample", cell=cell.cell_id)
    return episodes, failed, {"n_errored": len(errored), "max_steps": max_steps}
