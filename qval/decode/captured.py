"""How much of a knob sweep's per-instance headroom an adaptive policy captures LIVE.

A knob sweep (``sweeps.py``) gives, per sample, the value at every setting of one knob: the best fixed setting
and the per-instance oracle (each sample at its own best setting) bound what any per-instance choice of that knob
can do. An adaptive policy (family ``adaptive``: adaptive-draft, learned-length, dynamic-exit, … or any policy
whose class sets ``adaptive = True``) makes such a choice while it decodes. Its captured share is

    (policy − best fixed) / (oracle − best fixed)

with each term the mean over the samples the policy and every setting of the sweep share (paired by sample): 0 is
no better than the best fixed setting, 1 is the oracle, < 0 worse than the best fixed setting; undefined when the
oracle gains nothing. The best fixed setting is chosen on those same samples (in-sample, as the replay's); the 95%
CI is the percentile bootstrap over samples, the three terms resampled together, the best fixed setting held.

Which sweeps a policy is compared with: those of its own (model, dataset, temperature, seed) whose policy and knob
it names (``sweep_target()`` on the policy: learned-length names its selector's), otherwise every sweep of that
group it is not itself a member of. Speedups pair each cell with its same-run AR baseline, as the sweep's do.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd

from .. import results as R
from ..registry import REGISTRY
from ..stats import MetricValue, bootstrap_mean, bootstrap_mean_ratio
from .replay import _argmax_smaller
from .sweeps import Group, OwnSweep, _per_sample, load_sweeps, sweep_groups

CAPTURED = "captured"  # its key in TrackBoard.extras and its table's name
STATISTIC = (
    "share of the per-instance oracle's gain captured live = (policy − best fixed) / (oracle − best fixed), means "
    "over the samples the policy and every setting of the sweep share; best fixed chosen on those samples; 95% "
    "percentile bootstrap over samples (paired, best fixed setting held); undefined when the oracle gains nothing"
)
ADAPTIVE_FAMILY = "adaptive"


def captured_share(policy, best_fixed, oracle, seed: int = 0) -> MetricValue:
    """(mean policy − mean best fixed) / (mean oracle − mean best fixed) over paired samples, with its CI."""
    p, b, o = (np.asarray(x, float) for x in (policy, best_fixed, oracle))
    gain, room = p - b, o - b
    if p.size == 0 or room.mean() <= 0:
        return MetricValue.undefined(int(p.size))
    return bootstrap_mean_ratio(gain, room, gain.mean() / room.mean(), seed=seed)


def is_adaptive(method: str, family: str, recorded: bool | None = None) -> bool:
    """``recorded``: the cell's flag from planning (Cell.adaptive); None where its plan predates it, and then the
    policy's class decides (importing its code, and with it usually torch)."""
    if family == ADAPTIVE_FAMILY:
        return True
    if recorded is not None:
        return recorded
    try:
        return bool(getattr(REGISTRY.get("policies", method), "adaptive", False))
    except Exception:  # noqa: BLE001 - a policy not installed here: its stored family decides
        return False


def _flag(value) -> bool | None:
    """A cells-table BOOLEAN as read into pandas (a bool, or a missing value for NULL)."""
    return None if value is None or pd.isna(value) else bool(value)


def _target(method: str, params: dict) -> tuple[str, str] | None:
    """The (policy, knob) a policy declares it chooses per instance; None where it declares none (or its params no
    longer load here, e.g. a selector file moved: then it is compared with every sweep of its group)."""
    try:
        cls = REGISTRY.get("policies", method)
        if not hasattr(cls, "sweep_target"):
            return None
        return tuple(cls(cls.Params.model_validate(params)).sweep_target())  # type: ignore[return-value]
    except Exception:  # noqa: BLE001 - see the docstring
        return None


