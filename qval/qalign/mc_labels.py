"""Monte-Carlo labels for stored evaluation points, computed once and kept under ``RESULTS/labels/``.

QVal labels a candidate by restoring the state, forcing the action, then following the reference policy and
recording the discounted return Σ_t γ^t r_t (the forced action's reward undiscounted), aggregated over N rollouts by
max (its headline ``qv_mc_max``) or mean. On FrozenLake its reference policy is the exact planner with no ε (its
ε-noisy wrapper is "for collection, not GT") and N = 1; on TerminalBench N = 16. Here the reference policy is greedy
in the env's exact Q* (``reference.rollout_return``), so the only noise is the environment's own dynamics.

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


def label_spec(points_name: str, gamma: float, rollouts: int, max_steps: int, seed: int) -> dict:
    return {
        "format": LABELS_FORMAT,
        "points": points_name,  # the stored points file's stem (its key, and the limit where there is one)
        "gamma": gamma,
        "rollouts": rollouts,
        "max_steps": max_steps,
        "policy": "optimal",  # greedy in exact Q*, ε = 0 (QVal's GT rollouts: its scripted planner, no noise)
        "seed": seed,
    }


def labels_path(results: Path, spec: dict) -> Path:
    key = hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]
    return Path(results) / "labels" / f"{spec['points']}.mc-r{spec['rollouts']}-s{spec['seed']}-{key}.json"


def mc_returns(env, q, points: list[EvalPoint], spec: dict, results: Path) -> dict[str, list[list[float]]]:
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
    returns = {
        p.point_id: [
            [
                rollout_return(env, p.state, c.index, q, spec["gamma"], spec["max_steps"], rng)
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
