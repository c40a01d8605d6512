"""Ingest: the single writer. Parts → DuckDB per cell in one transaction (delete then insert), then metrics.

Re-ingesting is idempotent: a cell whose parts did not change is skipped, and one that did is replaced whole.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

from ..plan import Plan
from ..registry import REGISTRY
from .db import connect_writer
from .parts import DONE, FAILED, parts_root, read_valid_parts
from .tables import SAMPLE_TABLES, SCHEMAS


@dataclass
class IngestReport:
    cells_ingested: int = 0
    cells_unchanged: int = 0
    rows: int = 0
    quarantined: list[str] = field(default_factory=list)
    metrics_computed: int = 0


def _now():
    return datetime.now(timezone.utc).replace(tzinfo=None)


def ingest(results: Path, progress=None) -> IngestReport:
    results = Path(results)
    report = IngestReport()
    con = connect_writer(results)
    try:
        _ingest_runs(con, results)
        _ingest_plans(con, results)
        changed = []
        root = parts_root(results)
        cell_dirs = sorted(p for p in root.iterdir() if p.is_dir()) if root.exists() else []
        known = dict(con.execute("SELECT cell_id, track FROM cells").fetchall())
        for directory in cell_dirs:
            cell_id = directory.name
            if cell_id not in known:  # parts of a cell no plan describes (e.g. a deleted plan): leave them alone
                continue
            before = {p.name for p in directory.glob("part-*.parquet")}
            parts = read_valid_parts(results, directory)
            report.quarantined += sorted(before - {p.name for p in parts})
            sig = _signature(directory, parts)
            old = con.execute("SELECT parts_sig FROM cells WHERE cell_id = ?", [cell_id]).fetchone()
            if old and old[0] == sig:
                report.cells_unchanged += 1
                continue
            report.rows += _ingest_cell(con, cell_id, known[cell_id], directory, parts, sig)
            report.cells_ingested += 1
            changed.append(cell_id)
            if progress:
                progress(cell_id)
        report.metrics_computed = compute_metrics(con, changed)
    finally:
        con.close()
    return report


def _signature(directory: Path, parts: list[Path]) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(f"{p.name}:{p.stat().st_size};".encode())
    for marker in (DONE, FAILED):
        if (directory / marker).exists():
            h.update(marker.encode() + (directory / marker).read_bytes())
    return h.hexdigest()[:16]


def _ingest_cell(con, cell_id: str, track: str, directory: Path, parts: list[Path], sig: str) -> int:
    table = SAMPLE_TABLES[track]
    columns = ", ".join(SCHEMAS[track].names)
    status, error, run_id = "partial", None, None
    for marker, state in ((DONE, "done"), (FAILED, "failed")):
        if (directory / marker).exists():
            manifest = json.loads((directory / marker).read_text())
            status, error, run_id = state, manifest.get("error"), manifest.get("run_id")
            break
    con.execute("BEGIN TRANSACTION")
    try:
        con.execute(f"DELETE FROM {table} WHERE cell_id = ?", [cell_id])
        if parts:
            con.execute(
                f"INSERT INTO {table} ({columns}) SELECT {columns} FROM read_parquet(?, union_by_name = true)",
                [[str(p) for p in parts]],
            )
        n_samples, n_failed = con.execute(
            f"SELECT count(DISTINCT sample_id), count(DISTINCT sample_id) FILTER (WHERE error IS NOT NULL) "
            f"FROM {table} WHERE cell_id = ?", [cell_id]).fetchone()
        con.execute(
            "UPDATE cells SET status = ?, n_samples = ?, n_failed = ?, run_id = coalesce(?, run_id), error = ?, "
            "parts_sig = ?, ingested_at = ? WHERE cell_id = ?",
            [status, n_samples, n_failed, run_id, error, sig, _now(), cell_id])
        con.execute("COMMIT")
    except Exception:
        con.execute("ROLLBACK")
        raise
    return con.execute(f"SELECT count(*) FROM {table} WHERE cell_id = ?", [cell_id]).fetchone()[0]


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
            [run["run_id"], run.get("suite"), run.get("plan_id"), run.get("started_at"), run.get("finished_at"),
             run.get("status"), pk.get("qval"), fp.get("git_sha"), fp.get("git_dirty"), fp.get("host"),
             fp.get("hardware"), fp.get("gpu"), fp.get("python"), pk.get("torch"), pk.get("transformers"),
             fp.get("argv"), json.dumps(fp)])


def _ingest_plans(con, results: Path) -> None:
    """Suites and their cells come from plan manifests; the newest plan of a suite defines its membership."""
    plans = sorted((results / "plans").glob("*.json"), key=lambda p: p.stat().st_mtime)
    for path in plans:
        plan = Plan.read(path)
        con.execute("BEGIN TRANSACTION")
        try:
            con.execute("INSERT OR REPLACE INTO suites VALUES (?, ?, ?, ?, ?, ?, ?)",
                        [plan.suite, plan.plan_id, plan.suite_path, plan.suite_sha, plan.description,
                         json.dumps(plan.config), _now()])
            con.execute("DELETE FROM suite_cells WHERE suite = ?", [plan.suite])
            con.executemany("INSERT INTO suite_cells VALUES (?, ?)", [[plan.suite, c] for c in plan.cells])
            rows = [[c.cell_id, plan.to_json()["identity_version"], c.track, c.model, c.method, c.family, c.dataset,
                     c.dataset_label, c.temperature, c.seed, json.dumps({
                         "model": c.model_identity, "method_params": c.method_params,
                         "dataset_params": c.dataset_params, "settings": c.settings}),
                     c.baseline_cell_id] for c in plan.cells.values()]
            con.executemany(
                "INSERT INTO cells (cell_id, identity_version, track, model, method, family, dataset, dataset_label, "
                "temperature, seed, identity, baseline_cell_id, status) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, "
                "'planned') ON CONFLICT (cell_id) DO NOTHING", rows)
            con.execute("COMMIT")
        except Exception:
            con.execute("ROLLBACK")
            raise


def _samples(con, track: str, cell_id: str) -> pd.DataFrame:
    table = SAMPLE_TABLES[track]
    return con.execute(f"SELECT * FROM {table} WHERE cell_id = ? AND error IS NULL", [cell_id]).df()


def compute_metrics(con, changed: list[str]) -> int:
    """(Re)compute every metric of the changed cells, and of decode cells whose AR baseline changed."""
    if not changed:
        return 0
    dependants = con.execute(
        "SELECT cell_id FROM cells WHERE baseline_cell_id IN (SELECT unnest(?))", [changed]).fetchall()
    todo = sorted(set(changed) | {r[0] for r in dependants})
    metrics_by_track: dict[str, list] = {}
    for entry in REGISTRY.entries("metrics"):
        metric = entry.load()()
        metrics_by_track.setdefault(metric.track, []).append(metric)
    count = 0
    for cell_id in todo:
        cell = con.execute("SELECT * FROM cells WHERE cell_id = ?", [cell_id]).df().iloc[0].to_dict()
        track = cell["track"]
        samples = _samples(con, track, cell_id)
        baseline = None
        if track == "decode":
            base_id = cell["baseline_cell_id"] or cell_id  # the AR cell is its own baseline (speedup 1)
            baseline = _samples(con, track, base_id)
        rows = []
        for metric in metrics_by_track.get(track, []):
            value = metric.compute(samples, baseline if metric.needs_baseline else None, cell)
            rows.append([cell_id, metric.name, value.value, value.ci_low, value.ci_high, value.n,
                         metric.higher_is_better, metric.label])
        con.execute("BEGIN TRANSACTION")
        try:
            con.execute("DELETE FROM cell_metrics WHERE cell_id = ?", [cell_id])
            con.executemany("INSERT INTO cell_metrics VALUES (?, ?, ?, ?, ?, ?, ?, ?)", rows)
            con.execute("COMMIT")
        except Exception:
            con.execute("ROLLBACK")
            raise
        count += len(rows)
    return count
