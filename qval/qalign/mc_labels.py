"""Monte-Carlo labels for stored evaluation points, computed once and kept under ``RESULTS/labels/``.

QVal labels a candidate by restoring the state, forcing the action, then following the reference policy and
recording the discounted return Σ_t γ^t r_t (the forced action's reward undiscounted), aggregated over N rollouts by
max (its headline ``qv_mc_max``) or mean. On FrozenLake its reference policy is the exact planner with no ε (its
ε-noisy wrapper is "for collection, not GT") and N = 1; on TerminalBench N = 16. Here the reference policy is optimal
in the env's exact Q*, so the only noise is the environment's own dynamics. Where several actions are optimal (slippery
FrozenLake has such states) the action followed changes the returns' spread though not their mean: on FrozenLake
ties go as in QVal's planner (fewest expected steps to the end, then right > down > left > up), elsewhere to the
first optimal action.

The raw returns are stored, not an aggregate: max and mean of one label set come from the same rollouts (as QVal's
rollout store shares them between aggregations), and a later `qval label-noise` reads them instead of rolling out
again. A file is keyed by everything that changes the returns: the points, gamma, rollouts, rollout length and seed.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np

from .points import EvalPoint
from .reference import rollout_return

LABELS_FORMAT = 1


QVAL_TIE_ORDER = ("right", "down", "left", "up")  # QVal's FrozenLake planner, after fewest expected steps
TIE_TOL = 1e-9  # QVal's tolerance for "equally optimal"


def reference_policy(env, q) -> tuple[str, list[int] | None]:
    """(name, action per state) of the rollouts' policy; None: greedy in q, first optimal action on ties."""
    if env.name != "frozenlake":
        return "optimal (first optimal action on ties)", None
    n = env.n_states
    table = [[list(env.transitions(s, a)) for a in range(len(env.action_names))] for s in range(n)]
    optimal = [np.flatnonzero(q[s] >= q[s].max() - TIE_TOL) for s in range(n)]

    def expected_steps(s: int, a: int, steps: np.ndarray) -> float:
        return 1.0 + sum(prob * steps[s2] for prob, s2, _, done in table[s][a] if not done)

    steps = np.zeros(n)
    for _ in range(10_000):  # expected steps to the end when always taking the quickest optimal action
        new = np.array([min(expected_steps(s, a, steps) for a in optimal[s]) for s in range(n)])
        done, steps = np.max(np.abs(new - steps)) < TIE_TOL, new
        if done:
            break
    rank = {name: i for i, name in enumerate(QVAL_TIE_ORDER)}
    policy = [
        int(min(optimal[s], key=lambda a: (expected_steps(s, a, steps), rank[env.action_names[a]]))) for s in range(n)
    ]
    return "optimal (ties: fewest expected steps, then right > down > left > up, as QVal's planner)", policy


def label_spec(
    points_name: str, gamma: float, rollouts: int, max_steps: int, seed: int, policy: str = "optimal"
) -> dict:
    return {
        "format": LABELS_FORMAT,
        "points": points_name,  # the stored points file's stem (its key, and the limit where there is one)
        "gamma": gamma,
        "rollouts": rollouts,
        "max_steps": max_steps,
        "policy": policy,  # optimal in exact Q*, ε = 0 (QVal's GT rollouts: its scripted planner, no noise)
        "seed": seed,
    }


def labels_path(results: Path, spec: dict) -> Path:
    key = hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]
    return Path(results) / "labels" / f"{spec['points']}.mc-r{spec['rollouts']}-s{spec['seed']}-{key}.json"


def mc_returns(
    env, q, points: list[EvalPoint], spec: dict, results: Path, policy: list[int] | None = None
) -> dict[str, list[list[float]]]:
    """Per point id, per candidate (in the point's order), the discounted return of each rollout: read from the
    store when it holds this spec for these points, else rolled out and stored."""
    path = labels_path(results, spec)
    expected = {p.point_id: [c.index for c in p.candidates] for p in points}
    if path.exists():
        try:
            data = json.loads(path.read_text())
            if data["spec"] == spec and data["candidates"] == expected:
                return data["returns"]
        except (ValueError, KeyError, TypeError):
            pass  # a damaged file is rolled out again and replaced
    # Its own stream per label set: the 1-rollout and the 16-rollout labels are independent draws.
    rng = np.random.default_rng([spec["seed"], 15, spec["rollouts"]])
    actor = None if policy is None else (lambda _env, state, _rng: policy[state])
    returns = {
        p.point_id: [
            [
                rollout_return(env, p.state, c.index, q, spec["gamma"], spec["max_steps"], rng, actor)
                for _ in range(spec["rollouts"])
            ]
            for c in p.candidates
        ]
        for p in points
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps({"spec": spec, "candidates": expected, "returns": returns}))
    os.replace(tmp, path)  # atomic: two concurrent commands write the same content
    return returns


def aggregate(returns: list[float], agg: str) -> float:
    """QVal's aggregation of one candidate's rollout returns: max (best-of-N) or mean."""
    return float(max(returns)) if agg == "max" else float(np.mean(returns))
