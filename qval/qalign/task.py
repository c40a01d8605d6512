"""Run one Q-alignment cell: get the labelled points (stored once, shared by every method), score every candidate,
write per-candidate rows.

Points are a pure function of (env, env params, gamma, reference settings, point settings, seed), so they are
stored under ``RESULTS/points/<key>.json`` the first time and read back by every other cell that needs them — a new
scorer added later is scored on exactly the same points without re-collecting or re-labelling (Monte-Carlo labels
are the expensive part).
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import os
from pathlib import Path

import numpy as np

from ..cell import Cell
from ..models import transcript
from ..registry import REGISTRY
from ..timeouts import PluginTimeout, time_limit
from .actor import LLMActor
from .points import EvalPoint, collect_points
from .reference import monte_carlo_q
from .scorers.base import Failed, ScorerContext, build_scorer
from .signals import scorer_signal

POINTS_FORMAT = 1


def points_key(cell: Cell, env_cls) -> str:
    spec = {
        "format": POINTS_FORMAT,
        "env": cell.dataset,
        "env_version": env_cls.version,
        "env_params": cell.dataset_params,
        "gamma": cell.settings["gamma"],
        "reference": cell.settings.get("reference", {"method": "exact"}),
        "points": cell.settings["points"],
        "seed": cell.seed,
    }
    if _uses_llm_actor(cell):
        spec["actor_model"] = cell.model_identity  # the model's play shapes the points and labels
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:20]


def _uses_llm_actor(cell: Cell) -> bool:
    return (
        cell.settings["points"].get("behaviour") == "llm" or cell.settings.get("reference", {}).get("policy") == "llm"
    )


def points_paths(cell: Cell, env_cls, results: Path) -> list[Path]:
    """Where a cell's points may be stored: the full set, then (for a limited cell) its own prefix."""
    key, limit = points_key(cell, env_cls), cell.limit
    full = Path(results) / "points" / f"{key}.json"
    return list(dict.fromkeys([full, full if limit is None else full.with_name(f"{key}.limit{limit}.json")]))


def stored_points(cell: Cell, env_cls, results: Path) -> list[EvalPoint] | None:
    """The cell's stored points (the full set sliced to its limit, else its own prefix), or None: nothing readable
    is stored. Readers that must not collect (``qval label-noise``) use this alone."""
    for stored in points_paths(cell, env_cls, results):
        if stored.exists():
            try:
                return [EvalPoint.from_dict(p) for p in json.loads(stored.read_text())["points"]][: cell.limit]
            except (ValueError, KeyError, TypeError):
                pass  # a damaged file is recomputed by load_or_collect_points and replaced
    return None


