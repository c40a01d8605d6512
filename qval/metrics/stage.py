"""The metric stage: which (cell, metric) values are missing or outdated, and computing exactly those.

Runs inside ingest's transaction, after the rows. A cell's metrics are the metrics its suites list (plus those a
track's reports always read, ``Metric.always``), each at its declared ``version``. A cell whose rows changed gets
all of them recomputed; a finished cell whose rows did not change gets only what is missing or outdated (a metric
added to the suite, a definition whose version was bumped), from its stored rows: no sample is recomputed.
"""

from __future__ import annotations

import importlib
import json
import sys
from collections import defaultdict
from datetime import UTC, datetime

import numpy as np
import pandas as pd
import pyarrow as pa

from ..errors import PluginError
from ..registry import REGISTRY
from ..stats import MetricValue, bootstrap_ratios_many
from ..store.db import registered, rows_view
from ..tracks import board_of, sample_tables
from .base import Deferred, ListCount, Metric, MetricView


def _view(track: str) -> MetricView:
    module, _, attr = sample_tables()[track].view.partition(":")
    return getattr(importlib.import_module(module), attr)


def _suite_configs(con) -> dict[str, dict]:
    """Every suite's config (its plan's suite file), by suite name."""
    return {s: json.loads(c) if c else {} for s, c in con.execute("SELECT suite, config FROM suites").fetchall()}


def _catalogue(suites: dict[str, dict]) -> dict[tuple[str, str], Metric]:
    """Every usable registered metric by (track, name): suites name metrics, and one name may have a definition per
    track (per_state_spearman over candidates, or over stored per-state values). A metric plugin that fails to load
    or names itself otherwise stops the ingest only if a suite lists it; otherwise it is skipped with a warning."""
    listed = {
        name
        for config in suites.values()
        for section in config.values()
        if isinstance(section, dict)
        for name in section.get("metrics") or []
    }
    out = {}
    for name in REGISTRY.names("metrics"):
        try:
            metric = REGISTRY.get("metrics", name)()  # get: a nameless metric is given its entry-point name
            _check_reads(metric)
        except PluginError as exc:
            if name in listed:
                raise
            print(f"warning: metric plugin skipped (no suite lists it): {exc}", file=sys.stderr)
            continue
        out[(metric.track, metric.name)] = metric
    return out


def _check_reads(metric: Metric) -> None:
    """A name in ``reads`` that the track's view does not have would be silently absent from the samples, and the
    metric would quietly report "undefined": refuse it instead."""
    if metric.track not in sample_tables():
        raise PluginError(f"metric '{metric.name}' belongs to track '{metric.track}', which is not installed")
    unknown = [c for c in metric.reads if c not in _view(metric.track).columns]
    if unknown:
        raise PluginError(
            f"metric '{metric.name}' reads {unknown}, which the {metric.track} metric view does not have; "
            f"choose from {sorted(_view(metric.track).columns)}"
        )


def wanted(con, suites: dict[str, dict], catalogue: dict[tuple[str, str], Metric]) -> dict[str, dict[str, Metric]]:
    """Per ingested cell (one with rows read at least once), the metrics it should have, by name."""
    cells = con.execute(
        "SELECT c.cell_id, c.track, list(sc.suite) FROM cells c LEFT JOIN suite_cells sc "
        "ON sc.cell_id = c.cell_id WHERE c.parts_sig IS NOT NULL GROUP BY c.cell_id, c.track"
    ).fetchall()
    always: dict[str, dict[str, Metric]] = defaultdict(dict)
    for (track, name), metric in catalogue.items():
        if metric.always:
            always[track][name] = metric
    out: dict[str, dict[str, Metric]] = {}
    for cell_id, track, member_of in cells:
        chosen = dict(always[track])
        for suite in member_of or []:
            # The section of the track that shows this kind of cells (imported per-state cells: Q-alignment's).
            section = (suites.get(suite) or {}).get(board_of(track)) or {}
            for name in section.get("metrics", []):
                if (track, name) in catalogue:
                    chosen[name] = catalogue[(track, name)]
        out[cell_id] = chosen
    return out


