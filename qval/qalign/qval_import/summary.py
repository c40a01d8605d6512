"""A validated QVal summary as qval rows: one row per evaluation point, each pair QVal could not use kept with the
reason in ``error`` (so ingest leaves it out of the metrics exactly as QVal did).

The alignment rules are QVal's (src/qval/correlation.py and scripts/pipeline/evaluate.py at 3519062a): prediction
and ground truth are compared on their common prefix, and a pair with a null/NaN on either side is dropped.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .schema import (
    AggregateStats,
    PointEstimation,
    PointwiseMethod,
    RankingEstimation,
    RankingStats,
    SampleGroupMethod,
    SummaryError,
    validate_summary,
)

AGGREGATE_STATS = tuple(AggregateStats.model_fields)  # mean, std, min, max, median, num_samples, num_nan
RANKING_STATS = tuple(RankingStats.model_fields)  # mean, std, num_valid, num_skipped, num_points
SAMPLE_COLUMNS = ["sample_id", "state_key", "candidate", "action", "score", "ref_q", "error", "is_behaviour"]
STATE_COLUMNS = ["sample_id", "state_key", "n_candidates", "value", "error"]

# The row errors. Rows with an error are kept (they are points QVal had) but never reach a metric.
ERR_NOT_COVERED = "missing prediction: prediction list covers only the first {n} points"
ERR_NULL_PRED = "missing prediction: null in summary"
ERR_NULL_REF = "missing reference: null ground truth in summary"
ERR_ZERO = "excluded: zero value (exclude_zero_points)"
ERR_BEYOND = "excluded: beyond the dataset's {n} evaluation points"

# QVal backbone tokens (shared/configs/backends.yaml) as they appear in evaluation directory names.
_MODEL_TOKEN = re.compile(r"(?<![A-Za-z0-9])(q35-(?:9|27|35|122)|g4-(?:26|31))(?:-or)?(?![0-9])")


@dataclass(frozen=True)
class Stored:
    """One stored pointwise correlation of the summary."""

    correlation: float | None
    p_value: float | None
    num_points: int | None


@dataclass
class PointwiseEntry:
    estimator: str
    method: str  # the cell's QVal method name: ``direct_qv``, ``llm_codegen_qv_optimal#03``, ``…#mean``
    rows: pd.DataFrame  # SAMPLE_COLUMNS, one row per ground-truth point
    stored: dict[str, Stored] | None  # None for a derived variant (nothing stored to compare with)
    num_dropped_zero: int | None  # as stored
    group: str | None = None  # the multi-sample entry this program belongs to
    sample_index: int | None = None
    alias: str | None = None  # QVal's per-program prediction name (``codegen-s3_qv``) when listed in eval_methods
    n_predictions: int = 0


@dataclass
class SampleGroup:
    estimator: str
    method: str  # ``llm_codegen_qv_optimal``
    num_samples: int
    members: list[str]
    stored: dict[str, dict[str, float | int | None]]  # metric → AGGREGATE_STATS
    averaged: str | None  # the pointwise entry holding the per-point mean of the members
    averaged_is_derived: bool = False


@dataclass
class RankingEntry:
    estimator: str
    method: str
    states: pd.DataFrame  # STATE_COLUMNS, one row per ranking state
    stored: dict[str, float | int | None]  # RANKING_STATS


@dataclass
class ImportedSummary:
    source: Path
    sha256: str
    env_name: str
    signal_type: str | None
    num_evaluation_points: int | None
    min_points: int
    exclude_zero_points: bool
    collection_seed: int | None
    model_token: str | None  # the QVal backbone token found in the file or folder name; the JSON has no model
    timestamp: str | None
    pointwise: list[PointwiseEntry] = field(default_factory=list)
    groups: list[SampleGroup] = field(default_factory=list)
    ranking: list[RankingEntry] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


# --------------------------------------------------------------------------------------------------------------
# Reading


def read_summary(path, model_token: str | None = None) -> ImportedSummary:
    """Read and validate a QVal summary JSON. Raises ``SummaryError`` (a ValueError) naming the key path."""
    path = Path(path)
    source = str(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise SummaryError(source, "", f"cannot read file: {exc.strerror or exc}") from None
    try:
        data = json.loads(raw)
    except ValueError as exc:
        raise SummaryError(source, "", f"not valid JSON: {exc}") from None
    except RecursionError:  # json's parser recurses once per nesting level
        raise SummaryError(source, "", "not valid JSON: nested too deeply") from None
    return parse_summary(data, source=path, sha256=hashlib.sha256(raw).hexdigest(), model_token=model_token)


def parse_summary(
    data: Any, source: Path | str = "<summary>", sha256: str | None = None, model_token: str | None = None
) -> ImportedSummary:
    """Validate ``data`` (the parsed JSON) and turn it into rows. ``sha256`` is the file's; without it, a hash of
    the data (it enters every cell id, so it must be stable)."""
    doc = validate_summary(data, str(source))
    info = doc.experiment_info
    if sha256 is None:
        sha256 = hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()
    out = ImportedSummary(
        Path(str(source)),
        sha256,
        info.env_name,
        info.signal_type,
        info.num_evaluation_points,
        info.min_usable_correlation_points,
        info.exclude_zero_points,
        doc.dataset_metadata.seed,
        model_token or _model_token(Path(str(source))),
        info.timestamp,
    )
    if doc.gt_vs_gt_estimations:
        out.notes.append(f"gt_vs_gt_estimations ({', '.join(doc.gt_vs_gt_estimations)}) are not imported")
    for estimator, est in doc.estimations.items():
        if isinstance(est, RankingEstimation):
            _add_ranking(out, estimator, est)
        else:
            _add_point_estimation(out, estimator, est, info.eval_methods)
    # The names become cell ids: a pointwise entry named like an expanded program (``…#03``) would share one.
    names = [(e.estimator, e.method) for e in out.pointwise] + [(e.estimator, e.method) for e in out.ranking]
    dup = {n for n in names if names.count(n) > 1}
    if dup:
        raise SummaryError(str(source), "estimations", f"method names collide after expanding samples: {sorted(dup)}")
    return out


def _add_point_estimation(out: ImportedSummary, estimator: str, est: PointEstimation, eval_methods: list) -> None:
    gt = est.ground_truth_values
    if out.signal_type and est.assumption is not None and est.assumption != out.signal_type:
        out.notes.append(
            f"estimations.{estimator}: QVal transformed {out.signal_type} predictions to "
            f"{est.assumption}; stored predicted_values are untransformed, so recomputed numbers may "
            "differ"
        )
    for name, entry in est.methods.items():
        if isinstance(entry, SampleGroupMethod):
            _add_group(out, estimator, name, entry, gt, eval_methods)
        else:
            out.pointwise.append(_pointwise(out, estimator, name, entry, gt))


def _pointwise(
    out: ImportedSummary,
    estimator: str,
    name: str,
    entry: PointwiseMethod,
    gt: list[float | None],
    group: str | None = None,
    index: int | None = None,
    alias: str | None = None,
) -> PointwiseEntry:
    pred = entry.predicted_values
    stored = {metric: Stored(c.correlation, c.p_value, c.num_points) for metric, c in entry.correlations.items()}
    method = name if group is None else f"{group}#{index:02d}"
    return PointwiseEntry(
        estimator, method, pointwise_rows(gt, pred, out), stored, entry.num_dropped_zero, group, index, alias, len(pred)
    )


def _add_group(
    out: ImportedSummary,
    estimator: str,
    name: str,
    entry: SampleGroupMethod,
    gt: list[float | None],
    eval_methods: list,
) -> None:
    stored: dict[str, dict[str, float | int | None]] = {
        metric: stats.model_dump() for metric, stats in entry.aggregate_correlations.items()
    }
    members = []
    for i, sample in enumerate(entry.per_sample):
        alias = next((m for m in eval_methods if re.fullmatch(rf".*-s{i}(_[a-z]+)?", str(m))), None)
        e = _pointwise(out, estimator, name, sample, gt, group=name, index=i, alias=alias)
        out.pointwise.append(e)
        members.append(e)
    group = SampleGroup(estimator, name, entry.num_samples, [m.method for m in members], stored, None)
    # The per-point mean of the programs: reuse the summary's averaged entry when it holds exactly that. Only
    # entries read so far count (file order), which keeps the cell set, and so the cell ids, as they always were.
    mean = _nanmean_rows(members)
    for other in out.pointwise:
        if other.estimator == estimator and other.group is None and _same_values(other.rows["score"], mean):
            group.averaged = other.method
            break
    else:
        derived = members[0].rows.copy()
        derived["score"] = mean
        n_pred = max(m.n_predictions for m in members)
        derived["error"] = [
            _row_error(i, sc, g, out, n_pred) for i, (sc, g) in enumerate(zip(derived["score"], derived["ref_q"]))
        ]
        out.pointwise.append(PointwiseEntry(estimator, f"{name}#mean", derived, None, None, name, None, None, n_pred))
        group.averaged, group.averaged_is_derived = f"{name}#mean", True
    out.groups.append(group)


def _nanmean_rows(members: list[PointwiseEntry]) -> np.ndarray:
    scores = np.vstack([m.rows["score"].to_numpy(float) for m in members])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-null point: mean is NaN (stays missing)
        return np.nanmean(scores, axis=0)


def _same_values(a: pd.Series, b: np.ndarray) -> bool:
    values = a.to_numpy(float)
    return values.shape == b.shape and bool(np.all((np.isnan(values) & np.isnan(b)) | (np.abs(values - b) <= 1e-12)))


def _add_ranking(out: ImportedSummary, estimator: str, est: RankingEstimation) -> None:
    counts = est.candidate_counts
    for name, entry in est.methods.items():
        values = entry.per_point_correlations
        width = _width(len(counts))
        states = pd.DataFrame(
            {
                "sample_id": [f"{i:0{width}d}" for i in range(len(values))],
                "state_key": [_state_key(out.env_name, i, width) for i in range(len(values))],
                "n_candidates": counts[: len(values)],
                "value": pd.array(values, dtype="Float64").astype(float),
                # A skipped state is QVal's outcome, not a failure (tied ground truth is the usual cause; the summary does
                # not say which): value NULL, error NULL, so n_failed stays a count of real failures.
                "error": [None] * len(values),
            }
        )
        out.ranking.append(RankingEntry(estimator, name, states, entry.correlations.ranking_spearman.model_dump()))


# --------------------------------------------------------------------------------------------------------------
# Rows


def _width(n: int) -> int:
    return max(4, len(str(max(n - 1, 0))))


def _state_key(env: str, i: int, width: int) -> str:
    # Point i of the summary's dataset; pointwise and ranking use the same index (QVal's "first N points").
    return f"{env}#{i:0{width}d}"


def _row_error(i: int, score, ref, s: ImportedSummary, n_pred: int) -> str | None:
    if s.num_evaluation_points is not None and i >= s.num_evaluation_points:
        return ERR_BEYOND.format(n=s.num_evaluation_points)
    if i >= n_pred:
        return ERR_NOT_COVERED.format(n=n_pred)

    def isnan(x) -> bool:
        return x is None or (isinstance(x, float) and math.isnan(x))

    if s.exclude_zero_points and ((not isnan(score) and score == 0) or (not isnan(ref) and ref == 0)):
        return ERR_ZERO
    if isnan(score):
        return ERR_NULL_PRED
    if isnan(ref):
        return ERR_NULL_REF
    return None


def pointwise_rows(gt: list[float | None], pred: list[float | None], s: ImportedSummary) -> pd.DataFrame:
    """One row per ground-truth point (prefix alignment: ``pred[i]`` pairs with ``gt[i]``).

    Predictions beyond the ground truth are dropped (QVal compares the common prefix only)."""
    width = _width(len(gt))
    scores = [pred[i] if i < len(pred) else None for i in range(len(gt))]
    return pd.DataFrame(
        {
            "sample_id": [f"{i:0{width}d}" for i in range(len(gt))],
            "state_key": [_state_key(s.env_name, i, width) for i in range(len(gt))],
            "candidate": np.zeros(len(gt), dtype=np.int32),
            "action": [""] * len(gt),
            "score": np.array([np.nan if v is None else v for v in scores], dtype=float),
            "ref_q": np.array([np.nan if v is None else v for v in gt], dtype=float),
            "error": [_row_error(i, scores[i], gt[i], s, len(pred)) for i in range(len(gt))],
            # QVal's pointwise rows are the actor's own action at each point: the rows qval's pooled metrics use.
            "is_behaviour": np.ones(len(gt), dtype=bool),
        }
    )


def _model_token(path: Path) -> str | None:
    for part in (path.name, path.parent.name):
        m = _MODEL_TOKEN.search(part)
        if m:
            return m.group(1)
    return None
