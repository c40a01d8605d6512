"""Read results as pandas DataFrames (read-only connections; safe beside a running ingest's readers)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from .store.db import connect_reader
from .store.tables import BOARD_TRACKS, SAMPLE_TABLES


def _query(results, sql: str, params=None) -> pd.DataFrame:
    con = connect_reader(Path(results))
    try:
        return con.execute(sql, params or []).df()
    finally:
        con.close()


def suites(results="results") -> pd.DataFrame:
    return _query(results, "SELECT * FROM suites ORDER BY suite")


def runs(results="results") -> pd.DataFrame:
    return _query(results, "SELECT * FROM runs ORDER BY started_at")


def cells(results="results", suite: str | None = None) -> pd.DataFrame:
    if suite is None:
        return _query(results, "SELECT * FROM cells ORDER BY track, model, method, dataset, temperature, seed")
    return _query(
        results,
        "SELECT c.* FROM cells c JOIN suite_cells s USING (cell_id) WHERE s.suite = ? "
        "ORDER BY track, model, method, dataset, temperature, seed",
        [suite],
    )


def method_labels(cells: pd.DataFrame) -> dict[str, str]:
    """Row names for a leaderboard: the method name, plus the params that differ between cells of that method
    (``prompt-lookup(num_draft=8)``), so two settings of one plugin never share a name."""
    params = {
        cid: (json.loads(ident) or {}).get("method_params") or {} if ident else {}
        for cid, ident in zip(cells["cell_id"], cells["identity"])
    }
    labels = {}
    for method, group in cells.groupby("method"):
        ids = list(group["cell_id"])
        keys = sorted({k for cid in ids for k in params[cid]})
        varying = [k for k in keys if len({json.dumps(params[cid].get(k), sort_keys=True) for cid in ids}) > 1]
        for cid in ids:
            shown = ",".join(f"{k}={_show(params[cid].get(k))}" for k in varying)
            labels[cid] = f"{method}({shown})" if shown else method
    return labels


def _show(value) -> str:
    return "+".join(map(str, value)) if isinstance(value, list) else str(value)


def metrics(results="results", suite: str | None = None) -> pd.DataFrame:
    """Long form: one row per (cell, metric) with value, ci_low, ci_high, n (NULL → NaN/None when undefined).

    ``method`` is the plugin name; ``method_label`` adds the params that distinguish cells of one method.
    """
    base = (
        "SELECT c.track, c.model, c.method, c.family, c.dataset, c.dataset_label, c.temperature, c.seed, "
        "c.status, c.n_samples, c.n_failed, c.identity, m.* FROM cell_metrics m JOIN cells c USING (cell_id)"
    )
    if suite is None:
        frame = _query(results, base)
    else:
        frame = _query(results, base + " JOIN suite_cells s USING (cell_id) WHERE s.suite = ?", [suite])
    labels = {}
    for _, track in frame.drop_duplicates("cell_id").groupby("track"):
        labels.update(method_labels(track))
    frame["method_label"] = frame["cell_id"].map(labels)
    return frame.drop(columns=["identity"])


def decode_sample_summary(results="results", suite: str | None = None) -> pd.DataFrame:
    """Per (cell, sample, turn): acceptance length τ = 1 + accepted/steps, decode time, tokens (for plots)."""
    sql = (
        "SELECT t.cell_id, t.sample_id, t.turn, 1 + coalesce(list_sum(t.accepted), 0) / t.target_steps AS tau, "
        "t.decode_s, t.new_tokens FROM decode_samples t {join} WHERE t.error IS NULL AND t.target_steps > 0 {where}"
    )
    if suite is None:
        return _query(results, sql.format(join="", where=""))
    return _query(results, sql.format(join="JOIN suite_cells s USING (cell_id)", where="AND s.suite = ?"), [suite])


def failure_reasons(results="results", suite: str = "", track: str = "qalign", top: int = 5) -> pd.DataFrame:
    """Per cell with failed samples: its most frequent error messages and how many samples each hit."""
    table = SAMPLE_TABLES[track]
    sql = (
        f"SELECT cell_id, error, count(DISTINCT sample_id) AS samples FROM {table} t "
        "JOIN suite_cells s USING (cell_id) WHERE s.suite = ? AND t.error IS NOT NULL GROUP BY 1, 2"
    )
    frame = _query(results, sql, [suite])
    if frame.empty:
        return frame
    frame = frame.sort_values(["cell_id", "samples", "error"], ascending=[True, False, True])
    return frame.groupby("cell_id", sort=False).head(top).reset_index(drop=True)


def units(results="results", suite: str | None = None, metric: str = "per_state_spearman") -> pd.DataFrame:
    """The per-unit values behind a metric (per evaluation point, with its state as ``cluster``), as the metric
    stage stored them: what paired tests and family aggregates resample. Columns cell_id, unit, cluster, value."""
    if suite is None:
        return _query(
            results,
            "SELECT cell_id, unit, cluster, value FROM metric_units WHERE metric = ? ORDER BY cell_id, unit",
            [metric],
        )
    return _query(
        results,
        "SELECT u.cell_id, u.unit, u.cluster, u.value FROM metric_units u JOIN suite_cells s "
        "USING (cell_id) WHERE s.suite = ? AND u.metric = ? ORDER BY u.cell_id, u.unit",
        [suite, metric],
    )


def samples(results="results", track: str = "decode", suite: str | None = None) -> pd.DataFrame:
    table = SAMPLE_TABLES[track]
    if suite is None:
        return _query(results, f"SELECT * FROM {table}")
    return _query(results, f"SELECT t.* FROM {table} t JOIN suite_cells s USING (cell_id) WHERE s.suite = ?", [suite])


def leaderboard(results="results", suite: str | None = None, track: str = "qalign") -> pd.DataFrame:
    """Wide form: one row per cell; columns ``<metric>``, ``<metric>__lo``, ``<metric>__hi``, ``<metric>__n`` and
    ``<metric>__n_states`` (distinct states behind a count of evaluation points; NaN where not applicable)."""
    long = metrics(results, suite)
    long = long[long["track"].isin(BOARD_TRACKS.get(track, (track,)))]
    keys = [
        "cell_id",
        "model",
        "method",
        "method_label",
        "family",
        "dataset_label",
        "temperature",
        "seed",
        "status",
        "n_samples",
        "n_failed",
    ]
    if long.empty:
        return pd.DataFrame(columns=keys)
    info = long[keys].drop_duplicates("cell_id").set_index("cell_id")
    info["model"] = info["model"].fillna("–")
    if "n_states" not in long:
        long = long.assign(n_states=np.nan)
    wide = long.pivot(index="cell_id", columns="metric", values=["value", "ci_low", "ci_high", "n", "n_states"])
    columns = {}
    for metric in sorted(long["metric"].unique()):
        columns[metric] = wide[("value", metric)]
        columns[f"{metric}__lo"] = wide[("ci_low", metric)]
        columns[f"{metric}__hi"] = wide[("ci_high", metric)]
        columns[f"{metric}__n"] = wide[("n", metric)]
        columns[f"{metric}__n_states"] = wide[("n_states", metric)]
    # One concat, not a column at a time: pandas warns (PerformanceWarning) on a frame built column by column.
    out = pd.concat([info, pd.DataFrame(columns, index=wide.index)], axis=1)
    return out.reset_index().rename(
        columns={"dataset_label": "dataset", "method": "method_name", "method_label": "method"}
    )
