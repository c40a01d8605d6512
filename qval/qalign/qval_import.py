"""Import a bethgelab/qval evaluation summary (``summary_*.json``) as qval Q-alignment cells.

Published QVal results then sit in qval's DuckDB tables next to new runs, and qval's own metrics reproduce the
summary's stored correlations.

What a summary holds (see shared/data/qval_reference/SCHEMA.md) and how it maps:

* point estimations (one per ground-truth estimator, e.g. ``qv_mc_max``): one pointwise cell per method. Each
  evaluation point is one ``qalign_samples`` sample with a single candidate (the actor's own action): ``score`` is
  the prediction, ``ref_q`` the ground truth. A pair QVal could not use keeps its row with an ``error`` (missing
  prediction, missing reference, excluded zero), so ingest leaves it out of the metrics exactly as QVal did.
* the multi-sample code entry (``llm_codegen_qv_optimal``): one cell per program (``…#03``) plus the per-point mean
  of the programs, which is either the summary's own averaged entry (``codegen-mean_qv``) or, if the summary has
  none, a derived ``…#mean`` variant (no stored numbers to compare).
* ranking estimations (``ranking_gt_*``): only per-state Spearman ρ survive in a summary (no per-candidate scores or
  ground truth), so they are per-state values, never pooled rows. They need their own table (see
  ``STATE_TRACK``).

Rules QVal applied (src/qval/correlation.py and scripts/pipeline/evaluate.py at 3519062a): GT and prediction lists
are compared on their common prefix; pairs with a null/NaN on either side are dropped; fewer than
``min_usable_correlation_points`` (50) usable pairs give null correlations; scipy ``pearsonr``/``spearmanr``/
``kendalltau`` (tau-b) give null on a constant input; sign agreement is the fraction of pairs with
``np.sign(pred) == np.sign(gt)`` with a two-sided ``binomtest(k, n, 0.5)``. Ranking: ``mean`` and ``std`` (ddof=1;
0.0 for one state) over the non-null per-state values.
"""
from __future__ import annotations

import hashlib
import json
import math
import re
import statistics
import warnings
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from qval.errors import UsageError
from qval.identity import IDENTITY_VERSION, content_hash
from qval.plan import QALIGN_ROW_FORMAT

IMPORT_MARKER = "qval-import"
TRACK = "qalign"
STATE_TRACK = "qalign_state"  # per-state values only (qalign_state_values): QVal keeps no per-candidate rows
MIN_USABLE_POINTS = 50
POINT_METRICS = ("pearson", "spearman", "kendall_tau", "sign_agreement")
AGGREGATE_STATS = ("mean", "std", "min", "max", "median", "num_samples", "num_nan")
RANKING_STATS = ("mean", "std", "num_valid", "num_skipped", "num_points")
SAMPLE_COLUMNS = ["sample_id", "state_key", "candidate", "action", "score", "ref_q", "error", "is_behaviour"]
STATE_COLUMNS = ["sample_id", "state_key", "n_candidates", "value", "error"]

# The row errors. Rows with an error are kept (they are points QVal had) but never reach a metric.
ERR_NOT_COVERED = "missing prediction: prediction list covers only the first {n} points"
ERR_NULL_PRED = "missing prediction: null in summary"
ERR_NULL_REF = "missing reference: null ground truth in summary"
ERR_ZERO = "excluded: zero value (exclude_zero_points)"
ERR_BEYOND = "excluded: beyond the dataset's {n} evaluation points"

# QVal's own family names for its method ids (docs: 7 families); anything else is family "qval-import".
_FAMILIES = [(r"^(direct|gvl)", "direct"), (r"(codegen|eureka)", "code"), (r"^(verifier|delta-belief)", "intrinsic"),
             (r"^ranking", "ranking"), (r"^sdpo", "self-distillation"), (r"^(vip|liv)", "pre-trained"),
             (r"^vlm", "embedding")]
