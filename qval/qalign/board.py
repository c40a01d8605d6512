"""What the Q-alignment leaderboard and `qval compare` read beyond the metric table: per-state values as the metric
stage stored them, and per-family aggregates over them."""

from __future__ import annotations

import numpy as np
import pandas as pd

from .. import results as R
from ..report.model import BASELINE_FAMILY
from ..stats import MetricValue, bootstrap_batched


def units_by_cell(results, suite: str, metric: str) -> dict[str, pd.Series]:
    """Per cell, the metric's per-unit values (indexed by unit) as the metric stage stored them."""
    units = R.units(results, suite, metric)
    return {
        cell: pd.Series(group["value"].to_numpy(float), index=group["unit"].to_numpy(), dtype=float)
        for cell, group in units.groupby("cell_id", sort=False)
    }


def by_state(results, suite: str, main_metric: str) -> dict[str, pd.Series] | None:
    """Per cell, the main metric's value in each state, when the main metric is a per-state mean (what the
    paired test between neighbours and the family aggregates resample), as the metric stage stored them."""
    from .metrics import BY_STATE

    if main_metric not in BY_STATE:
        return None
    return units_by_cell(results, suite, main_metric)


def _mean_ci(values: np.ndarray) -> MetricValue:
    """Mean with a bootstrap CI resampling its units (states), all resamples as one array operation."""
    return bootstrap_batched(len(values), lambda idx: values[idx].mean(axis=1), float(values.mean()))


def family_aggregates(rows: pd.DataFrame, by_state: dict[str, pd.Series], main_metric: str) -> pd.DataFrame:
    """Per (dataset, temperature, family): the mean over the family's methods of the main metric, on the states
    all of them scored, with a 95% bootstrap CI resampling states, and the family's best method."""

    out = []
    # A baseline (oracle, random, heuristic) brackets the methods rather than competing as a family: averaging the
    # oracle with random would describe neither, so each baseline is its own row, named "baseline: oracle-q".
    baseline = rows["family"] == BASELINE_FAMILY
    rows = rows.assign(family=rows["family"].where(~baseline, BASELINE_FAMILY + ": " + rows["method"].astype(str)))
    for (dataset, temperature, family), group in rows.groupby(["dataset", "temperature", "family"], dropna=False):
        series = [by_state[c] for c in group["cell_id"] if c in by_state and len(by_state[c])]
        if not series:
            continue
        table = pd.concat(series, axis=1, join="inner")  # states every method of the family has a value for
        best = group.sort_values(main_metric, ascending=False, na_position="last").iloc[0]
        record = {
            "dataset": dataset,
            "temperature": temperature,
            "family": family,
            "methods": len(series),
            "value": None,
            "ci_low": None,
            "ci_high": None,
            "n": len(table),
            "best_method": best["method"],
            "best_value": best[main_metric],
        }
        if len(table):
            per_state = table.mean(axis=1).to_numpy(float)
            ci = _mean_ci(per_state)
            record.update(value=ci.value, ci_low=ci.ci_low, ci_high=ci.ci_high)
        out.append(record)
    return pd.DataFrame(out)
