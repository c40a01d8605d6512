"""Run one Q-alignment cell: collect the points, score every candidate, write per-point rows."""
from __future__ import annotations

import math

import numpy as np

from ..plan import Cell
from ..registry import REGISTRY
from .points import collect_points
from .reference import monte_carlo_q


def run_qalign_cell(cell: Cell, model, writer, emit) -> tuple[int, int]:
    env_cls = REGISTRY.get("envs", cell.dataset)
    scorer_cls = REGISTRY.get("scorers", cell.method)
    env = env_cls(env_cls.Params.model_validate(cell.dataset_params))
    gamma = cell.settings["gamma"]
    q = env.reference_q(gamma)
    ref = cell.settings.get("reference", {"method": "exact"})
    label = None
    if ref["method"] == "mc":
        label_rng = np.random.default_rng([cell.seed, 1])  # its own stream: labels do not shift the points

        def label(state):
            return monte_carlo_q(env, state, q, gamma, ref["rollouts"], ref["agg"], ref["max_steps"], label_rng)
    points = collect_points(env, q, seed=cell.seed, label=label, **cell.settings["points"])
    scorer = scorer_cls(scorer_cls.Params.model_validate(cell.method_params), model, cell.seed, cell.temperature)
    done = writer.done_sample_ids()
    todo = [p for p in points if p.point_id not in done]
    emit("cell_start", cell=cell.cell_id, total=len(points), done=len(points) - len(todo))
    failed = 0
    for point in todo:
        error, scores = None, [None] * len(point.candidates)
        try:
            error, scores = _checked(scorer.score(point), len(point.candidates))
        except Exception as exc:  # a crashing plugin fails this point only; the run goes on
            error = f"{type(exc).__name__}: {exc}"
        failed += error is not None
        writer.add_sample([
            {"sample_id": point.point_id, "state_key": str(point.state), "candidate": c.index, "action": c.action,
             "score": scores[i], "ref_q": c.ref_q, "error": error}
            for i, c in enumerate(point.candidates)
        ])
        emit("sample", cell=cell.cell_id)
    return len(points), failed


def _checked(scores, n: int) -> tuple[str | None, list]:
    """A scorer must return n finite numbers; anything else is a recorded failure, never a silent zero."""
    try:
        values = [float(s) for s in scores]
    except (TypeError, ValueError) as exc:
        return f"scorer returned non-numeric scores: {exc}", [None] * n
    if len(values) != n:
        return f"scorer returned {len(values)} scores for {n} candidates", [None] * n
    if not all(math.isfinite(v) for v in values):
        return "scorer returned a non-finite score", [None] * n
    return None, values