# QVal backbone tokens (shared/configs/backends.yaml) as they appear in evaluation directory names.
_MODEL_TOKEN = re.compile(r"(?<![A-Za-z0-9])(q35-(?:9|27|35|122)|g4-(?:26|31))(?:-or)?(?![0-9])")


class SummaryError(UsageError, ValueError):
    """A malformed summary. The message names the file and the key path."""

    def __init__(self, source: str, key_path: str, reason: str):
        self.source, self.key_path, self.reason = source, key_path, reason
        super().__init__(f"{source}: {key_path or '<root>'}: {reason}")


# --------------------------------------------------------------------------------------------------------------
# Data model


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
# Reading and validation


class _Reader:
    def __init__(self, source: str):
        self.source = source

    def fail(self, path: str, reason: str):
        raise SummaryError(self.source, path, reason)

    def dict(self, obj, path: str) -> dict:
        if not isinstance(obj, dict):
            self.fail(path, f"expected an object, got {_kind(obj)}")
        return obj

    def key(self, obj: dict, key: str, path: str, kind=None, optional=False, default=None):
        sub = f"{path}.{key}" if path else key
        if key not in obj:
            if optional:
                return default
            self.fail(sub, "missing key")
        value = obj[key]
        if kind is dict:
            return self.dict(value, sub)
        if kind is list and not isinstance(value, list):
            self.fail(sub, f"expected a list, got {_kind(value)}")
        if kind is str and not isinstance(value, str):
            self.fail(sub, f"expected a string, got {_kind(value)}")
        if kind is int and (isinstance(value, bool) or not isinstance(value, int)):
            if optional and value is None:
                return default
            self.fail(sub, f"expected an integer, got {_kind(value)}")
        return value

    def number(self, value, path: str) -> float | None:
        """A number, or None for null/NaN (QVal writes NaN as null)."""
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            self.fail(path, f"expected a number or null, got {_kind(value)}")
        value = float(value)
        if math.isnan(value):
            return None
        if math.isinf(value):
            self.fail(path, "infinite value")
        return value

    def numbers(self, obj: dict, key: str, path: str) -> list[float | None]:
        values = self.key(obj, key, path, list)
        return [self.number(v, f"{path}.{key}[{i}]") for i, v in enumerate(values)]

    def count(self, value, path: str, optional=False) -> int | None:
        if value is None and optional:
            return None
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value != int(value) or value < 0:
            self.fail(path, f"expected a non-negative integer, got {value!r}")
        return int(value)


def _kind(value) -> str:
    return "null" if value is None else type(value).__name__


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
    return parse_summary(data, source=path, sha256=hashlib.sha256(raw).hexdigest(), model_token=model_token)