def compute_metrics(con, changed: list[str]) -> int:
    """Compute what is missing or outdated; everything for the changed cells and for decode cells whose AR baseline
    changed; drop values no suite of the cell asks for any more (they would otherwise be shown at an old version).
    Returns the number of metric values written."""
    suites = _suite_configs(con)
    catalogue = _catalogue(suites)
    want = wanted(con, suites, catalogue)
    dependants = (
        con.execute("SELECT cell_id FROM cells WHERE baseline_cell_id IN (SELECT unnest(?))", [changed]).fetchall()
        if changed
        else []
    )
    redo = set(changed) | {r[0] for r in dependants}
    # Cells whose values predate the metric stage (no metric family recorded) are redone whole, once.
    redo |= {
        r[0] for r in con.execute("SELECT DISTINCT cell_id FROM cell_metrics WHERE metric_family IS NULL").fetchall()
    }
    if redo:
        ids = sorted(redo)
        for table in ("cell_metrics", "metric_versions", "metric_units"):
            con.execute(f"DELETE FROM {table} WHERE cell_id IN (SELECT unnest(?))", [ids])
    _forget_unwanted(con, want)
    stored: dict[str, dict[str, int]] = defaultdict(dict)
    for cell_id, metric, version in con.execute("SELECT cell_id, metric, version FROM metric_versions").fetchall():
        stored[cell_id][metric] = version
    todo: dict[str, list[Metric]] = {}
    for cell_id, metrics in want.items():
        missing = [m for name, m in metrics.items() if stored[cell_id].get(name) != m.version]
        if missing:
            todo[cell_id] = missing
    if not todo:
        return 0
    _delete_pairs(con, pd.DataFrame([(c, m.name) for c, ms in todo.items() for m in ms], columns=["cell_id", "metric"]))
    values, units = _compute(con, todo)
    now = datetime.now(UTC).replace(tzinfo=None)
    if values:
        with rows_view(con, "qval_new_values", _VALUES, values):
            con.execute(
                "INSERT INTO cell_metrics (cell_id, metric, value, ci_low, ci_high, n, higher_is_better, label, "
                "n_states, metric_family) SELECT * FROM qval_new_values"
            )
    with rows_view(
        con, "qval_new_versions", _VERSIONS, [[c, m.name, m.version, now] for c, ms in todo.items() for m in ms]
    ):
        con.execute(
            "INSERT INTO metric_versions (cell_id, metric, version, computed_at) SELECT * FROM qval_new_versions"
        )
    if units:
        frame = pd.concat(units, ignore_index=True)
        with registered(con, "qval_metric_units", frame):
            con.execute("INSERT INTO metric_units SELECT cell_id, metric, unit, cluster, value FROM qval_metric_units")
    return len(values)


# The rows _compute and compute_metrics write, as Arrow types (one INSERT each, not one per row).
_VALUES = pa.schema(
    [
        ("cell_id", pa.string()),
        ("metric", pa.string()),
        ("value", pa.float64()),
        ("ci_low", pa.float64()),
        ("ci_high", pa.float64()),
        ("n", pa.int64()),
        ("higher_is_better", pa.bool_()),
        ("label", pa.string()),
        ("n_states", pa.int64()),
        ("metric_family", pa.string()),
    ]
)
_VERSIONS = pa.schema(
    [("cell_id", pa.string()), ("metric", pa.string()), ("version", pa.int64()), ("computed_at", pa.timestamp("us"))]
)
_TABLE_COLUMNS = (("cell_metrics", "metric_family"), ("metric_versions", "metric"), ("metric_units", "metric"))


def _delete_pairs(con, pairs: pd.DataFrame) -> None:
    """Delete the stored values, versions and units of these (cell_id, metric) pairs."""
    with registered(con, "qval_metric_pairs", pairs):
        for table, column in _TABLE_COLUMNS:
            con.execute(
                f"DELETE FROM {table} USING qval_metric_pairs t WHERE {table}.cell_id = t.cell_id "
                f"AND {table}.{column} = t.metric"
            )


