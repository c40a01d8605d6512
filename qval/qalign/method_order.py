"""Do two sets of per-point values order the methods the same way? Kendall's τ-b between the two orders of methods by
their mean, with a 95% percentile bootstrap interval that resamples states, and the pairs of methods whose order
reverses. ``qval label-noise`` compares exact against Monte-Carlo labels with it (label_noise.py), the report's
"Method ranking across models" table one model against another (model_stability.py): both are qval's own statistics.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from itertools import combinations

import numpy as np
import pandas as pd

from ..stats import N_BOOT, bootstrap_clusters


@dataclass
class OrderAgreement:
    methods: list[str] = field(default_factory=list)  # compared, best first under A
    left_out: dict[str, str] = field(default_factory=dict)  # method → why it is not compared
    n: int = 0  # evaluation points where every compared method has a defined value under both
    n_states: int = 0  # distinct states among them: the bootstrap's units
    tau: float | None = None
    ci_low: float | None = None
    ci_high: float | None = None
    means_a: dict[str, float] = field(default_factory=dict)
    means_b: dict[str, float] = field(default_factory=dict)
    flips: list[tuple[str, str]] = field(default_factory=list)  # (above under A, above under B)
    tie_changes: list[tuple[str, str]] = field(default_factory=list)  # tied under one side only
    undefined: str | None = None  # why there is no τ

    def summary_json(self, a: str, b: str) -> dict:
        """The agreement as JSON, the two sides named ``a`` and ``b`` in the keys of their means and flips."""
        return {
            "n": self.n,
            "n_states": self.n_states,
            "kendall_tau_b": self.tau,
            "ci_low": self.ci_low,
            "ci_high": self.ci_high,
            "undefined": self.undefined,
            "methods": self.methods,
            "left_out": self.left_out,
            f"mean_rho_{a}": self.means_a,
            f"mean_rho_{b}": self.means_b,
            "flipped_pairs": [{f"{a}_above": x, f"{b}_above": y} for x, y in self.flips],
            "tie_changes": [list(p) for p in self.tie_changes],
        }


def tau_b_rows(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Kendall τ-b between the columns of x and of y, row by row ((rows, methods) → (rows,)): Σ sign·sign over
    pairs / √(untied pairs in x · untied pairs in y); NaN where either row is all ties."""
    i, j = np.triu_indices(x.shape[1], k=1)
    dx, dy = np.sign(x[:, i] - x[:, j]), np.sign(y[:, i] - y[:, j])
    den = np.sqrt(np.abs(dx).sum(axis=1) * np.abs(dy).sum(axis=1))
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(den > 0, (dx * dy).sum(axis=1) / den, np.nan)


def compare_orders(
    a: pd.DataFrame,
    b: pd.DataFrame,
    states: pd.Series,
    a_name: str,
    b_name: str,
    both_name: str,
    n_boot: int = N_BOOT,
    seed: int = 0,
) -> OrderAgreement:
    """``a`` and ``b``: per-point ρ (rows: evaluation points, the same index; columns: methods; NaN where undefined);
    ``states``: each point's state (the bootstrap's cluster). ``a_name``/``b_name``/``both_name`` name the two sides
    in the reasons ("exact labels", "both label sets")."""
    out = OrderAgreement()
    for method in a.columns:
        if a[method].isna().all():
            out.left_out[method] = f"no evaluation point with a defined ρ under {a_name}"
        elif b[method].isna().all():
            out.left_out[method] = f"no evaluation point with a defined ρ under {b_name}"
    kept = [m for m in a.columns if m not in out.left_out]
    # Both means over the same points: a point undefined for one method (or one side) is dropped for all.
    common = a[kept].notna().all(axis=1) & b[kept].notna().all(axis=1)
    xa, xb = a.loc[common, kept].to_numpy(float), b.loc[common, kept].to_numpy(float)
    out.n, out.n_states = int(common.sum()), int(states[common].nunique())
    if len(kept) < 2:
        out.undefined = f"{len(kept)} method(s) with a defined ρ under {both_name}; an order needs 2"
        return out
    if out.n == 0:
        out.undefined = f"no evaluation point where every method has a defined ρ under {both_name}"
        return out
    mean_a, mean_b = xa.mean(axis=0), xb.mean(axis=0)
    order = sorted(range(len(kept)), key=lambda k: (-mean_a[k], -mean_b[k], kept[k]))
    out.methods = [kept[k] for k in order]
    out.means_a = {kept[k]: float(mean_a[k]) for k in order}
    out.means_b = {kept[k]: float(mean_b[k]) for k in order}
    for i, j in combinations(order, 2):
        da, db = np.sign(mean_a[i] - mean_a[j]), np.sign(mean_b[i] - mean_b[j])
        if da * db < 0:
            out.flips.append((kept[i], kept[j]) if da > 0 else (kept[j], kept[i]))
        elif (da == 0) != (db == 0):
            out.tie_changes.append((kept[i], kept[j]))
    value = float(tau_b_rows(mean_a[None, :], mean_b[None, :])[0])
    if not np.isfinite(value):
        tied = a_name if np.all(mean_a == mean_a[0]) else b_name
        out.undefined = f"every method has the same mean ρ under {tied}: no order to compare"
        return out

    def statistic(weights: np.ndarray) -> np.ndarray:  # (resamples, points) → τ per resample
        total = weights.sum(axis=1, keepdims=True)
        return tau_b_rows(weights @ xa / total, weights @ xb / total)

    ci = bootstrap_clusters(pd.factorize(states[common])[0], statistic, value, n_boot=n_boot, seed=seed)
    out.tau, out.ci_low, out.ci_high = ci.value, ci.ci_low, ci.ci_high
    return out


def order_text(means: dict[str, float]) -> str:
    """ "a 0.412 > b 0.300 = c 0.300": methods best first with their mean ρ."""
    ranked = sorted(means.items(), key=lambda kv: -kv[1])
    if not ranked:
        return "–"
    text = f"{ranked[0][0]} {ranked[0][1]:.3f}"
    for (_, prev), (name, value) in zip(ranked, ranked[1:]):
        text += f" {'=' if value == prev else '>'} {name} {value:.3f}"
    return text