def parse_summary(data: Any, source: Path | str = "<summary>", sha256: str | None = None,
                  model_token: str | None = None) -> ImportedSummary:
    r = _Reader(str(source))
    r.dict(data, "")
    info = r.key(data, "experiment_info", "", dict)
    env_name = r.key(info, "env_name", "experiment_info", str)
    if not env_name:
        r.fail("experiment_info.env_name", "empty string")
    min_points = r.key(info, "min_usable_correlation_points", "experiment_info", int, optional=True,
                       default=MIN_USABLE_POINTS)
    n_eval = r.key(info, "num_evaluation_points", "experiment_info", int, optional=True)
    exclude_zero = info.get("exclude_zero_points", False)
    if not isinstance(exclude_zero, bool):
        r.fail("experiment_info.exclude_zero_points", f"expected true/false, got {_kind(exclude_zero)}")
    signal_type = info.get("signal_type")
    eval_methods = info.get("eval_methods") if isinstance(info.get("eval_methods"), list) else []
    metadata = data.get("dataset_metadata") if isinstance(data.get("dataset_metadata"), dict) else {}
    seed = metadata.get("seed") if isinstance(metadata.get("seed"), int) else None
    estimations = r.key(data, "estimations", "", dict)
    if not estimations:
        r.fail("estimations", "no ground-truth estimations")
    gt_vs_gt = data.get("gt_vs_gt_estimations") or {}
    r.dict(gt_vs_gt, "gt_vs_gt_estimations")
    if sha256 is None:
        sha256 = hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()
    token = model_token or _model_token(Path(str(source)))
    out = ImportedSummary(Path(str(source)), sha256, env_name, signal_type if isinstance(signal_type, str) else None,
                          n_eval, min_points, exclude_zero, seed, token,
                          info.get("timestamp") if isinstance(info.get("timestamp"), str) else None)
    if gt_vs_gt:
        out.notes.append(f"gt_vs_gt_estimations ({', '.join(gt_vs_gt)}) are not imported")
    for estimator, est in estimations.items():
        p = f"estimations.{estimator}"
        r.dict(est, p)
        granularity = r.key(est, "granularity", p, str)
        methods = r.key(est, "methods", p, dict)
        if granularity == "point":
            _read_point_estimation(r, out, estimator, est, methods, p, eval_methods)
        elif granularity == "ranking":
            _read_ranking_estimation(r, out, estimator, est, methods, p)
        elif granularity == "trajectory":
            r.fail(f"{p}.granularity", "'trajectory' (shaped-reward, per-trajectory sums) is not supported by import")
        else:
            r.fail(f"{p}.granularity", f"expected 'point' or 'ranking', got {granularity!r}")
    names = [(e.estimator, e.method) for e in out.pointwise] + [(e.estimator, e.method) for e in out.ranking]
    dup = {n for n in names if names.count(n) > 1}
    if dup:
        r.fail("estimations", f"method names collide after expanding samples: {sorted(dup)}")
    return out


def _read_point_estimation(r: _Reader, out: ImportedSummary, estimator, est, methods, p, eval_methods):
    gt = r.numbers(est, "ground_truth_values", p)
    assumption = est.get("assumption")
    if out.signal_type and isinstance(assumption, str) and assumption != out.signal_type:
        out.notes.append(f"{p}: QVal transformed {out.signal_type} predictions to {assumption}; stored "
                         "predicted_values are untransformed, so recomputed numbers may differ")
    for name, entry in methods.items():
        mp = f"{p}.methods.{name}"
        r.dict(entry, mp)
        if "predicted_values" in entry:
            out.pointwise.append(_read_pointwise(r, out, estimator, name, entry, gt, mp))
        elif "per_sample" in entry:
            _read_group(r, out, estimator, name, entry, gt, mp, eval_methods)
        else:
            r.fail(mp, "expected 'predicted_values' (pointwise entry) or 'per_sample' (multi-sample entry)")


def _read_stored(r: _Reader, entry: dict, mp: str) -> dict[str, Stored]:
    corr = r.key(entry, "correlations", mp, dict)
    stored = {}
    for metric, value in corr.items():
        cp = f"{mp}.correlations.{metric}"
        r.dict(value, cp)
        stored[metric] = Stored(r.number(r.key(value, "correlation", cp), f"{cp}.correlation"),
                                r.number(value.get("p_value"), f"{cp}.p_value"),
                                r.count(r.key(value, "num_points", cp), f"{cp}.num_points"))
    return stored


def _read_pointwise(r, out, estimator, name, entry, gt, mp, group=None, index=None, alias=None) -> PointwiseEntry:
    pred = r.numbers(entry, "predicted_values", mp)
    stored = _read_stored(r, entry, mp)
    dropped = r.count(entry.get("num_dropped_zero"), f"{mp}.num_dropped_zero", optional=True)
    method = name if group is None else f"{group}#{index:02d}"
    return PointwiseEntry(estimator, method, pointwise_rows(gt, pred, out), stored, dropped, group, index, alias,
                          len(pred))


