"""QVal's statistics, recomputed the way QVal computed them (src/qval/correlation.py at 3519062a).

Fewer than ``min_usable_correlation_points`` usable pairs give null correlations; scipy ``pearsonr``/``spearmanr``/
``kendalltau`` (tau-b) give null on a constant input; sign agreement is the fraction of pairs with
``np.sign(pred) == np.sign(gt)`` with a two-sided ``binomtest(k, n, 0.5)``. Ranking: ``mean`` and ``std`` (ddof=1;
0.0 for one state) over the non-null per-state values.
"""

from __future__ import annotations

import statistics
import warnings

import numpy as np
import pandas as pd

from .schema import MIN_USABLE_POINTS
from .summary import Stored

POINT_METRICS = ("pearson", "spearman", "kendall_tau", "sign_agreement")


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
    out: dict[str, dict] = {}
    for metric in POINT_METRICS:
        values = [c for s in per_sample if (c := s[metric].correlation) is not None]
        num_nan = len(per_sample) - len(values)
        if not values:
            out[metric] = {
                "mean": None,
                "std": None,
                "min": None,
                "max": None,
                "median": None,
                "num_samples": 0,
                "num_nan": num_nan,
            }
            continue
        out[metric] = {
            "mean": statistics.mean(values),
            "std": statistics.stdev(values) if len(values) > 1 else 0.0,
            "min": min(values),
            "max": max(values),
            "median": statistics.median(values),
            "num_samples": len(values),
            "num_nan": num_nan,
        }
    return out


def recompute_ranking(states: pd.DataFrame) -> dict[str, float | int | None]:
    """QVal's ranking summary of the per-state values (NaN = a state QVal skipped)."""
    values = states["value"].to_numpy(float)
    valid = values[~np.isnan(values)]
    n = int(valid.size)
    return {
        "mean": float(valid.mean()) if n else None,
        "std": (float(np.std(valid, ddof=1)) if n > 1 else 0.0) if n else None,
        "num_valid": n,
        "num_skipped": int(values.size - n),
        "num_points": int(values.size),
    }


def _finite(x) -> float | None:
    return float(x) if x is not None and np.isfinite(x) else None
