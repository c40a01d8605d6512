"""Read results as pandas DataFrames (read-only connections; safe beside a running ingest's readers)."""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from .store.db import connect_reader
from .store.tables import SAMPLE_TABLES


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
    return _query(results, "SELECT c.* FROM cells c JOIN suite_cells s USING (cell_id) WHERE s.suite = ? "
                           "ORDER BY track, model, method, dataset, temperature, seed", [suite])


def metrics(results="results", suite: str | None = None) -> pd.DataFrame:
    """Long form: one row per (cell, metric) with value, ci_low, ci_high, n (NULL → NaN/None when undefined)."""
    base = ("SELECT c.track, c.model, c.method, c.family, c.dataset, c.dataset_label, c.temperature, c.seed, "
            "c.status, c.n_samples, c.n_failed, m.* FROM cell_metrics m JOIN cells c USING (cell_id)")
    if suite is None:
        return _query(results, base)
    return _query(results, base + " JOIN suite_cells s USING (cell_id) WHERE s.suite = ?", [suite])


def samples(results="results", track: str = "decode", suite: str | None = None) -> pd.DataFrame:
    table = SAMPLE_TABLES[track]
    if suite is None:
        return _query(results, f"SELECT * FROM {table}")
    return _query(results, f"SELECT t.* FROM {table} t JOIN suite_cells s USING (cell_id) WHERE s.suite = ?", [suite])


def leaderboard(results="results", suite: str | None = None, track: str = "qalign") -> pd.DataFrame:
    """Wide form: one row per cell; columns ``<metric>``, ``<metric>__lo``, ``<metric>__hi``, ``<metric>__n``."""
    long = metrics(results, suite)
    long = long[long["track"] == track]
    keys = ["cell_id", "model", "method", "family", "dataset_label", "temperature", "seed", "status",
            "n_samples", "n_failed"]
    if long.empty:
        return pd.DataFrame(columns=keys)
    info = long[keys].drop_duplicates("cell_id").set_index("cell_id")
    info["model"] = info["model"].fillna("–")
    wide = long.pivot(index="cell_id", columns="metric", values=["value", "ci_low", "ci_high", "n"])
    out = info.copy()
    for metric in sorted(long["metric"].unique()):
        out[metric] = wide[("value", metric)]
        out[f"{metric}__lo"] = wide[("ci_low", metric)]
        out[f"{metric}__hi"] = wide[("ci_high", metric)]
        out[f"{metric}__n"] = wide[("n", metric)]
    return out.reset_index().rename(columns={"dataset_label": "dataset"})
