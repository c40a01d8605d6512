"""The Python API behind the CLI: plan, run, ingest. The CLI is a thin layer over these functions."""

from __future__ import annotations

import json
import os
import socket
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import psutil

from . import loadwatch
from .errors import UsageError
from .fingerprint import fingerprint
from .plan import Plan, build_plan
from .registry import REGISTRY
from .store.db import results_lock
from .store.ingest import IngestReport, ingest
from .store.parts import is_done, verify_done_cells, write_json_atomic
from .suite import load_suite


def plan_suite(
    suite_path: str | Path, sets: Sequence[str] = (), models: Sequence[str] = (), limit: int | None = None
) -> Plan:
    """The suite's plan, with command-line overrides (``--set PATH=VALUE``, ``--model NAME``) validated like the
    file, and at most ``limit`` samples per cell (cells of their own: see cell.make_cell)."""
    return build_plan(load_suite(suite_path, sets, models), limit)


def cell_status(plan: Plan, results: Path) -> dict[str, bool]:
    return {cid: is_done(results, cid) for cid in plan.cells}


@dataclass
class RunSummary:
    plan: Plan
    run_id: str | None
    cells_total: int
    cells_todo: int
    failed_shards: list[int] = field(default_factory=list)
    failed_cells: list[str] = field(default_factory=list)
    quarantined: list[Path] = field(default_factory=list)
    ingest: IngestReport | None = None
    # Cells this run ran that did not finish, or whose plugin raised / timed out on some samples (a reply the
    # method could not parse is a measured outcome, not a problem): {cell, method, problem, reasons}.
    problems: list[dict] = field(default_factory=list)


def run_suite(
    suite_path,
    results: Path,
    workers: int = 1,
    runner: str = "local",
    on_event=None,
    on_start=None,
    runner_options: dict[str, str] | None = None,
    require_idle: float | None = None,
    sets: Sequence[str] = (),
    models: Sequence[str] = (),
    limit: int | None = None,
) -> RunSummary:
    """Plan the suite, run the cells not yet done, ingest. Re-running a finished suite runs nothing.

    ``require_idle`` (seconds): wait up to that long for an idle machine before starting, and have decode workers
    re-time any turn timed under load after waiting again (``loadwatch``); a machine that stays busy fails the
    affected samples with the reason instead of recording a timing taken under load. ``sets``, ``models``,
    ``limit``: as plan_suite."""
    results = Path(results)
    plan = plan_suite(suite_path, sets, models, limit)  # validates everything before anything is written
    runner_cls = REGISTRY.get("runners", runner)
    runner_cls.parse_options(runner_options or {})  # bad options fail before anything is written
    with results_lock(results, f"run {plan.suite}"):
        mark_interrupted_runs(results)
        plan_path = plan.write(results)
        quarantined = verify_done_cells(results, plan.cells)
        done = cell_status(plan, results)
        todo_shards = [s.index for s in plan.shards if any(not done[c] for c in s.cell_ids)]
        summary = RunSummary(plan, None, len(plan.cells), sum(not d for d in done.values()), quarantined=quarantined)
        if todo_shards:
            summary.run_id = run_id = datetime.now(UTC).strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:6]
            load_at_start = None
            if require_idle is not None:
                load_at_start = loadwatch.wait_until_idle(require_idle)  # MachineBusy: a usage error, exit 2
                os.environ[loadwatch.REQUIRE_IDLE_ENV] = str(require_idle)  # workers inherit it
            else:
                os.environ.pop(loadwatch.REQUIRE_IDLE_ENV, None)
                load_at_start = loadwatch.measure(0.5)
            fp = fingerprint()
            fp["load_at_start"] = {**load_at_start.as_row(), "busy": load_at_start.busy}
            fp["require_idle_s"] = require_idle
            record = {
                "run_id": run_id,
                "suite": plan.suite,
                "plan_id": plan.plan_id,
                "status": "running",
                "started_at": datetime.now(UTC).isoformat(),
                "fingerprint": fp,
                "pid": os.getpid(),
                "host": socket.gethostname(),
            }
            run_file = results / "runs" / f"{run_id}.json"
            run_file.parent.mkdir(parents=True, exist_ok=True)
            write_json_atomic(run_file, record)
            if on_start:
                on_start(plan, done, todo_shards)
            failed_cells: list[str] = []

            def handle(shard: int, event: dict) -> None:
                if event.get("event") == "cell_failed":
                    failed_cells.append(event.get("cell", "?"))
                if on_event:
                    on_event(shard, event)

            status = runner_cls(results, workers, runner_options).run(plan, plan_path, todo_shards, run_id, handle)
            ran = [c for s in todo_shards for c in plan.shards[s].cell_ids if not done[c]]
            summary.failed_shards = sorted(i for i, rc in status.items() if rc != 0)
            summary.failed_cells = failed_cells
            record.update(
                status="failed" if summary.failed_shards else "done", finished_at=datetime.now(UTC).isoformat()
            )
            write_json_atomic(run_file, record)
        summary.ingest = ingest(results)
        if summary.run_id is not None:
            summary.problems = problem_cells(results, plan, ran)
    return summary