def load_or_collect_points(cell: Cell, env, env_cls, results: Path, model=None) -> list[EvalPoint]:
    """The cell's points: the full stored set (sliced to a limit), else a limited cell's own stored prefix, else
    collected. A limited cell collects only its first N points (with an LLM actor or Monte-Carlo labels that is what
    a first look saves) and stores them apart (``<key>.limit<N>.json``), never as the full set a full cell reads."""
    stored = stored_points(cell, env_cls, results)
    if stored is not None:
        return stored
    path = points_paths(cell, env_cls, results)[-1]  # what this cell collects
    limit = cell.limit
    q = env.reference_q(cell.settings["gamma"])  # only when collecting: stored points carry their labels
    ref = cell.settings.get("reference", {"method": "exact"})
    llm_actor = LLMActor(model) if _uses_llm_actor(cell) else None
    label = _mc_labeller(cell, env, q, llm_actor) if ref["method"] == "mc" else None
    behaviour_actor = llm_actor if cell.settings["points"].get("behaviour") == "llm" else None
    points = collect_points(
        env, q, seed=cell.seed, label=label, actor=behaviour_actor, limit=limit, **cell.settings["points"]
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(
        json.dumps(
            {
                "env": cell.dataset,
                "env_params": cell.dataset_params,
                "settings": cell.settings,  # with the limit, if any: such a file holds only the first N points
                "seed": cell.seed,
                "points": [p.to_dict() for p in points],
            }
        )
    )
    os.replace(tmp, path)  # atomic: concurrent workers write identical content
    return points


def _mc_labeller(cell: Cell, env, q, llm_actor):
    """Monte-Carlo labels from the scripted optimal policy or the LLM actor, on their own random stream (labels
    must not shift the points)."""
    ref, gamma = cell.settings["reference"], cell.settings["gamma"]
    label_rng = np.random.default_rng([cell.seed, 1])
    rollout_actor = llm_actor if ref.get("policy") == "llm" else None

    def label(state):
        return monte_carlo_q(
            env, state, q, gamma, ref["rollouts"], ref["agg"], ref["max_steps"], label_rng, rollout_actor
        )

    return label


def prepare_scorer(scorer, cell: Cell, points: list[EvalPoint], writer, timeout_per_point_s: float | None) -> None:
    """Run the scorer's ``prepare`` on these points (a copy) within its time limit: ``timeout_per_point_s`` times its
    ``prepare_work()``, since a search such as eureka's is many points' work. A failure fails the cell (FAILED
    manifest): nothing can be scored without it. prepare()'s requests (codegen writes its programs here) are the
    cell's, not a point's: stored once per cell, and also when prepare fails, since they then explain the failure."""
    with transcript.recording() as prepared:
        try:
            limit = timeout_per_point_s and timeout_per_point_s * max(1, scorer.prepare_work())
            with time_limit(limit, f"scorer {cell.method!r} (prepare)"):
                scorer.prepare(copy.deepcopy(points))
        finally:
            writer.write_prepare_requests(prepared)
    if scorer.artifacts:
        (writer.dir / "artifacts.json").write_text(json.dumps(scorer.artifacts, indent=1))


def run_qalign_cell(cell: Cell, model, writer, emit, timeout_per_point_s: float | None = None) -> tuple[int, int, dict]:
    """Returns (points, failed points, manifest extras: the model tokens this cell forwarded vs a naive loop)."""
    env_cls = REGISTRY.get("envs", cell.dataset)
    scorer_cls = REGISTRY.get("scorers", cell.method)
    env = env_cls(env_cls.Params.model_validate(cell.dataset_params))
    # --limit scores the first N points of the full set: a first look measures a prefix of what the full cell
    # measures (collected only that far when the full set is not stored yet).
    points = load_or_collect_points(cell, env, env_cls, writer.results, model)
    context = ScorerContext(
        env=env, model=model, seed=cell.seed, temperature=cell.temperature, gamma=cell.settings["gamma"]
    )
    scorer = build_scorer(scorer_cls, scorer_cls.Params.model_validate(cell.method_params), context)
    counter = model.requests().counter if model is not None else None
    before = counter.as_dict() if counter else None
    prepare_scorer(scorer, cell, points, writer, timeout_per_point_s)
    done = writer.done_sample_ids()
    todo = [p for p in points if p.point_id not in done]
    step = max(1, scorer_cls.batch_points)
    # limit_s: the runner's watchdog kills the worker if a batch makes no progress this long (plus a grace).
    emit(
        "cell_start",
        cell=cell.cell_id,
        total=len(points),
        done=len(points) - len(todo),
        limit_s=timeout_per_point_s * step if timeout_per_point_s else None,
    )
    failed = errored = 0  # failed: any candidate without a score; errored: the plugin raised or timed out
    for start in range(0, len(todo), step):
        batch = todo[start : start + step]
        # The batch's requests (prompts, replies, parses), recorded even when the scorer raises or times out: then
        # they are what explains the failure.
        with transcript.recording() as requests:
            checked = score_points(scorer, batch, cell, timeout_per_point_s)
        # Several points scored in one call: each of their rows names the whole batch (see store/tables.py).
        together = [p.point_id for p in batch] if len(batch) > 1 else None
        for k, (point, outcome) in enumerate(zip(batch, checked)):
            if isinstance(outcome, BaseException):
                errors = [f"{type(outcome).__name__}: {safe_text(outcome)}"] * len(point.candidates)
                scores = [None] * len(point.candidates)
                errored += 1
            else:
                scores, errors = outcome
                if scorer_signal(scorer_cls) == "v":
                    scores, errors = _one_value(scores, errors)
            failed += any(e is not None for e in errors)
            writer.add_sample(
                [
                    {
                        "sample_id": point.point_id,
                        "state_key": str(point.state),
                        "candidate": c.index,
                        "action": c.action,
                        "score": scores[i],
                        "ref_q": c.ref_q,
                        "error": errors[i],
                        "is_behaviour": c.index == point.behaviour_action,
                        # One copy per point, on its first row. A batch of several points is scored in one call, so
                        # its requests cannot be told apart per point: they go with the batch's first point.
                        "requests": (requests or None) if i == 0 and k == 0 else None,
                        "batch": together if i == 0 else None,
                    }
                    for i, c in enumerate(point.candidates)
                ]
            )
            emit("sample", cell=cell.cell_id)
    extras: dict = {"n_errored": errored}
    if counter is not None and before is not None:
        extras["forward_tokens"] = {k: v - before[k] for k, v in counter.as_dict().items()}
    return len(points), failed, extras


def score_points(scorer, batch: list[EvalPoint], cell: Cell, timeout_per_point_s: float | None) -> list:
    """Per point of the batch: (scores, errors), or the exception that failed it."""
    try:
        with time_limit(timeout_per_point_s and timeout_per_point_s * len(batch), f"scorer {cell.method!r}"):
            # The scorer gets copies: the stored action, reference Q and behaviour flag come from the points
            # as collected, never from objects a plugin held (and might have changed).
            outcomes = list(scorer.score_batch(copy.deepcopy(batch)))
            if len(outcomes) != len(batch):
                raise ValueError(f"score_batch returned {len(outcomes)} results for {len(batch)} points")
            # Converted inside the limit: a score object's own __float__ is plugin code too.
            return [
                o if isinstance(o, BaseException) else _checked(o, len(p.candidates)) for p, o in zip(batch, outcomes)
            ]
    except (Exception, PluginTimeout) as exc:  # noqa: BLE001 - a crashing or hung plugin fails these points only
        return [exc] * len(batch)


def _safe_repr(value, limit: int = 60) -> str:
    """repr of a plugin's object without trusting it: its __repr__ may raise or never end (the time limit holds)."""
    try:
        return repr(value)[:limit]
    except Exception:  # noqa: BLE001
        return f"<{type(value).__name__} whose repr raised>"


def safe_text(exc: BaseException, limit: int = 500) -> str:
    try:
        return str(exc)[:limit]
    except Exception:  # noqa: BLE001
        return "<an exception whose message raised>"


def _one_value(scores: list, errors: list) -> tuple[list, list]:
    """A V scorer's rows of one point carry the state's one value: rows that disagree fail the point, rather than
    one of them being taken for the state's value."""
    if len({s for s in scores if s is not None}) > 1 or (None in scores and any(s is not None for s in scores)):
        reason = "a V scorer must give every candidate of a point the same value (one value per state)"
        return [None] * len(scores), [e or reason for e in errors]
    return scores, errors


def _checked(scores, n: int) -> tuple[list, list]:
    """A scorer must return n finite numbers or Failed(reason)s; anything else fails the point, never a silent 0."""
    try:
        scores = list(scores)
    except TypeError:
        return [None] * n, [f"scorer returned {type(scores).__name__}, not a list of scores"] * n
    if len(scores) != n:
        return [None] * n, [f"scorer returned {len(scores)} scores for {n} candidates"] * n
    values: list[float | None] = []
    errors: list[str | None] = []
    for s in scores:
        if isinstance(s, Failed):
            values.append(None)
            errors.append(s.reason)
            continue
        try:
            v = float(s)
        except Exception as exc:  # noqa: BLE001 - TypeError, ValueError, OverflowError (10**400), or a plugin's own
            values.append(None)
            errors.append(f"scorer returned a score that is not a float ({type(exc).__name__}): {_safe_repr(s)}")
            continue
        ok = math.isfinite(v)
        values.append(v if ok else None)
        errors.append(None if ok else "scorer returned a non-finite score")
    return values, errors
