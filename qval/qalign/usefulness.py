"""Does alignment predict usefulness? The rank correlation, across a Q-alignment board's rows, between per-state ρ
(per_state_spearman) and what a scorer-guided agent achieves (guided_success, and guided_regret negated), with a 95%
bootstrap CI resampling rows. The usefulness figure and the report's table both read it from here, so they can
never disagree."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.stats import rankdata

from ..stats import bootstrap_batched

ALIGNMENT = "per_state_spearman"
# (board column, sign, how the correlated quantity reads): regret is negated so that a positive ρ always means
# "better aligned scorers guide better".
USEFULNESS = (("guided_success", 1.0, "guided success"), ("guided_regret", -1.0, "\u2212guided regret"))
MIN_ROWS = 3  # below this, a rank correlation says nothing (two points always correlate ±1)
LABEL = (
    "qval's own statistic (not QVal's): Spearman rank correlation between per-state \u03c1 (per_state_spearman) and "
    "guided usefulness, across the board's rows that have both values; n = rows (one cell each: model \u00b7 method "
    "\u00b7 environment \u00b7 temperature \u00b7 seed); 95% CI: percentile bootstrap resampling rows. Regret is "
    "negated, so a positive \u03c1 means better-aligned scorers guide better."
)


@dataclass(frozen=True)
class RankCorrelation:
    metric: str  # the usefulness column
    label: str  # how the correlated quantity reads ("−guided regret")
    value: float | None  # None: undefined, for `reason`
    ci_low: float | None
    ci_high: float | None
    n: int  # rows with both values
    reason: str = ""  # why the value or its CI is undefined


def _spearman_rows(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Spearman ρ of each row of x against the same row of y (average ranks for ties; NaN where a row is
    constant), as one array operation over all bootstrap resamples."""
    rx, ry = rankdata(x, axis=1), rankdata(y, axis=1)
    rx -= rx.mean(axis=1, keepdims=True)
    ry -= ry.mean(axis=1, keepdims=True)
    denominator = np.sqrt((rx * rx).sum(axis=1) * (ry * ry).sum(axis=1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denominator > 0, (rx * ry).sum(axis=1) / denominator, np.nan)


def rank_correlation(x: np.ndarray, y: np.ndarray, metric: str = "", label: str = "", seed: int = 0) -> RankCorrelation:
    """Spearman ρ of paired values x, y (pairs with a NaN left out) with a 95% bootstrap CI resampling pairs;
    resamples in which either side is constant have no ρ and are left out of the interval."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    both = np.isfinite(x) & np.isfinite(y)
    x, y = x[both], y[both]
    n = len(x)
    if n < MIN_ROWS:
        return RankCorrelation(metric, label, None, None, None, n, f"fewer than {MIN_ROWS} rows with both values")
    constant = [name for name, v in (("per-state \u03c1", x), (label or "usefulness", y)) if np.ptp(v) == 0]
    if constant:
        return RankCorrelation(metric, label, None, None, None, n, f"{' and '.join(constant)} constant across rows")
    value = float(_spearman_rows(x[None, :], y[None, :])[0])
    ci = bootstrap_batched(n, lambda idx: _spearman_rows(x[idx], y[idx]), value, seed=seed)
    reason = "" if ci.ci_low is not None else "no resample varies on both sides"
    return RankCorrelation(metric, label, value, ci.ci_low, ci.ci_high, n, reason)


def usefulness_rows(rows: pd.DataFrame) -> pd.DataFrame:
    """The board rows that have per-state ρ and at least one guided metric (columns absent count as undefined)."""
    if rows.empty or ALIGNMENT not in rows:
        return rows.iloc[0:0]
    present = [m for m, _, _ in USEFULNESS if m in rows]
    if not present:
        return rows.iloc[0:0]
    defined = rows[ALIGNMENT].notna() & rows[present].notna().any(axis=1)
    return rows[defined]


def alignment_usefulness(rows: pd.DataFrame) -> list[RankCorrelation]:
    """Per usefulness metric the board has, its rank correlation with per-state ρ across rows; [] when no row has
    per-state ρ and a guided metric (no guided metric listed)."""
    rows = usefulness_rows(rows)
    if rows.empty:
        return []
    out = []
    for metric, sign, label in USEFULNESS:
        if metric in rows and rows[metric].notna().any():
            y = sign * rows[metric].to_numpy(float)
            out.append(rank_correlation(rows[ALIGNMENT].to_numpy(float), y, metric, label))
    return out