def _forget_unwanted(con, want: dict[str, dict[str, Metric]]) -> None:
    """Values of a metric that no suite of the cell lists any more (or of a cell in no suite): never back-filled
    again, so they would sit beside current values at an old version. A cell in two suites keeps the union."""
    stored = con.execute("SELECT DISTINCT cell_id, metric FROM metric_versions").fetchall()
    stale = [(c, m) for c, m in stored if m not in want.get(c, {})]
    if stale:
        _delete_pairs(con, pd.DataFrame(stale, columns=["cell_id", "metric"]))


def _compute(con, todo: dict[str, list[Metric]]) -> tuple[list[list], list[pd.DataFrame]]:
    # Each cell with the run its AR baseline was measured in: speedups are only defined within one run.
    cells = con.execute(
        "SELECT c.*, b.run_id AS baseline_run_id FROM cells c "
        "LEFT JOIN cells b ON b.cell_id = c.baseline_cell_id "
        "WHERE c.cell_id IN (SELECT unnest(?))",
        [sorted(todo)],
    ).df()
    values: list[list] = []
    units: list[pd.DataFrame] = []
    for track, group in cells.groupby("track"):
        # The AR cell is its own baseline (speedup 1, lossless 1).
        baseline_ids = {
            cid: (b if isinstance(b, str) else cid) for cid, b in zip(group["cell_id"], group["baseline_cell_id"])
        }
        needed = set(group["cell_id"])
        needed |= {baseline_ids[c] for c in group["cell_id"] if any(m.needs_baseline for m in todo[c])}
        metrics = [m for c in group["cell_id"] for m in todo[c]]
        samples, empty = _samples_by_cell(con, str(track), sorted(needed), metrics)
        waiting = _Waiting(values)
        for cell in group.to_dict("records"):
            own = samples.get(cell["cell_id"], empty)
            base = samples.get(baseline_ids[cell["cell_id"]], empty)
            for metric in todo[cell["cell_id"]]:
                paired = base if metric.needs_baseline else None
                if metric.stores_units:
                    value, per_unit = metric.compute_with_units(own, paired, cell)
                    waiting.add(cell["cell_id"], metric, _computed(value))
                    if per_unit is not None and len(per_unit):
                        units.append(per_unit.assign(cell_id=cell["cell_id"], metric=metric.name))
                else:
                    waiting.add(cell["cell_id"], metric, metric.deferred(own, paired, cell))
        waiting.flush()
    return values, units


def _computed(value: MetricValue | dict[str, MetricValue]) -> Deferred:
    return Deferred(lambda _: value)


class _Waiting:
    """Metric values whose ratio bootstraps wait to be answered together (``stats.bootstrap_ratios_many``: one
    product per sample size instead of one per metric per cell), appended to ``values`` in the order they were
    added. Flushed when the columns held reach ``_HELD``, which bounds the memory they take."""

    _HELD = 20_000_000  # float64 elements of the requests' columns (160 MB)

    def __init__(self, values: list[list]) -> None:
        self.values = values
        self.pending: list[tuple[str, Metric, Deferred]] = []
        self.held = 0

    def add(self, cell_id: str, metric: Metric, deferred: Deferred) -> None:
        self.pending.append((cell_id, metric, deferred))
        self.held += sum(r.columns.size for r in deferred.requests)
        if self.held >= self._HELD:
            self.flush()

    def flush(self) -> None:
        answers = bootstrap_ratios_many([r for _, _, d in self.pending for r in d.requests])
        at = 0
        for cell_id, metric, deferred in self.pending:
            value = deferred.finish(answers[at : at + len(deferred.requests)])
            at += len(deferred.requests)
            # A metric family (e.g. per-position acceptance) returns {name: value}.
            named = value if isinstance(value, dict) else {metric.name: value}
            for name, v in named.items():
                self.values.append(
                    [
                        cell_id,
                        name,
                        v.value,
                        v.ci_low,
                        v.ci_high,
                        v.n,
                        metric.higher_is_better,
                        metric.label,
                        v.n_states,
                        metric.name,
                    ]
                )
        self.pending, self.held = [], 0


