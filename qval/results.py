"""Read results as pandas DataFrames (read-only connections; safe beside a running ingest's readers)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd

from .errors import UsageError
from .store.db import connect_reader
from .tracks import board_kinds, sample_tables

# The connection `reading` opened, with the folder it reads: every read inside it shares that one connection.
_SHARED: ContextVar[tuple[Path, duckdb.DuckDBPyConnection] | None] = ContextVar("qval_shared_reader", default=None)


@contextmanager
def reading(results) -> Iterator[None]:
    """One read-only connection for every read inside the block: a report makes dozens, and each connection costs
    tens of milliseconds to open. The database stays open for reading until the block ends."""
    path = Path(results).resolve()
    con = connect_reader(path)
    token = _SHARED.set((path, con))
    try:
        yield
    finally:
        _SHARED.reset(token)
        con.close()


@contextmanager
def connection(results) -> Iterator[duckdb.DuckDBPyConnection]:
    """A read-only connection: the shared one inside ``reading`` for the same folder, otherwise one of its own."""
    shared = _SHARED.get()
    if shared is not None and shared[0] == Path(results).resolve():
        yield shared[1]
        return
    con = connect_reader(Path(results))
    try:
        yield con
    finally:
        con.close()


def query(results, sql: str, params=None) -> pd.DataFrame:
    """One read-only query's result (tracks' own readers use it too)."""
    with connection(results) as con:
        return con.execute(sql, params or []).df()


def suites(results="results") -> pd.DataFrame:
    return query(results, "SELECT * FROM suites ORDER BY suite")


def runs(results="results") -> pd.DataFrame:
    return query(results, "SELECT * FROM runs ORDER BY started_at")


def cells(results="results", suite: str | None = None) -> pd.DataFrame:
    if suite is None:
        return query(results, "SELECT * FROM cells ORDER BY track, model, method, dataset, temperature, seed")
    return query(
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
        frame = query(results, base)
    else:
        frame = query(results, base + " JOIN suite_cells s USING (cell_id) WHERE s.suite = ?", [suite])
    labels = {}
    for _, track in frame.drop_duplicates("cell_id").groupby("track"):
        labels.update(method_labels(track))
    frame["method_label"] = frame["cell_id"].map(labels)
    return frame.drop(columns=["identity"])


def _table(track: str) -> str:
    """The sample table of a track (or of a kind of cells it shows); an unknown name is a usage error."""
    tables = sample_tables()
    if track not in tables:
        raise UsageError(f"no track '{track}'; installed: {', '.join(sorted(tables)) or 'none'}")
    return tables[track].table


def failure_reasons(results="results", suite: str = "", track: str = "", top: int = 5) -> pd.DataFrame:
    """Per cell of one track with failed samples: its most frequent error messages and how many samples each hit."""
    table = _table(track)
    sql = (
        f"SELECT cell_id, error, count(DISTINCT sample_id) AS samples FROM {table} t "
        "JOIN suite_cells s USING (cell_id) WHERE s.suite = ? AND t.error IS NOT NULL GROUP BY 1, 2"
    )
    frame = query(results, sql, [suite])
    if frame.empty:
        return frame
    frame = frame.sort_values(["cell_id", "samples", "error"], ascending=[True, False, True])
    return frame.groupby("cell_id", sort=False).head(top).reset_index(drop=True)


def units(results="results", suite: str | None = None, metric: str = "per_state_spearman") -> pd.DataFrame:
    """The per-unit values behind a metric (per evaluation point, with its state as ``cluster``), as the metric
    stage stored them: what paired tests and family aggregates resample. Columns cell_id, unit, cluster, value."""
    if suite is None:
        return query(
            results,
            "SELECT cell_id, unit, cluster, value FROM metric_units WHERE metric = ? ORDER BY cell_id, unit",
            [metric],
        )
    return query(
        results,
        "SELECT u.cell_id, u.unit, u.cluster, u.value FROM metric_units u JOIN suite_cells s "
        "USING (cell_id) WHERE s.suite = ? AND u.metric = ? ORDER BY u.cell_id, u.unit",
        [suite, metric],
    )


def samples(results="results", track: str = "", suite: str | None = None) -> pd.DataFrame:
    """Every stored row of one track's sample table (of one suite, or all)."""
    table = _table(track)
    if suite is None:
        return query(results, f"SELECT * FROM {table}")
    return query(results, f"SELECT t.* FROM {table} t JOIN suite_cells s USING (cell_id) WHERE s.suite = ?", [suite])


