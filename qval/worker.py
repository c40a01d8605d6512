"""A worker runs one shard of a plan: it loads the shard's model once and runs its cells.

Workers never open the database. They write Parquet parts and DONE/FAILED manifests, and report progress as JSON
lines on stdout (the runner's channel); logs go to stderr.

    python -m qval.worker --plan RESULTS/plans/ID.json --shard I --results RESULTS --run-id R
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import signal
import sys
import traceback
from contextlib import ExitStack
from datetime import UTC, datetime
from pathlib import Path

from .fingerprint import fingerprint
from .plan import Plan
from .registry import REGISTRY
from .shard_log import ShardReporter
from .stopping import install_worker_handlers
from .store.parts import CellBusy, CellLease, PartWriter, is_done
from .timeouts import PluginTimeout
from .tracks import Outcome, all_tracks

_EVENTS = None


def emit(event: str, **fields) -> None:
    """One progress event for the runner. With QVAL_EVENT_FD (the local runner) events go to a pipe of their own,
    which plugins cannot write to by printing, and stdout is just log; elsewhere they go to stdout."""
    global _EVENTS
    if _EVENTS is None:
        fd = os.environ.get("QVAL_EVENT_FD")
        _EVENTS = os.fdopen(int(fd), "w", buffering=1) if fd and fd.isdigit() else sys.stdout
    _EVENTS.write(json.dumps({"event": event, **fields}) + "\n")
    _EVENTS.flush()


def load_model(shard):
    if shard.model_source is None:
        return None
    source_cls = REGISTRY.get("models", shard.model_source["source"])
    return source_cls(source_cls.Params.model_validate(shard.model_source["params"])).load()


def run_shard(plan: Plan, shard_index: int, results: Path, run_id: str) -> int:
    shard = plan.shards[shard_index]
    todo = [plan.cells[c] for c in shard.cell_ids if not is_done(results, c)]
    if not todo:
        return 0
    model = load_model(shard)  # once per shard
    try:
        return _run_cells(plan, todo, model, results, run_id)
    finally:
        if model is not None:  # a served model stops the engine process it started
            model.close()


def _run_cells(plan, todo, model, results: Path, run_id: str) -> int:
    fp = fingerprint()
    base = {"run_id": run_id, "plan_id": plan.plan_id, "hardware": fp["hardware"]}
    errors = 0
    report = ShardReporter(plan, results, emit)  # emit, plus the shard log's account of what this worker does

    def finish(cell, writer, outcome, started):
        nonlocal errors
        manifest = {**base, "cell_id": cell.cell_id, "started_at": started}
        if isinstance(outcome, BaseException):  # the cell cannot run at all (plugin failed to load, bad params…)
            errors += 1
            error = f"{type(outcome).__name__}: {outcome}"
            trace = "".join(traceback.format_exception(outcome))
            writer.fail({**manifest, "error": error, "traceback": trace})
            report("cell_failed", cell=cell.cell_id, error=error)
            print(trace, file=sys.stderr)
            return
        n, failed, *extras = outcome
        extra = extras[0] if extras else {"n_errored": failed}  # a failed decode sample is always an exception
        writer.finish({**manifest, "n_samples": n, "n_failed": failed, **extra})
        report("cell_done", cell=cell.cell_id, n=n, failed=failed)

    def say(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    # A cell's ``track`` is the kind of its sample table; the track whose tables hold that kind runs it.
    installed = {kind for track in all_tracks() for kind in (track.name, *(t.kind for t in track.tables))}
    for cell in todo:
        if cell.track not in installed:  # planned where its track's plugin was installed, run where it is not
            errors += 1
            report("cell_failed", cell=cell.cell_id, error=f"no track '{cell.track}' is installed in this worker")
    for track in all_tracks():  # in a fixed order; each track groups its cells (timed ones share a baseline)
        section = plan.config.get(track.name) or {}
        kinds = {track.name, *(table.kind for table in track.tables)}
        for cells in track.groups([c for c in todo if c.track in kinds]):
            with ExitStack() as leases:
                try:
                    for cell in sorted(cells, key=lambda c: c.cell_id):  # one order everywhere: no deadlock
                        leases.enter_context(CellLease(results, cell.cell_id, say=say))
                except CellBusy as exc:
                    errors += 1
                    for cell in cells:
                        report("cell_failed", cell=cell.cell_id, error=str(exc))
                    continue
                cells = [c for c in cells if not is_done(results, c.cell_id)]  # the lease's last holder finished them
                if not cells:
                    continue
                report.begin(cells)
                writers = {c.cell_id: PartWriter(results, c.cell_id, c.track) for c in cells}
                started = _now()
                outcomes: dict[str, Outcome]
                try:
                    outcomes = track.run(cells, model, writers, report, section)
                except (Exception, PluginTimeout) as exc:  # noqa: BLE001 - the group could not start (a dataset failed to load)
                    outcomes = {c.cell_id: exc for c in cells}
                except BaseException:  # SIGTERM or Ctrl-C: write the finished samples, so a re-run resumes after them
                    for writer in writers.values():
                        writer.flush()
                    raise
                for cell in cells:
                    finish(cell, writers[cell.cell_id], outcomes[cell.cell_id], started)
    return 1 if errors else 0


def _now() -> str:
    return datetime.now(UTC).isoformat()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="qval-worker", description=__doc__)
    ap.add_argument("--plan", required=True, type=Path)
    ap.add_argument("--shard", required=True, type=int)
    ap.add_argument("--results", required=True, type=Path)
    ap.add_argument("--run-id", required=True)
    args = ap.parse_args(argv)
    # Inherited by every process the worker (or a plugin) starts, so the runner can find and end them afterwards.
    os.environ["QVAL_WORKER_PID"] = str(os.getpid())
    # The runner stops a worker with SIGTERM, a terminal's Ctrl-C sends it SIGINT as well: either unwinds (rather
    # than dying on the spot), so the running cell writes the samples it finished (see _run_cells); the second
    # signal is ignored, so it cannot cut that write short.
    install_worker_handlers()
    threads = os.environ.get("QVAL_TORCH_THREADS")
    if threads:
        import torch

        torch.set_num_threads(int(threads))
    plan = Plan.read(args.plan)
    try:
        return run_shard(plan, args.shard, args.results, args.run_id)
    except (KeyboardInterrupt, SystemExit) as exc:  # Ctrl-C in a terminal reaches the workers too, SIGTERM from
        # the runner arrives as SystemExit (qval.stopping): either way the finished samples were written, and the log says so
        how = "interrupted" if isinstance(exc, KeyboardInterrupt) else f"stopped (exit {exc.code})"
        print(f"worker {how}: every finished sample is kept in its cell's parts", file=sys.stderr, flush=True)
        return 130 if isinstance(exc, KeyboardInterrupt) else 128 + signal.SIGTERM
    except OSError as exc:
        if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        # Every part already on disk is whole (parts are renamed into place), so nothing finished is lost.
        message = (
            f"disk full while writing results under {args.results} ({exc.strerror}); finished samples "
            "are kept: free space and re-run the same command to resume"
        )
        emit("worker_failed", error=message)
        print(message, file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