def _samples_by_cell(
    con, track: str, cell_ids: list[str], metrics: list[Metric]
) -> tuple[dict[str, pd.DataFrame], pd.DataFrame]:
    """The rows the metrics read, of many cells in one scan, split by cell, plus an empty frame of the same columns
    for cells with none. Only the columns the metrics declare are read (all, if one declares none)."""
    view = _view(track)
    if any(not m.reads for m in metrics):
        names = list(view.columns)
    else:
        reads = {c for m in metrics for c in m.reads}
        names = [c for c in view.columns if c in reads or c in ("cell_id", "sample_id")]
    counted = {c: spec for c in names if isinstance(spec := view.columns[c], ListCount)}
    lists = sorted({spec.column for spec in counted.values()})
    select = ", ".join(
        [f"{view.columns[c]} AS {c}" for c in names if c not in counted] + [f"{c} AS qval_list_{c}" for c in lists]
    )
    table = sample_tables()[track].table
    sql = f"SELECT {select} FROM {table} WHERE cell_id IN (SELECT unnest(?)) AND {view.keep} ORDER BY {view.order}"
    frame = _with_list_counts(con, sql, [cell_ids], names, counted) if counted else con.execute(sql, [cell_ids]).df()
    by_cell = {cid: g.reset_index(drop=True) for cid, g in frame.groupby("cell_id", sort=False)}
    return by_cell, frame.iloc[0:0]


_COUNT_BATCH = 65_536  # rows per fetched batch: bounds the memory the list elements of one batch take


def _with_list_counts(con, sql: str, params: list, names: list[str], counted: dict[str, ListCount]) -> pd.DataFrame:
    """The query's rows with each ListCount column counted from its fetched list (which is then dropped), in the
    order ``names`` gives. Converted to pandas by DuckDB, as the rows without ListCount columns are, so a column
    has the same dtype either way."""
    reader = con.sql(sql, params=params).to_arrow_reader(_COUNT_BATCH)
    schema = pa.schema([pa.field(c, pa.int64()) if c in counted else reader.schema.field(c) for c in names])
    batches = []
    for batch in reader:
        columns = {c: batch.column(c) for c in names if c not in counted}
        for column in {spec.column for spec in counted.values()}:
            mine = {c: spec.at_least for c, spec in counted.items() if spec.column == column}
            columns.update(_list_counts(batch.column(f"qval_list_{column}"), mine))
        batches.append(pa.RecordBatch.from_pydict({c: columns[c] for c in names}, schema=schema))
    with registered(con, "qval_view_rows", pa.Table.from_batches(batches, schema=schema)):
        return con.execute("SELECT * FROM qval_view_rows").df()


def _list_counts(lists: pa.ListArray, at_least: dict[str, int]) -> dict[str, pa.Array]:
    """Per row, the elements of an integer list that are at least each threshold, all thresholds in one pass: each
    element falls in a bucket (below the lowest threshold, at one of them, above the highest), one bincount gives
    every row's bucket counts, and a count "at least t" sums the buckets from t's up."""
    if not pa.types.is_integer(lists.type.value_type):
        raise TypeError(f"ListCount needs a list of integers, not {lists.type}")
    offsets = lists.offsets.to_numpy()
    values = lists.values.slice(offsets[0], offsets[-1] - offsets[0])
    low, high = min(at_least.values()), max(at_least.values())
    elements = values.fill_null(low - 1).to_numpy() if values.null_count else values.to_numpy()
    width = high - low + 2  # bucket 0: below low; bucket b: exactly low + b - 1; the last: high and above
    buckets = np.clip(elements, low - 1, high).astype(np.int64) - (low - 1)
    rows = np.repeat(np.arange(len(lists), dtype=np.int64), np.diff(offsets))
    per_bucket = np.bincount(rows * width + buckets, minlength=len(lists) * width).reshape(len(lists), width)
    at_or_above = np.cumsum(per_bucket[:, ::-1], axis=1)[:, ::-1]
    missing = lists.is_null().to_numpy(zero_copy_only=False)
    return {
        name: pa.array(at_or_above[:, t - low + 1], type=pa.int64(), mask=missing if missing.any() else None)
        for name, t in at_least.items()
    }