def leaderboard(results="results", suite: str | None = None, track: str = "") -> pd.DataFrame:
    """Wide form: one row per cell (cells of one grid point but different kinds share one: ``_share_rows``);
    columns ``<metric>``, ``<metric>__lo``, ``<metric>__hi``, ``<metric>__n`` and ``<metric>__n_states`` (distinct
    states behind a count of evaluation points; NaN where not applicable)."""
    long = metrics(results, suite)
    long = long[long["track"].isin(board_kinds(track))]
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
    kinds = long.drop_duplicates("cell_id").set_index("cell_id")["track"]
    out = _share_rows(out, kinds.reindex(out.index), board_kinds(track), sorted(long["metric"].unique()))
    return out.reset_index().rename(
        columns={"dataset_label": "dataset", "method": "method_name", "method_label": "method"}
    )


_ROW_KEY = ["model", "method", "method_label", "dataset_label", "temperature", "seed"]


def _share_rows(board: pd.DataFrame, kinds: pd.Series, order: tuple[str, ...], metrics: list[str]) -> pd.DataFrame:
    """Cells of one board that are the same method on the same grid point (model, method and its params, dataset,
    temperature, seed) but of different kinds (Q-alignment's points and its guided episodes) share a row: the first
    kind's cell gives the row (its id, status, counts), the others add their metrics. Rows merge only where the key
    picks one cell of each kind and their metrics do not overlap; otherwise each cell keeps its own row.
    ``other_cells`` lists the ids of the cells merged into a row."""
    board = board.assign(other_cells="")
    if kinds.nunique() < 2:
        return board
    rank = kinds.map({kind: i for i, kind in enumerate(order)}).fillna(len(order))
    # str() of each value (a missing one is "nan"): pandas' astype(str) keeps missing values missing, and join fails.
    keyed = pd.Series(["\x1f".join(map(str, row)) for row in board[_ROW_KEY].itertuples(index=False)], board.index)
    drop = []
    for _, ids in keyed.groupby(keyed).groups.items():
        if len(ids) < 2 or kinds[ids].duplicated().any():
            continue
        ids = sorted(ids, key=lambda cid: rank[cid])
        filled = [set(m for m in metrics if pd.notna(board.at[cid, m])) for cid in ids]
        if any(a & b for i, a in enumerate(filled) for b in filled[i + 1 :]):
            continue
        head = ids[0]
        for other, mine in zip(ids[1:], filled[1:]):
            for metric in mine:
                for column in (metric, *(f"{metric}__{s}" for s in ("lo", "hi", "n", "n_states"))):
                    board.at[head, column] = board.at[other, column]
        board.at[head, "other_cells"] = ",".join(ids[1:])
        drop += ids[1:]
    return board.drop(index=drop)


# The cells row a samples frame carries (attrs["cell"]), as find_cell returns it.
_CELL_FIELDS = ("cell_id", "track", "model", "method", "dataset_label", "temperature", "seed", "status", "n_samples")


def find_cell(results, cell: str) -> dict:
    """The cells row of a cell id, or of a unique prefix of one (as `qval plan` and reports show them). An unknown
    id, or a prefix of several ids none of which it equals, is a usage error that names the closest cells."""
    import difflib

    frame = query(results, f"SELECT {', '.join(_CELL_FIELDS)} FROM cells")
    wanted = cell.strip().lower()
    # An exact id wins over the longer ids it is a prefix of: a full id must always name its cell.
    exact = frame[frame["cell_id"] == wanted]
    matches = exact if len(exact) else frame[frame["cell_id"].str.startswith(wanted)] if wanted else frame.iloc[0:0]
    if len(matches) == 1:
        return matches.iloc[0].to_dict()

    def show(rows: pd.DataFrame) -> str:
        return "; ".join(
            f"{r.cell_id[:12]} ({r.model or '–'}/{r.method}, {r.dataset_label})" for r in rows.itertuples()
        )

    if len(matches) > 1:
        raise UsageError(
            f"cell id prefix {cell!r} matches {len(matches)} cells: {show(matches.head(8))}; give more of it"
        )
    close = difflib.get_close_matches(wanted, [c[: max(len(wanted), 8)] for c in frame["cell_id"]], n=5, cutoff=0.3)
    near = frame[frame["cell_id"].map(lambda c: c[: max(len(wanted), 8)] in close)] if close else frame.head(5)
    hint = f"closest: {show(near)}" if len(near) else "the database holds no cells"
    raise UsageError(f"no cell {cell!r} in {Path(results)}; {hint}. `qval plan SUITE` or a report lists the cell ids")


