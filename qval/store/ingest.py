"""Ingest: the single writer. Parts → DuckDB per cell in one transaction (delete then insert), then metrics.

Re-ingesting is idempotent: a cell whose parts did not change is skipped, and one that did is replaced whole.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from ..errors import UsageError
from ..metrics.stage import compute_metrics
from ..plan import Plan, plan_sequence
from ..tracks import SampleTable, sample_tables
from .db import connect_writer, registered, rows_view
from .parts import DONE, FAILED, PREPARE, manifest_shortfall, parts_root, read_manifest, read_valid_parts


@dataclass
class IngestReport:
    cells_ingested: int = 0
    cells_unchanged: int = 0
    rows: int = 0
    quarantined: list[str] = field(default_factory=list)
    metrics_computed: int = 0


# Rows written in one statement each (db.rows_view), in the order the statements read them.
_CELL_UPDATES = pa.schema(
    [
        ("cell_id", pa.string()),
        ("status", pa.string()),
        ("n_samples", pa.int64()),
        ("n_failed", pa.int64()),
        ("run_id", pa.string()),
        ("error", pa.string()),
        ("parts_sig", pa.string()),
        ("ingested_at", pa.timestamp("us")),
    ]
)
_SUITE_CELLS = pa.schema([("suite", pa.string()), ("cell_id", pa.string())])
_PLAN_CELLS = pa.schema(
    [
        ("cell_id", pa.string()),
        ("identity_version", pa.int64()),
        ("track", pa.string()),
        ("model", pa.string()),
        ("method", pa.string()),
        ("family", pa.string()),
        ("dataset", pa.string()),
        ("dataset_label", pa.string()),
        ("temperature", pa.float64()),
        ("seed", pa.int64()),
        ("identity", pa.string()),
        ("baseline_cell_id", pa.string()),
        ("adaptive", pa.bool_()),
    ]
)


def _now():
    return datetime.now(UTC).replace(tzinfo=None)


def ingest(results: Path, progress=None) -> IngestReport:
    results = Path(results)
    report = IngestReport()
    con = connect_writer(results)
    # One transaction for everything: rows, cell status and metrics. A kill at any point leaves the database as
    # it was before (DuckDB rolls back an uncommitted transaction on the next open) and the next ingest redoes it;
    # committing rows and metrics separately would let a kill in between leave stale metrics behind unchanged
    # part signatures, which no later ingest would revisit.
    con.execute("BEGIN TRANSACTION")
    try:
        _ingest_runs(con, results)
        _ingest_plans(con, results)
        root = parts_root(results)
        cell_dirs = sorted(p for p in root.iterdir() if p.is_dir()) if root.exists() else []
        known = {
            cid: (track, sig)
            for cid, track, sig in con.execute("SELECT cell_id, track, parts_sig FROM cells").fetchall()
        }
        tables = sample_tables()
        changed: dict[str, list[tuple[str, Path, list[Path], str]]] = {kind: [] for kind in tables}
        uninstalled: dict[str, int] = {}
        for directory in cell_dirs:
            if directory.name not in known:  # parts of a cell no plan describes: leave them alone
                continue
            track, old_sig = known[directory.name]
            before = {p.name for p in directory.glob("part-*.parquet")}
            parts = read_valid_parts(results, directory)
            report.quarantined += sorted(before - {p.name for p in parts})
            sig = _signature(directory, parts)
            if old_sig == sig:
                report.cells_unchanged += 1
                continue
            if track not in changed:  # its track's plugin is not installed here: its parts wait on disk
                uninstalled[track] = uninstalled.get(track, 0) + 1
                continue
            changed[track].append((directory.name, directory, parts, sig))
        for track, count in uninstalled.items():
            print(
                f"qval: {count} cell(s) of track '{track}' not ingested: no such track is installed; their parts "
                "are kept, install the track's plugin and run `qval ingest` again",
                file=sys.stderr,
            )
        for track, cells in changed.items():
            if cells:
                report.rows += _ingest_cells(con, tables[track], cells)
                report.cells_ingested += len(cells)
                if progress:
                    progress(len(cells))
        # Also back-fills finished cells: a metric added to a suite, or a definition whose version changed.
        report.metrics_computed = compute_metrics(con, [c[0] for cells in changed.values() for c in cells])
        _fault_point("before-commit")
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise
    finally:
        con.close()
    return report


def _create_table(con, spec: SampleTable) -> None:
    """A track without a migration of its own (a third-party one) gets its table from its Arrow schema."""
    if con.execute("SELECT count(*) FROM duckdb_tables() WHERE table_name = ?", [spec.table]).fetchall()[0][0]:
        return
    with registered(con, "_qval_schema", spec.schema.empty_table()):
        table = spec.table  # a plain identifier (SampleTable checks)
        con.execute(f"CREATE TABLE {table} AS SELECT * FROM _qval_schema")


def _fault_point(name: str) -> None:
    """Fault injection for the crash tests: QVAL_FAULT_PAUSE=before-commit:SECONDS holds the open transaction so a
    test can kill -9 the ingest inside it. Inert unless that variable is set."""
    spec = os.environ.get("QVAL_FAULT_PAUSE", "")
    if spec.startswith(name + ":"):
        print(f"fault point {name}: pausing", file=sys.stderr, flush=True)
        time.sleep(float(spec.split(":", 1)[1]))


def _signature(directory: Path, parts: list[Path]) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(f"{p.name}:{p.stat().st_size};".encode())
    for marker in (DONE, FAILED, PREPARE):
        if (directory / marker).exists():
            h.update(marker.encode() + (directory / marker).read_bytes())
    return h.hexdigest()[:16]


def _ingest_prepare_requests(con, cells: list[tuple[str, Path, list[Path], str]]) -> None:
    """Replace the changed cells' prepare() requests. The cell id is the folder's, never the file's (a misplaced
    file must not add requests to another cell). An unreadable file is left in place with a warning: the cell's
    scores do not depend on it, so it does not fail the ingest or the cell."""
    con.execute("DELETE FROM prepare_requests WHERE cell_id IN (SELECT unnest(?))", [[c[0] for c in cells]])
    for cell_id, directory, _, _ in cells:
        path = directory / PREPARE
        if not path.exists():
            continue
        try:
            pq.read_metadata(path)
        except Exception as exc:  # noqa: BLE001 - pyarrow raises several types for truncated/corrupt files
            print(f"warning: skipped unreadable {path} ({type(exc).__name__}: {exc})", file=sys.stderr)
            continue
        con.execute(
            "INSERT INTO prepare_requests SELECT ? AS cell_id, requests FROM read_parquet(?)", [cell_id, str(path)]
        )


def _status(directory: Path) -> tuple[str, str | None, str | None, dict | None]:
    """(status, error, run id, manifest) of a cell folder."""
    for marker, state in ((DONE, "done"), (FAILED, "failed")):
        if (directory / marker).exists():
            manifest = read_manifest(directory / marker)
            if manifest is None:  # e.g. zero-length after a crash: not done, resumable
                return "partial", f"unreadable {marker}; re-run `qval run` to complete the cell", None, None
            return state, manifest.get("error"), manifest.get("run_id"), manifest
    return "partial", None, None, None  # parts of an unfinished cell (a killed worker): ingested, marked partial


def _ingest_cells(con, spec: SampleTable, cells: list[tuple[str, Path, list[Path], str]]) -> int:
    """Replace the rows of the changed cells (inside the ingest's transaction: each cell entirely old or new).

    One DELETE and one INSERT for all cells: per-cell statements would each scan the whole sample table.
    """
    table = spec.table
    _create_table(con, spec)
    ids = [c[0] for c in cells]
    # A sample that two workers both wrote (an orphaned worker finishing its point while a re-run scores it again)
    # is taken from the first part that holds it, so a duplicate never reaches a metric. Workers hold a lease per
    # cell, so this is the second line of defence; it needs a window over the rows only for cells with several parts.
    single = [str(c[2][0]) for c in cells if len(c[2]) == 1]
    several = [str(p) for c in cells if len(c[2]) > 1 for p in c[2]]
    con.execute(f"DELETE FROM {table} WHERE cell_id IN (SELECT unnest(?))", [ids])
    _ingest_prepare_requests(con, cells)
    # BY NAME: parts written before a column existed still load (the new column is NULL for them).
    if single:
        con.execute(f"INSERT INTO {table} BY NAME SELECT * FROM read_parquet(?, union_by_name = true)", [single])
    if several:
        con.execute(
            f"INSERT INTO {table} BY NAME SELECT * EXCLUDE (filename) FROM read_parquet(?, union_by_name = "
            "true, filename = true) QUALIFY filename = min(filename) OVER (PARTITION BY cell_id, sample_id)",
            [several],
        )
    counts = {
        cid: (n, failed, rows)
        # Per sample first, then per cell: one grouping instead of two DISTINCT aggregates (half the time).
        for cid, n, failed, rows in con.execute(
            "SELECT cell_id, count(sample_id), count(sample_id) FILTER (WHERE failed), sum(n_rows)::BIGINT FROM "
            "(SELECT cell_id, sample_id, bool_or(error IS NOT NULL) AS failed, count(*) AS n_rows "
            f"FROM {table} WHERE cell_id IN (SELECT unnest(?)) GROUP BY cell_id, sample_id) GROUP BY cell_id",
            [ids],
        ).fetchall()
    }
    now = _now()
    updates = []
    for cell_id, directory, _, sig in cells:
        status, error, run_id, manifest = _status(directory)
        n, failed, _ = counts.get(cell_id, (0, 0, 0))
        shortfall = manifest_shortfall(manifest, n) if status == "done" else None
        if shortfall:  # never a finished cell with lost samples: `qval run` sets the manifest aside and resumes it
            status, error = "partial", f"not done: {shortfall}; re-run `qval run` to complete it"
        updates.append([cell_id, status, n, failed, run_id, error, sig, now])
    with rows_view(con, "qval_cell_updates", _CELL_UPDATES, updates):
        con.execute(
            "UPDATE cells SET status = u.status, n_samples = u.n_samples, n_failed = u.n_failed, "
            "run_id = coalesce(u.run_id, cells.run_id), error = u.error, parts_sig = u.parts_sig, "
            "ingested_at = u.ingested_at FROM qval_cell_updates u WHERE cells.cell_id = u.cell_id"
        )
    return sum(rows for _, _, rows in counts.values())


def _ingest_runs(con, results: Path) -> None:
    for path in sorted((results / "runs").glob("*.json")):
        try:
            run = json.loads(path.read_text())
        except ValueError:
            continue  # a run record still being written; the next ingest takes it
        fp = run.get("fingerprint", {})
        pk = fp.get("packages", {})
        con.execute(
            "INSERT OR REPLACE INTO runs VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [
                run["run_id"],
                run.get("suite"),
                run.get("plan_id"),
                run.get("started_at"),
                run.get("finished_at"),
                run.get("status"),
                pk.get("qval"),
                fp.get("git_sha"),
                fp.get("git_dirty"),
                fp.get("host"),
                fp.get("hardware"),
                fp.get("gpu"),
                fp.get("python"),
                pk.get("torch"),
                pk.get("transformers"),
                fp.get("argv"),
                json.dumps(fp),
            ],
        )


def _ingest_plans(con, results: Path) -> None:
    """Suites and their cells come from plan manifests; the plan written last (by recorded sequence, not by file
    time: a clock can be wrong) defines a suite's membership. An unreadable manifest is skipped with a warning: one
    damaged file must not block the whole folder."""
    plans = sorted((results / "plans").glob("*.json"), key=lambda p: (plan_sequence(p), p.stat().st_mtime))
    for path in plans:
        try:
            plan = Plan.read(path)
        except UsageError as exc:
            print(f"warning: skipped {exc}", file=sys.stderr)
            continue
        con.execute(
            "INSERT OR REPLACE INTO suites VALUES (?, ?, ?, ?, ?, ?, ?)",
            [
                plan.suite,
                plan.plan_id,
                plan.suite_path,
                plan.suite_sha,
                plan.description,
                json.dumps(plan.config),
                _now(),
            ],
        )
        con.execute("DELETE FROM suite_cells WHERE suite = ?", [plan.suite])
        with rows_view(con, "qval_suite_cells", _SUITE_CELLS, [[plan.suite, c] for c in plan.cells]):
            con.execute("INSERT INTO suite_cells (suite, cell_id) SELECT * FROM qval_suite_cells")
        identity_version = plan.to_json()["identity_version"]  # serialises the whole plan: once, not per cell
        rows = [
            [
                c.cell_id,
                identity_version,
                c.track,
                c.model,
                c.method,
                c.family,
                c.dataset,
                c.dataset_label or c.dataset,
                c.temperature,
                c.seed,
                json.dumps(
                    {
                        "model": c.model_identity,
                        "method_params": c.method_params,
                        "dataset_params": c.dataset_params,
                        "settings": c.settings,
                    }
                ),
                c.baseline_cell_id,
                c.adaptive,
            ]
            for c in plan.cells.values()
        ]
        with rows_view(con, "qval_plan_cells", _PLAN_CELLS, rows):
            con.execute(
                "INSERT INTO cells (cell_id, identity_version, track, model, method, family, dataset, dataset_label, "
                "temperature, seed, identity, baseline_cell_id, adaptive, status) SELECT *, 'planned' FROM qval_plan_cells "
                # A cell already known keeps its row but takes the flag of the plan ingested last (plans are ingested
                # in the order they were written); a plan from before the flag (NULL) leaves the stored one.
                "ON CONFLICT (cell_id) DO UPDATE SET adaptive = COALESCE(excluded.adaptive, cells.adaptive)"
            )