def _read_group(r, out, estimator, name, entry, gt, mp, eval_methods):
    per_sample = r.key(entry, "per_sample", mp, list)
    if not per_sample:
        r.fail(f"{mp}.per_sample", "empty list")
    num_samples = r.count(r.key(entry, "num_samples", mp), f"{mp}.num_samples")
    aggregates = r.key(entry, "aggregate_correlations", mp, dict)
    stored = {}
    for metric, stats in aggregates.items():
        ap = f"{mp}.aggregate_correlations.{metric}"
        r.dict(stats, ap)
        stored[metric] = {s: (r.count(r.key(stats, s, ap), f"{ap}.{s}") if s in ("num_samples", "num_nan")
                              else r.number(r.key(stats, s, ap), f"{ap}.{s}")) for s in AGGREGATE_STATS}
    members = []
    for i, sample in enumerate(per_sample):
        sp = f"{mp}.per_sample[{i}]"
        r.dict(sample, sp)
        if "predicted_values" not in sample:
            r.fail(sp, "missing key 'predicted_values'")
        alias = next((m for m in eval_methods if re.fullmatch(rf".*-s{i}(_[a-z]+)?", str(m))), None)
        e = _read_pointwise(r, out, estimator, name, sample, gt, sp, group=name, index=i, alias=alias)
        out.pointwise.append(e)
        members.append(e)
    group = SampleGroup(estimator, name, num_samples, [m.method for m in members], stored, None)
    # The per-point mean of the programs: reuse the summary's averaged entry when it holds exactly that.
    mean = _nanmean_rows(members)
    for other in out.pointwise:
        if other.estimator == estimator and other.group is None and _same_values(other.rows["score"], mean):
            group.averaged = other.method
            break
    else:
        derived = members[0].rows.copy()
        derived["score"] = mean
        n_pred = max(m.n_predictions for m in members)
        derived["error"] = [_row_error(i, sc, g, out, n_pred) for i, (sc, g) in
                            enumerate(zip(derived["score"], derived["ref_q"]))]
        out.pointwise.append(PointwiseEntry(estimator, f"{name}#mean", derived, None, None, name, None, None,
                                            max(m.n_predictions for m in members)))
        group.averaged, group.averaged_is_derived = f"{name}#mean", True
    out.groups.append(group)


def _nanmean_rows(members: list[PointwiseEntry]) -> np.ndarray:
    scores = np.vstack([m.rows["score"].to_numpy(float) for m in members])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-null point: mean is NaN (stays missing)
        return np.nanmean(scores, axis=0)


def _same_values(a: pd.Series, b: np.ndarray) -> bool:
    a = a.to_numpy(float)
    return a.shape == b.shape and bool(np.all((np.isnan(a) & np.isnan(b)) | (np.abs(a - b) <= 1e-12)))