def cell_samples(cell: str, results="results", limit: int | None = None) -> pd.DataFrame:
    """The stored samples of one cell (an id or a unique prefix), in order: what a researcher reads to debug it.

    Q-alignment: one row per candidate (action, ref_q, score, error); the point's transcript, ``requests`` (a list
    of dicts: kind, prompt, reply, parsed, parse_error, memo, capped), sits on its first candidate's row. Decoding:
    one row per turn with ``output_text`` and the acceptance per target step (``drafted``, ``accepted``,
    ``accepted_chars``); token ids are left out. ``limit`` keeps the first N samples (points or prompts), all their
    rows. A point scored in one call with others lists them in ``batch`` (the batch's requests sit on the first).
    The frame's ``attrs["cell"]`` holds the cell's row of the cells table, ``attrs["prepare_requests"]`` the
    requests the scorer sent while preparing the cell (once per cell, before any point; a list of dicts)."""
    info = find_cell(results, cell)
    return cells_samples([info["cell_id"]], results, limit)[info["cell_id"]]


def cells_samples(cell_ids, results="results", limit: int | None = None) -> dict[str, pd.DataFrame]:
    """``cell_samples`` of many cells (full ids) at once: one connection and one query per track, not one per cell
    (a report writes a drill-down page for every row)."""
    wanted = list(dict.fromkeys(cell_ids))
    with connection(results) as con:
        info = con.execute("SELECT * FROM cells WHERE cell_id IN (SELECT unnest(?))", [wanted]).df()
        prepared = con.execute(
            "SELECT cell_id, requests FROM prepare_requests WHERE cell_id IN (SELECT unnest(?))", [wanted]
        ).df()
        frames: dict[str, pd.DataFrame] = {}
        for track, group in info.groupby("track", sort=False):
            spec = sample_tables().get(track)
            if spec is None:  # a cell of a track not installed here: its rows cannot be read, only its record
                frames.update({c: pd.DataFrame({"sample_id": []}) for c in group["cell_id"]})
                continue
            table, column = spec.table, spec.listing_order
            select = "* EXCLUDE (" + ", ".join(spec.listing_drop) + ")" if spec.listing_drop else "*"
            # Only constants are formatted in; ids and the limit are parameters (a NULL limit keeps every sample).
            # The first samples are chosen by row id over two columns, then only their rows are read whole: ranking
            # every row with all its columns (texts, token lists) sorted a million rows to keep a report's 50,000.
            rows = con.execute(
                f"SELECT {select} FROM {table} WHERE rowid IN (SELECT _r FROM (SELECT rowid "
                "AS _r, dense_rank() OVER (PARTITION BY cell_id ORDER BY sample_id) AS _k FROM "
                f"{table} WHERE cell_id IN (SELECT unnest(?))) WHERE ? IS NULL OR _k <= ?) "
                f"ORDER BY cell_id, sample_id, {column}",
                [group["cell_id"].tolist(), limit, None if limit is None else max(int(limit), 0)],
            ).df()
            by_cell = dict(tuple(rows.groupby("cell_id", sort=False))) if len(rows) else {}
            for cell_id in group["cell_id"]:
                frame = by_cell.get(cell_id, rows.iloc[0:0]).drop(columns="cell_id").reset_index(drop=True)
                frames[cell_id] = frame
    out = {}
    records = {r["cell_id"]: r for r in info.to_dict("records")}
    for cell_id in wanted:
        if cell_id not in frames:
            continue
        frame = frames[cell_id]
        frame.attrs["cell"] = {k: records[cell_id][k] for k in _CELL_FIELDS}
        mine = prepared[prepared["cell_id"] == cell_id]["requests"]
        frame.attrs["prepare_requests"] = [q for r in mine if r is not None for q in list(r)]
        out[cell_id] = frame
    return out
