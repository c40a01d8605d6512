"""qval's own knob sweeps, read from the results database: per-sample tables in the release (BlockPilot) format.

A *sweep* is a set of decoding cells that differ in exactly one numeric policy parameter (the *knob*: draft
length, block size, stop threshold, layers…) and agree on everything else (model, dataset, temperature, seed,
policy, the other parameters). Each sample then has a value at every setting of the knob, which is what replay
needs: best fixed setting, per-instance oracle, a held-out selector, and the headroom between them.

Two per-sample tables per sweep:

* ``tau``: acceptance length of the sample (1 + Σ accepted / Σ target steps over its turns), BlockPilot's unit;
* ``speedup``: the sample's decode throughput ÷ the same-run AR cell's on that sample. τ alone rewards ever
  longer drafts; the serving question (which setting is fastest) needs the timed ratio.

Selector features come from the prefill of the sample's first turn (computed after the timed region): next-token
entropy and top probability, log prompt length, and the category one-hot. They are known before decoding starts,
as a deployed selector would need.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.compute as pc

from .. import results as R
from . import replay

METRICS = ("tau", "speedup")
METRIC_LABELS = {"tau": "acceptance length τ (per sample)", "speedup": "measured speedup vs same-run AR (per sample)"}


@dataclass
class OwnSweep:
    """One knob swept with everything else fixed; ``tables[metric]`` is sample id × knob value."""

    model: str
    dataset: str
    temperature: float
    seed: int
    policy: str
    knob: str
    fixed_params: dict
    cells: dict  # knob value -> cell id
    tables: dict[str, pd.DataFrame]
    features: pd.DataFrame | None
    feature_names: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        return f"{self.policy}.{self.knob}"

    def as_replay(self, metric: str) -> replay.Sweep:
        table = self.tables[metric]
        return replay.Sweep(
            sizes=list(table.columns), table=table, features=self.features, knob=self.knob, metric=METRIC_LABELS[metric]
        )

    def meta(self, metric: str) -> dict:
        return {
            "knob": self.knob,
            "metric": METRIC_LABELS[metric],
            "model": self.model,
            "dataset": self.dataset,
            "temperature": self.temperature,
            "seed": self.seed,
            "policy": self.policy,
            "fixed_params": self.fixed_params,
            "cells": {str(k): v for k, v in self.cells.items()},
            "features": self.feature_names,
        }


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _knob_groups(cells: pd.DataFrame) -> list[tuple[tuple, str, dict, dict]]:
    """(group key, knob, fixed params, {value: cell id}) for every knob with ≥ 2 values among otherwise equal cells.

    A parameter left at its default is not in the stored params, so a cell that omits the knob cannot join that
    knob's sweep (its value is unknown here); suites that sweep a knob name it on every entry.
    """
    out = []
    for key, group in cells.groupby(["model", "dataset_label", "temperature", "seed", "method"], sort=True):
        params = {
            row.cell_id: (json.loads(row.identity) or {}).get("method_params") or {} for row in group.itertuples()
        }
        knobs = sorted({k for p in params.values() for k, v in p.items() if _is_number(v)})
        for knob in knobs:
            by_rest: dict[str, dict] = {}
            for cell_id, p in params.items():
                if knob not in p or not _is_number(p[knob]):
                    continue
                rest = json.dumps({k: v for k, v in p.items() if k != knob}, sort_keys=True)
                by_rest.setdefault(rest, {})[_value(p[knob])] = cell_id
            for rest, values in sorted(by_rest.items()):
                if len(values) >= 2:
                    out.append((key, knob, json.loads(rest), dict(sorted(values.items()))))
    return out


def _value(x):
    return int(x) if float(x).is_integer() else float(x)


_PER_SAMPLE = (
    "SELECT cell_id, sample_id, 1 + sum(coalesce(list_sum(accepted), 0)) / sum(target_steps) AS tau, "
    "sum(new_tokens)::DOUBLE AS tokens, sum(decode_s) AS decode_s FROM decode_samples "
    "WHERE cell_id IN (SELECT unnest(?)) AND error IS NULL AND sample_id IS NOT NULL GROUP BY cell_id, sample_id "
    "HAVING sum(target_steps) > 0"
)


def _per_sample(con, cell_ids: list[str]) -> pd.DataFrame:
    """Per (cell, sample): τ, tokens and decode time summed over turns (successful rows only)."""
    return con.execute(_PER_SAMPLE, [cell_ids]).df()


def _per_sample_columns(con, cell_ids: list[str]) -> tuple[dict[str, _Values], pd.Index]:
    """``_per_sample`` as each cell's values by sample code, and the sample id of each code. Read as Arrow with the
    ids dictionary-encoded: a million ids converted to Python strings (a DataFrame's) cost a million-row report's
    knob headroom half a second."""
    table = con.sql(_PER_SAMPLE, params=[cell_ids]).to_arrow_table()
    samples = pc.dictionary_encode(table["sample_id"].combine_chunks())
    cells = pc.dictionary_encode(table["cell_id"].combine_chunks())
    codes = samples.indices.to_numpy(zero_copy_only=False).astype(np.int64)
    values = [table[c].to_numpy().astype(float) for c in ("tau", "tokens", "decode_s")]  # nulls as NaN
    # Each cell's rows, in the order the query gave them (a stable sort by cell).
    cell_codes = cells.indices.to_numpy(zero_copy_only=False)
    by_cell = np.argsort(cell_codes, kind="stable")
    bounds = np.cumsum(np.bincount(cell_codes, minlength=len(cells.dictionary)))
    columns = {}
    for cell, rows in zip(cells.dictionary.to_pylist(), np.split(by_cell, bounds[:-1])):
        columns[cell] = _Values(codes[rows], *(v[rows] for v in values))
    return columns, pd.Index(samples.dictionary.to_pylist())


def _features(con, cell_ids: list[str]) -> tuple[pd.DataFrame | None, list[str]]:
    # Ordered by sample id, and min() rather than any_value(): a GROUP BY's rows come in no fixed order, and the
    # selector's folds and fits follow the row order, so the same database must give the same features.
    frame = con.execute(
        "SELECT sample_id, min(category) AS category, avg(prefill_entropy) AS entropy, "
        "avg(prefill_top_prob) AS top_prob, avg(prompt_tokens) AS prompt_tokens FROM decode_samples "
        "WHERE cell_id IN (SELECT unnest(?)) AND turn = 0 AND error IS NULL GROUP BY sample_id ORDER BY sample_id",
        [cell_ids],
    ).df()
    frame = frame.dropna(subset=["entropy", "top_prob", "prompt_tokens"])
    if frame.empty:
        return None, []
    features = pd.DataFrame(
        {
            "prefill_entropy": frame["entropy"].to_numpy(float),
            "prefill_top_prob": frame["top_prob"].to_numpy(float),
            "log_prompt_tokens": np.log(frame["prompt_tokens"].to_numpy(float)),
        },
        index=frame["sample_id"].astype(str),
    )
    categories = sorted(frame["category"].dropna().astype(str).unique())
    if len(categories) > 1:
        for cat in categories:
            features[f"category={cat}"] = (frame["category"].astype(str) == cat).to_numpy(float)
    return features, list(features.columns)


Group = tuple[tuple, str, dict, dict]  # (model, dataset, temperature, seed, method), knob, fixed params, {value: cell}


def sweep_groups(results, suite: str | None = None) -> tuple[pd.DataFrame, list[Group]]:
    """The finished decode cells (of one suite, or all; indexed by cell id) and the knob sweeps among them, read from
    the cells table only: what a sweep's values are computed from, before any sample is read."""
    cells = R.cells(results, suite)
    cells = cells[(cells["track"] == "decode") & (cells["status"] == "done")]
    return cells.set_index("cell_id"), (_knob_groups(cells) if not cells.empty else [])


def own_sweeps(results, suite: str | None = None) -> list[OwnSweep]:
    """Every knob sweep among the finished decode cells (of one suite, or all)."""
    info, groups = sweep_groups(results, suite)
    return load_sweeps(results, info, groups)


def load_sweeps(results, info: pd.DataFrame, groups: list[Group]) -> list[OwnSweep]:
    """The per-sample tables of these sweeps (groups of ``sweep_groups``); a sweep without values is left out."""
    if not groups:
        return []
    with R.connection(results) as con:
        # Per-sample values of every cell in any sweep (and of their AR baselines), read in one query.
        members = {c for _, _, _, values in groups for c in values.values()}
        baselines = {c: info.at[c, "baseline_cell_id"] for c in members}
        # Sample ids as integer codes: a sweep's table is filled by position, not aligned on string indexes (that
        # alignment, per column of every sweep, was most of a million-row report's knob headroom).
        columns, ids = _per_sample_columns(con, sorted(members | {b for b in baselines.values() if isinstance(b, str)}))
        order = ids.get_indexer(replay._sorted_ids(ids))  # codes in replay's sample order
        sweeps = []
        for (model, dataset, temperature, seed, method), knob, fixed, values in groups:
            ids_in = list(values.values())
            tables = {
                metric: _table(
                    {v: _column(columns, c, baselines[c], info, metric) for v, c in values.items()}, ids, order
                )
                for metric in METRICS
            }
            tables = {m: t for m, t in tables.items() if not t.empty and t.notna().any().any()}
            if not tables:
                continue
            features, names = _features(con, ids_in)
            sweeps.append(
                OwnSweep(
                    model, dataset, float(temperature), int(seed), method, knob, fixed, values, tables, features, names
                )
            )
        return sweeps


@dataclass(frozen=True)
class _Values:
    """One cell's per-sample sums, by sample code."""

    codes: np.ndarray
    tau: np.ndarray
    tokens: np.ndarray
    decode_s: np.ndarray


_NONE = _Values(*(np.zeros(0) for _ in range(4)))


def _column(columns: dict[str, _Values], cell_id: str, baseline_id, info: pd.DataFrame, metric: str):
    """(sample codes, values) of one setting of a sweep; None when it has none."""
    own = columns.get(cell_id, _NONE)
    if metric == "tau":
        return own.codes, own.tau
    # Speedups compare timings of one run only (see MeasuredSpeedup): another run's baseline gives no column.
    if (
        not isinstance(baseline_id, str)
        or baseline_id not in info.index
        or info.at[baseline_id, "run_id"] != info.at[cell_id, "run_id"]
    ):
        return None
    base = columns.get(baseline_id, _NONE)
    common, mine, theirs = np.intersect1d(own.codes, base.codes, assume_unique=True, return_indices=True)
    ok = (own.decode_s[mine] > 0) & (base.decode_s[theirs] > 0)
    ratio = (own.tokens[mine] / own.decode_s[mine]) / (base.tokens[theirs] / base.decode_s[theirs])
    return common[ok], ratio[ok]


def _table(columns: dict, ids: pd.Index, order: np.ndarray) -> pd.DataFrame:
    """Sample id × setting, rows for the samples any setting has, in ``order`` (the codes in replay's order)."""
    present = [c for c in columns.values() if c is not None]
    if not present:
        return pd.DataFrame()
    used = np.zeros(len(ids), bool)
    for codes, _ in present:
        used[codes] = True
    rows = order[used[order]]  # the used codes, in sample order
    position = np.full(len(ids), -1)
    position[rows] = np.arange(rows.size)
    matrix = np.full((rows.size, len(columns)), np.nan)
    for j, column in enumerate(columns.values()):
        if column is not None:
            matrix[position[column[0]], j] = column[1]
    return pd.DataFrame(matrix, index=pd.Index(ids[rows], name="sample_id"), columns=list(columns))


def _folder_name(sweep: OwnSweep) -> Path:
    temp = f"T{sweep.temperature:g}"
    rest = "-".join(f"{k}={v}" for k, v in sorted(sweep.fixed_params.items()))
    parts = [sweep.model, sweep.dataset, f"{temp}-seed{sweep.seed}", sweep.name + (f"-{rest}" if rest else "")]
    return Path(*[replay.safe_component(p) for p in parts])


def export_sweeps(results, out_dir, suite: str | None = None) -> list[Path]:
    """Write every sweep as ``OUT/<model>/<dataset>/<T-seed>/<policy.knob…>/<metric>/B{value}.json`` plus
    ``features.json`` and ``sweep.json``: ``qval replay`` reads each metric folder like a released sweep."""
    written = []
    for sweep in own_sweeps(results, suite):
        for metric, table in sweep.tables.items():
            folder = Path(out_dir) / _folder_name(sweep) / metric
            replay.write_sweep(folder, table, sweep.features, meta=sweep.meta(metric))
            written.append(folder)
    return written


def headroom_rows(sweeps: list[OwnSweep], folds: int = 5, seed: int = 0) -> pd.DataFrame:
    """One row per (sweep, metric): best fixed value, per-sample oracle, held-out selector, gains with CIs, n."""
    return pd.DataFrame([row for sweep in sweeps for row in sweep_headroom(sweep, folds, seed)])


def sweep_headroom(sweep: OwnSweep, folds: int = 5, seed: int = 0) -> list[dict]:
    """The rows of ``headroom_rows`` for one sweep (one per metric it has values for)."""
    rows = []
    for metric in sweep.tables:
        try:
            result = replay.evaluate(sweep.as_replay(metric), folds=folds, seed=seed)
        except ValueError:  # e.g. no sample has a value at every setting
            continue
        room = replay.headroom(result)
        selector = next((r for r in result.rows if r.kind == "selector"), None)
        rows.append(
            {
                "model": sweep.model,
                "dataset": sweep.dataset,
                "temperature": sweep.temperature,
                "seed": sweep.seed,
                "policy": sweep.policy,
                "knob": sweep.knob,
                "metric": metric,
                "values": ",".join(str(v) for v in result.candidates),
                "best_fixed_value": room["best_fixed_size"],
                "best_fixed": room["best_fixed"],
                "best_fixed_ci": [result.row("best-fixed").value.ci_low, result.row("best-fixed").value.ci_high],
                "oracle": room["oracle"],
                "oracle_ci": [result.row("oracle").value.ci_low, result.row("oracle").value.ci_high],
                "oracle_gain": room["relative_gain"],
                "oracle_gain_ci": room["relative_gain_ci"],
                "selector": selector.value.value if selector else None,
                "selector_gain": selector.gain_vs_best_fixed if selector else None,
                "selector_gain_ci": (
                    [selector.gain_ci.ci_low, selector.gain_ci.ci_high]
                    if selector and selector.gain_ci
                    else [None, None]
                ),
                "n": room["n"],
            }
        )
    return rows