def problem_cells(results: Path, plan: Plan, cell_ids: list[str]) -> list[dict]:
    """What went wrong in the cells a run ran, from their manifests and stored rows (see RunSummary.problems)."""
    from .store.parts import DONE, FAILED, cell_dir, read_manifest
    from .tracks import sample_tables

    out, tables = [], sample_tables()
    for cell_id in cell_ids:
        cell, directory = plan.cells[cell_id], cell_dir(results, cell_id)
        problem = None
        if (directory / DONE).is_file():
            manifest = read_manifest(directory / DONE)
            try:
                errored = int(manifest.get("n_errored", manifest.get("n_failed", 0)) or 0) if manifest else None
            except (TypeError, ValueError):
                errored = None
            if errored is None:
                problem = "its DONE manifest is unreadable"
            elif errored:
                problem = (
                    f"{errored} of {(manifest or {}).get('n_samples', '?')} samples errored (exception or timeout)"
                )
        elif (directory / FAILED).is_file():
            manifest = read_manifest(directory / FAILED)
            problem = (
                "failed: " + str(manifest.get("error"))
                if manifest is not None
                else "failed (unreadable FAILED manifest)"
            )
        else:
            problem = "not finished: its worker ended before completing it (see the shard log)"
        if problem:
            out.append(
                {
                    "cell": cell_id,
                    "method": cell.method,
                    "dataset": cell.dataset_label or cell.dataset,
                    "problem": problem,
                    "reasons": _top_reasons(results, tables[cell.track].table, cell_id) if cell.track in tables else [],
                }
            )
    return out


def _top_reasons(results: Path, table: str, cell_id: str, top: int = 5) -> list[str]:
    from .store.db import connect_reader

    try:
        con = connect_reader(results)
    except Exception:  # noqa: BLE001 - reasons are a courtesy; the problem itself is already known
        return []
    try:
        rows = con.execute(
            f"SELECT error, count(DISTINCT sample_id) AS n FROM {table} WHERE cell_id = ? AND error "
            "IS NOT NULL GROUP BY error ORDER BY n DESC, error LIMIT ?",
            [cell_id, top],
        ).fetchall()
    finally:
        con.close()
    return [f"{n} × {error[:200]}" for error, n in rows]


RESULTS_MARKERS = ("plans", "parts", "runs", "qval.duckdb")  # what `qval run`/`qval worker` leave in a results folder


def ingest_results(results: Path) -> IngestReport:
    # A mistyped --results would otherwise become a new folder with an empty database, and "ingested 0 cells".
    if not any((Path(results) / marker).exists() for marker in RESULTS_MARKERS):
        raise UsageError(
            f"{results} is not a qval results folder (no plans/, parts/ or qval.duckdb in it): pass the --results "
            f"folder that `qval run` or `qval worker` wrote to, or run `qval run SUITE --results {results}` first"
        )
    with results_lock(results, "ingest"):
        mark_interrupted_runs(results)
        return ingest(Path(results))


def mark_interrupted_runs(results: Path) -> list[str]:
    """Run records still "running" whose process is gone (a killed `qval run`) become "interrupted".

    Called with the results folder's lock held: a live run on this folder would hold that lock, so a "running"
    record from this host whose process no longer exists cannot be a live run."""
    host, changed = socket.gethostname(), []
    for path in sorted((Path(results) / "runs").glob("*.json")):
        try:
            record = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if not isinstance(record, dict) or record.get("status") != "running":
            continue
        pid = record.get("pid")
        alive = isinstance(pid, int) and record.get("host") == host and psutil.pid_exists(pid) and pid != os.getpid()
        if record.get("host") not in (None, host) or alive:
            continue  # another host's run, or still alive
        record.update(
            status="interrupted",
            finished_at=None,
            note="the `qval run` process ended without finishing (killed); its finished samples are kept",
        )
        write_json_atomic(path, record)
        changed.append(record.get("run_id", path.stem))
    return changed


def read_plan_file(path: Path) -> Plan:
    if not Path(path).is_file():
        raise UsageError(f"no plan manifest at {path}")
    return Plan.read(path)