def _policy_values(con, info: pd.DataFrame, cell_id: str) -> dict[str, pd.Series]:
    """Per-sample τ and same-run speedup of one cell, by sample id."""
    baseline = info.at[cell_id, "baseline_cell_id"]
    same_run = isinstance(baseline, str) and baseline in info.index
    same_run = same_run and info.at[baseline, "run_id"] == info.at[cell_id, "run_id"]
    per = _per_sample(con, [cell_id] + ([baseline] if same_run else []))
    per["sample_id"] = per["sample_id"].astype(str)
    own = per[per["cell_id"] == cell_id].set_index("sample_id")
    out = {"tau": own["tau"].astype(float)}
    if same_run:
        base = per[per["cell_id"] == baseline].set_index("sample_id")
        both = own.index.intersection(base.index)
        own, base = own.loc[both], base.loc[both]
        ok = (own["decode_s"] > 0) & (base["decode_s"] > 0)
        out["speedup"] = ((own["tokens"] / own["decode_s"]) / (base["tokens"] / base["decode_s"]))[ok].astype(float)
    return out


def share_row(sweep: OwnSweep, metric: str, label: str, values: pd.Series, seed: int = 0) -> dict | None:
    """One row of the table: the policy's captured share of ``sweep``'s oracle gain on ``metric``."""
    table = sweep.tables[metric].dropna()
    ids = table.index.intersection(values.dropna().index)
    if len(ids) == 0:
        return None
    matrix = table.loc[ids].to_numpy(float)
    cands = list(table.columns)
    best = int(np.argmax(matrix.mean(axis=0)))  # ties → the smaller setting, as the replay's best fixed
    oracle = matrix[np.arange(len(ids)), _argmax_smaller(matrix)]
    live = values.loc[ids].to_numpy(float)
    share = captured_share(live, matrix[:, best], oracle, seed)
    mean = bootstrap_mean(live, seed=seed)
    return {
        "model": sweep.model,
        "dataset": sweep.dataset,
        "temperature": sweep.temperature,
        "seed": sweep.seed,
        "sweep": sweep.name,
        "values": ",".join(str(c) for c in cands),
        "metric": metric,
        "policy": label,
        "best_fixed_value": cands[best],
        "best_fixed": float(matrix[:, best].mean()),
        "oracle": float(oracle.mean()),
        "live": mean.value,
        "live_ci": [mean.ci_low, mean.ci_high],
        "share": share.value,
        "share_ci": [share.ci_low, share.ci_high],
        "n": int(len(ids)),
    }


def captured_rows(results, suite: str, seed: int = 0) -> list[dict]:
    """Every (sweep, metric, adaptive policy) row of the suite; [] where no adaptive cell sits beside a sweep."""
    info, groups = sweep_groups(results, suite)
    if not groups:
        return []
    adaptive = [
        c
        for c in info.index
        if is_adaptive(info.at[c, "method"], str(info.at[c, "family"]), _flag(info.at[c, "adaptive"]))
    ]
    pairs: list[tuple[Group, list[str]]] = []
    for group in groups:
        key, knob, _, values = group
        members = set(values.values())
        policy = key[4]
        mine = []
        for cell in adaptive:
            row = info.loc[cell]
            here = (row["model"], row["dataset_label"], row["temperature"], row["seed"])
            if cell in members or here != tuple(key[:4]):
                continue
            params = (json.loads(row["identity"]) or {}).get("method_params") or {}
            target = _target(row["method"], params)
            if target is None or target == (policy, knob):
                mine.append(cell)
        if mine:
            pairs.append((group, mine))
    if not pairs:
        return []
    sweeps = {(s.knob, tuple(s.cells.items())): s for s in load_sweeps(results, info, [g for g, _ in pairs])}
    labels = R.method_labels(info.reset_index())  # the leaderboard's row names
    rows = []
    with R.connection(results) as con:
        for group, cells in pairs:
            sweep = sweeps.get((group[1], tuple(group[3].items())))
            if sweep is None:
                continue
            for cell in cells:
                label = labels[cell]
                values = _policy_values(con, info, cell)
                for metric in sweep.tables:
                    if metric in values and (row := share_row(sweep, metric, label, values[metric], seed)):
                        rows.append(row)
    return rows