def _read_ranking_estimation(r: _Reader, out: ImportedSummary, estimator, est, methods, p):
    counts_raw = r.key(est, "candidate_counts", p, list)
    counts = [r.count(c, f"{p}.candidate_counts[{i}]") for i, c in enumerate(counts_raw)]
    for name, entry in methods.items():
        mp = f"{p}.methods.{name}"
        r.dict(entry, mp)
        corr = r.key(entry, "correlations", mp, dict)
        rs = r.key(corr, "ranking_spearman", f"{mp}.correlations", dict)
        rp = f"{mp}.correlations.ranking_spearman"
        stored = {s: (r.count(r.key(rs, s, rp), f"{rp}.{s}") if s.startswith("num_")
                      else r.number(r.key(rs, s, rp), f"{rp}.{s}")) for s in RANKING_STATS}
        values = r.numbers(entry, "per_point_correlations", mp)
        if len(values) > len(counts):
            r.fail(f"{mp}.per_point_correlations",
                   f"{len(values)} states but candidate_counts has only {len(counts)}")
        for i, v in enumerate(values):
            if v is not None and not -1 - 1e-12 <= v <= 1 + 1e-12:
                r.fail(f"{mp}.per_point_correlations[{i}]", f"a Spearman rho must lie in [-1, 1], got {v}")
        width = _width(len(counts))
        states = pd.DataFrame({
            "sample_id": [f"{i:0{width}d}" for i in range(len(values))],
            "state_key": [_state_key(out.env_name, i, width) for i in range(len(values))],
            "n_candidates": counts[:len(values)],
            "value": pd.array(values, dtype="Float64").astype(float),
            # A skipped state is QVal's outcome, not a failure (tied ground truth is the usual cause; the summary does
            # not say which): value NULL, error NULL, so n_failed stays a count of real failures.
            "error": [None] * len(values),
        })
        out.ranking.append(RankingEntry(estimator, name, states, stored))


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
    isnan = lambda x: x is None or (isinstance(x, float) and math.isnan(x))  # noqa: E731
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
    return pd.DataFrame({
        "sample_id": [f"{i:0{width}d}" for i in range(len(gt))],
        "state_key": [_state_key(s.env_name, i, width) for i in range(len(gt))],
        "candidate": np.zeros(len(gt), dtype=np.int32),
        "action": [""] * len(gt),
        "score": np.array([np.nan if v is None else v for v in scores], dtype=float),
        "ref_q": np.array([np.nan if v is None else v for v in gt], dtype=float),
        "error": [_row_error(i, scores[i], gt[i], s, len(pred)) for i in range(len(gt))],
        # QVal's pointwise rows are the actor's own action at each point: the rows qval's pooled metrics use.
        "is_behaviour": np.ones(len(gt), dtype=bool),
    })


def _model_token(path: Path) -> str | None:
    for part in (path.name, path.parent.name):
        m = _MODEL_TOKEN.search(part)
        if m:
            return m.group(1)
    return None


# --------------------------------------------------------------------------------------------------------------
# Recomputing QVal's numbers


def qval_correlations(score, ref, min_points: int = MIN_USABLE_POINTS) -> dict[str, Stored]:
    """QVal's four pointwise statistics of one (prediction, ground truth) pairing, with its rules."""
    from scipy import stats as sps

    score, ref = np.asarray(score, float), np.asarray(ref, float)
    keep = ~(np.isnan(score) | np.isnan(ref))
    score, ref = score[keep], ref[keep]
    n = int(score.size)
    if n < min_points:
        return {m: Stored(None, None, n) for m in POINT_METRICS}
    out = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # constant input: scipy warns and returns NaN, which QVal stores as null
        for metric, fn in (("pearson", sps.pearsonr), ("spearman", sps.spearmanr), ("kendall_tau", sps.kendalltau)):
            res = fn(ref, score)
            out[metric] = Stored(_finite(res.statistic), _finite(res.pvalue), n)
    k = int(np.sum(np.sign(score) == np.sign(ref)))
    out["sign_agreement"] = Stored(k / n, float(sps.binomtest(k, n, 0.5).pvalue), n)
    return out


def recompute_pointwise(rows: pd.DataFrame, min_points: int = MIN_USABLE_POINTS) -> dict[str, Stored]:
    """From imported rows: the rows without an error are exactly the pairs QVal used."""
    usable = rows[rows["error"].isna()]
    return qval_correlations(usable["score"], usable["ref_q"], min_points)


def recompute_aggregates(per_sample: list[dict[str, Stored]]) -> dict[str, dict]:
    """QVal's ``_aggregate_sample_correlations``: stats of the non-null per-program correlations."""
    out = {}
    for metric in POINT_METRICS:
        values = [s[metric].correlation for s in per_sample if s[metric].correlation is not None]
        num_nan = len(per_sample) - len(values)
        if not values:
            out[metric] = {"mean": None, "std": None, "min": None, "max": None, "median": None, "num_samples": 0,
                           "num_nan": num_nan}
            continue
        out[metric] = {"mean": statistics.mean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0,
                       "min": min(values), "max": max(values), "median": statistics.median(values),
                       "num_samples": len(values), "num_nan": num_nan}
    return out


def recompute_ranking(states: pd.DataFrame) -> dict[str, float | int | None]:
    values = states["value"].to_numpy(float)
    valid = values[~np.isnan(values)]
    n = int(valid.size)
    return {"mean": float(valid.mean()) if n else None,
            "std": (float(np.std(valid, ddof=1)) if n > 1 else 0.0) if n else None,
            "num_valid": n, "num_skipped": int(values.size - n), "num_points": int(values.size)}


def _finite(x) -> float | None:
    return float(x) if x is not None and np.isfinite(x) else None


@dataclass
class CheckReport:
    counts: dict[str, int] = field(default_factory=dict)  # what was compared and matched, by kind
    mismatches: list[str] = field(default_factory=list)

    def ok(self) -> bool:
        return not self.mismatches

    def total(self) -> int:
        return sum(self.counts.values())


def _close(a, b, tol: float) -> bool:
    if a is None or b is None:
        return a is None and b is None
    return abs(a - b) <= tol


def _close_p(a, b) -> bool:
    if a is None or b is None:
        return a is None and b is None
    return abs(a - b) <= 1e-9 * max(abs(b), 1e-300) or abs(a - b) <= 1e-15


def check_summary(s: ImportedSummary, tol: float = 1e-9) -> CheckReport:
    """Recompute every stored number from the imported rows and compare."""
    rep = CheckReport({"pointwise_correlations": 0, "pointwise_p_values": 0, "pointwise_num_points": 0,
                       "num_dropped_zero": 0, "sample_aggregates": 0, "averaged_variants": 0, "ranking_stats": 0})

    def count(kind, good, what):
        if good:
            rep.counts[kind] += 1
        else:
            rep.mismatches.append(what)

    recomputed: dict[tuple[str, str], dict[str, Stored]] = {}
    for e in s.pointwise:
        got = recomputed[(e.estimator, e.method)] = recompute_pointwise(e.rows, s.min_points)
        if e.stored is None:
            continue
        where = f"{e.estimator}/{e.method}"
        for metric, st in e.stored.items():
            if metric not in got:
                rep.mismatches.append(f"{where}: stored metric {metric!r} has no recomputation")
                continue
            g = got[metric]
            count("pointwise_correlations", _close(g.correlation, st.correlation, tol),
                  f"{where} {metric}: recomputed {g.correlation} vs stored {st.correlation}")
            count("pointwise_p_values", _close_p(g.p_value, st.p_value),
                  f"{where} {metric} p: recomputed {g.p_value} vs stored {st.p_value}")
            count("pointwise_num_points", g.num_points == st.num_points,
                  f"{where} {metric} n: recomputed {g.num_points} vs stored {st.num_points}")
        if e.num_dropped_zero is not None:
            dropped = int((e.rows["error"] == ERR_ZERO).sum())
            count("num_dropped_zero", dropped == e.num_dropped_zero,
                  f"{where} num_dropped_zero: {dropped} vs stored {e.num_dropped_zero}")
    for grp in s.groups:
        got = recompute_aggregates([recomputed[(grp.estimator, m)] for m in grp.members])
        for metric, stats in grp.stored.items():
            for stat, value in stats.items():
                mine = got.get(metric, {}).get(stat)
                good = mine == value if stat.startswith("num_") else _close(mine, value, tol)
                count("sample_aggregates", good,
                      f"{grp.estimator}/{grp.method} aggregate {metric}.{stat}: {mine} vs stored {value}")
        if not grp.averaged_is_derived:
            count("averaged_variants", True, "")
    for e in s.ranking:
        got = recompute_ranking(e.states)
        for stat, value in e.stored.items():
            mine = got[stat]
            good = mine == value if stat.startswith("num_") else _close(mine, value, tol)
            count("ranking_stats", good, f"{e.estimator}/{e.method} ranking {stat}: {mine} vs stored {value}")
    return rep


# --------------------------------------------------------------------------------------------------------------
# qval cells, parts and manifests


def metric_frame(rows: pd.DataFrame, cell_id: str = "imported") -> pd.DataFrame:
    """What qval's qalign metrics receive from ingest (``_samples_by_cell``): every row, with a NULL score where
    the row has an error; columns ``cell_id, sample_id, state_key, candidate, score, ref_q, is_behaviour``, index
    reset."""
    frame = rows[["sample_id", "state_key", "candidate", "score", "ref_q", "is_behaviour"]].copy()
    frame.loc[rows["error"].notna().to_numpy(), "score"] = float("nan")
    frame.insert(0, "cell_id", cell_id)
    return frame.reset_index(drop=True)


def family_of(method: str) -> str:
    base = method.split("#", 1)[0]
    for pattern, family in _FAMILIES:
        if re.search(pattern, base):
            return family
    return IMPORT_MARKER


def suite_name(s: ImportedSummary) -> str:
    """A valid qval suite name (``^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$``), unique per source file."""
    stem = re.sub(r"[^A-Za-z0-9_.-]", "_", s.source.stem) or "summary"
    return f"{IMPORT_MARKER}-{stem}"[:54] + f"-{s.sha256[:8]}"


def import_cells(s: ImportedSummary, model: str | None = None, temperature: float | None = None):
    """One qval ``Cell`` per (estimator, method): pointwise cells in track "qalign", ranking ones in STATE_TRACK.

    Returns ``[(cell, entry)]``. The cell id is a content hash of (source sha256, estimator, method)."""
    from qval.plan import Cell

    model = model or s.model_token
    if not model:
        raise UsageError(f"{s.source}: the summary names no model and none was found in its file or folder name; "
                         "pass model=… (e.g. q35-122)")
    out = []
    for entry, track in [(e, TRACK) for e in s.pointwise] + [(e, STATE_TRACK) for e in s.ranking]:
        identity = {"v": IDENTITY_VERSION, "source": IMPORT_MARKER, "source_sha256": s.sha256,
                    "estimator": entry.estimator, "method": entry.method}
        if track == TRACK:
            identity["rows"] = QALIGN_ROW_FORMAT  # rows carry is_behaviour: imports from before are redone
        method_params = {"qval_method": entry.method, "estimator": entry.estimator}
        if isinstance(entry, PointwiseEntry) and entry.group is not None:
            method_params.update(group=entry.group, sample_index=entry.sample_index, alias=entry.alias)
        cell = Cell(
            cell_id=content_hash(identity), track=track, model=model,
            model_identity={"source": IMPORT_MARKER, "qval_backbone": model},
            method=f"{IMPORT_MARKER}:{entry.method}", method_params=method_params, family=family_of(entry.method),
            dataset=s.env_name,
            dataset_params={"gt": entry.estimator, "summary_sha256": s.sha256, "summary": s.source.name},
            temperature=temperature, seed=s.collection_seed,
            settings={"import": {"source": str(s.source), "sha256": s.sha256, "min_points": s.min_points,
                                 "exclude_zero_points": s.exclude_zero_points, "timestamp": s.timestamp}},
            dataset_label=f"{s.env_name}(gt={entry.estimator})",
        )
        out.append((cell, entry))
    return out


@dataclass
class WriteReport:
    suite: str
    plan_path: Path
    run_id: str
    written: list[str] = field(default_factory=list)  # cell ids written now
    already_done: list[str] = field(default_factory=list)


def write_import_parts(s: ImportedSummary, results_dir, model: str | None = None,
                       temperature: float | None = None) -> WriteReport:
    """Write the summary as qval parts + DONE manifests, a plan manifest and a run record, so that the normal
    ``qval ingest`` picks the cells up. Idempotent: cells already DONE are left alone; an interrupted import
    resumes per sample (as a worker does)."""
    from qval import __version__
    from qval.plan import Plan
    from qval.store.parts import PartWriter, is_done, write_json_atomic

    results = Path(results_dir)
    cells = import_cells(s, model, temperature)
    kept = cells
    suite = suite_name(s)
    plan_id = content_hash({"suite": suite, "cells": sorted(c.cell_id for c, _ in kept)}, length=12)
    run_id = f"{IMPORT_MARKER}-{s.sha256[:12]}"
    report = WriteReport(suite, results / "plans" / f"{plan_id}.json", run_id)
    now = datetime.now(timezone.utc).isoformat()
    for cell, entry in kept:
        if is_done(results, cell.cell_id):
            report.already_done.append(cell.cell_id)
            continue
        writer = PartWriter(results, cell.cell_id, cell.track, flush_rows=10_000, flush_seconds=3600)
        done = writer.done_sample_ids()
        rows = entry.rows if isinstance(entry, PointwiseEntry) else entry.states
        for row in rows.to_dict("records"):
            if row["sample_id"] in done:
                continue
            writer.add_sample([{k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in row.items()}])
        manifest = {"run_id": run_id, "plan_id": plan_id, "cell_id": cell.cell_id, "started_at": now,
                    "hardware": None, "n_samples": int(len(rows)), "n_failed": int(rows["error"].notna().sum()),
                    "qval_import": _provenance(s, entry)}
        writer.finish(manifest)
        report.written.append(cell.cell_id)
    registered = _registered_metrics()
    qalign_metrics = [m for m in ("pooled_spearman", "pooled_kendall", "pooled_pearson", "per_state_spearman")
                      if m in registered]
    plan = Plan(plan_id, suite, str(s.source), s.sha256,
                f"QVal summary {s.source.name} ({s.env_name}), imported with {IMPORT_MARKER}",
                {"name": suite, "qalign": {"metrics": qalign_metrics, "main_metric": "pooled_spearman"},
                 IMPORT_MARKER: {"source": str(s.source), "sha256": s.sha256, "env_name": s.env_name,
                                 "model": model or s.model_token, "notes": s.notes}},
                {c.cell_id: c for c, _ in kept}, [])
    plan.write(results)
    run_file = results / "runs" / f"{run_id}.json"
    if not run_file.exists():
        run_file.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(run_file, {
            "run_id": run_id, "suite": suite, "plan_id": plan_id, "status": "done", "started_at": now,
            "finished_at": now, "fingerprint": {"packages": {"qval": __version__},
                                                "argv": f"{IMPORT_MARKER} {s.source}",
                                                "source_sha256": s.sha256}})
    return report


def _provenance(s: ImportedSummary, entry) -> dict:
    base = {"source": str(s.source), "sha256": s.sha256, "estimator": entry.estimator, "method": entry.method}
    if isinstance(entry, PointwiseEntry):
        base["stored"] = None if entry.stored is None else {m: vars(v) for m, v in entry.stored.items()}
        base["num_dropped_zero"] = entry.num_dropped_zero
    else:
        base["stored"] = entry.stored
    return base


def _registered_metrics() -> set[str]:
    from qval.registry import REGISTRY

    return set(REGISTRY.names("metrics"))


# --------------------------------------------------------------------------------------------------------------
# What `qval import-qval SUMMARY.json [--model M] [--results DIR]` calls, under the results lock.


def import_qval(path, results_dir, model: str | None = None, temperature: float | None = None, check: bool = True):
    """Read, check (every stored number must be reproduced, else nothing is written), write parts, ingest."""
    from qval.store.db import results_lock
    from qval.store.ingest import ingest

    summary = read_summary(path)
    report = check_summary(summary)
    if check and not report.ok():
        raise UsageError(f"{path}: {len(report.mismatches)} stored number(s) not reproduced, first: "
                         f"{report.mismatches[0]}; nothing imported")
    with results_lock(Path(results_dir), f"import-qval {Path(path).name}"):
        written = write_import_parts(summary, results_dir, model, temperature)
        return summary, report, written, ingest(Path(results_dir))
