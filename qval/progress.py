"""Progress for people: the lines `qval run` prints while it runs and when it is interrupted, and what a worker
writes in its shard log.

A run with no terminal attached (CI, SLURM, `qval run ... > log`) gets plain lines: one per finished cell, and a
progress line every ``QVAL_PROGRESS_S`` seconds (default 30) with cells and samples done and an ETA. A terminal
keeps its live bars (cli.py) and gets the per-cell lines above them. Workers log, through the same events they send
the runner: a cell started, sample i/n every ``QVAL_PROGRESS_S`` seconds, a cell finished.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .store.parts import cell_dir, held_samples, is_done, started_total, write_started

PROGRESS_ENV = "QVAL_PROGRESS_S"
DEFAULT_EVERY_S = 30.0


def every_s() -> float:
    """Seconds between progress lines (run) and sample lines (shard logs); a bad value falls back to the default."""
    try:
        value = float(os.environ.get(PROGRESS_ENV, DEFAULT_EVERY_S))
    except ValueError:
        return DEFAULT_EVERY_S
    return value if value > 0 else DEFAULT_EVERY_S


def duration(seconds: float) -> str:
    """45s, 3m05s, 2h07m: short enough for a log line, exact enough to plan a coffee."""
    s = max(0, round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


def cell_label(cell) -> str:
    """What a person recognises a cell by: method on dataset (model, T, seed); the id is for files."""
    temperature = "–" if cell.temperature is None else f"{cell.temperature:g}"
    return f"{cell.method} on {cell.dataset_label or cell.dataset} ({cell.model or 'no model'}, T={temperature}, seed {cell.seed})"


@dataclass
class _Cell:
    total: int | None = None  # samples in the cell, known once it started
    before: int = 0  # samples finished by earlier runs (resumed, not redone)
    now: int = 0  # samples finished in this run
    finished: bool = False


class RunProgress:
    """Counts a run's events (they arrive on the runner's reader threads) and writes the per-cell and periodic
    lines through ``write``; ``periodic`` is off under a live terminal display, which shows the same."""

    def __init__(self, plan, todo: list[str], write: Callable[[str], None], periodic: bool, every: float | None = None):
        self.plan, self.write = plan, write
        self.cells = {cid: _Cell() for cid in todo}
        self.finished = 0
        self.started_at = time.monotonic()
        self.every = every_s() if every is None else every
        self.lock = threading.Lock()
        self._stop = threading.Event()
        self._ticker = threading.Thread(target=self._tick, daemon=True) if periodic else None
        if self._ticker:
            self._ticker.start()

    def event(self, event: dict) -> None:
        cell = self.cells.get(event.get("cell")) if isinstance(event.get("cell"), str) else None
        if cell is None:
            return  # an event of no cell of this run (worker_failed) or a malformed one
        kind = event.get("event")
        with self.lock:
            if kind == "cell_start":
                cell.total, cell.before = _count(event.get("total")), _count(event.get("done")) or 0
            elif kind == "sample":
                cell.now += 1
            elif kind in ("cell_done", "cell_failed") and not cell.finished:
                cell.finished = True
                self.finished += 1
                self.write(self._cell_line(event, cell))
                if self.finished == len(self.cells):
                    took = duration(time.monotonic() - self.started_at)
                    self.write(f"all {len(self.cells)} cell(s) of this run ended in {took}; ingesting the results next")
                    self._stop.set()  # no more progress lines: nothing is left to count

    def _cell_line(self, event: dict, cell: _Cell) -> str:
        cid = event["cell"]
        label = cell_label(self.plan.cells[cid]) if cid in self.plan.cells else cid
        took = event.get("elapsed_s")
        after = f" in {duration(took)}" if isinstance(took, (int, float)) else ""
        head = f"cell {self.finished}/{len(self.cells)}"
        if event.get("event") == "cell_failed":
            return f"{head} failed{after}: {label} [{cid}]: {event.get('error')}"
        n = _count(event.get("n"))
        if n is not None:
            cell.total = n
        failed = _count(event.get("failed")) or 0
        return f"{head} done{after}: {label}, n={n}" + (f" ({failed} failed)" if failed else "")

    def line(self) -> str:
        """cells done / total, samples done / total of the cells whose size is known, elapsed, ETA."""
        with self.lock:
            elapsed = time.monotonic() - self.started_at
            known = [c for c in self.cells.values() if c.total is not None]
            unknown = len(self.cells) - len(known)
            done = sum(min(c.total or 0, c.before + c.now) for c in known)
            total = sum(c.total or 0 for c in known)
            now = sum(c.now for c in self.cells.values())
            left = sum(max(0, (c.total or 0) - c.before - c.now) for c in known if not c.finished)
            samples = f"{done}/{total} samples" + (f" ({unknown} cell(s) not started, size unknown)" if unknown else "")
            if self.finished == len(self.cells):
                eta = "ETA 0s"
            elif now == 0:
                eta = "ETA unknown until a sample finishes"
            else:
                # Cells not started yet are assumed the size of those known: the estimate says so with '~'.
                left += unknown * (total / len(known)) if known else 0
                eta = f"ETA {'~' if unknown else ''}{duration(left * elapsed / now)}"
            return f"progress: {self.finished}/{len(self.cells)} cells, {samples}, {duration(elapsed)} elapsed, {eta}"

    def _tick(self) -> None:
        while not self._stop.wait(self.every):
            self.write(self.line())

    def stop(self) -> None:
        self._stop.set()


def _count(value) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def interrupted_message(plan, results: Path, how: str = "interrupted") -> str:
    """What an interrupted run kept, read from disk after its workers stopped, and how to resume. Finished cells
    keep their parts and DONE manifest; an unfinished cell keeps every sample written to a part and resumes after
    them (a stopped worker writes the samples it buffered before it exits; one killed after the runner's grace loses
    them, and they are run again). Nothing of this run reached the database yet: the re-run ingests it."""
    results = Path(results)
    done = sum(is_done(results, cid) for cid in plan.cells)
    held = {cid: held_samples(results, cid) for cid in plan.cells if not is_done(results, cid)}
    kept, partial = sum(held.values()), sum(1 for n in held.values() if n)
    return (
        f"{how}: {done} of {len(plan.cells)} cells finished and kept in {results / 'parts'}; "
        f"{kept} sample(s) of {partial} unfinished cell(s) kept (a re-run continues each after them); "
        f"re-run the same command to resume (it also ingests everything into {results / 'qval.duckdb'})"
    )


def partial_status(results: Path, cell_id: str) -> str | None:
    """`qval plan`'s status of an unfinished cell with samples on disk: '12/40 samples', or '12 samples' when the
    cell's size is unknown (it never started in a worker that records it); None when nothing is held."""
    if not cell_dir(results, cell_id).is_dir():
        return None
    held = held_samples(results, cell_id)
    if not held:
        return None
    total = started_total(results, cell_id)
    return f"{held}/{total} samples" if total else f"{held} samples"


class ShardReporter:
    """The worker's ``emit``: sends each event to the runner unchanged (plus ``elapsed_s`` on a finished cell),
    records a started cell's size for `qval plan`, and says in the shard log what the worker is doing."""

    def __init__(self, plan, results: Path, emit: Callable[..., None], log: Callable[[str], None] | None = None):
        self.plan, self.results, self.emit = plan, Path(results), emit
        self.log = log or (lambda message: print(message, file=sys.stderr, flush=True))
        self.every = every_s()
        self.began: dict[str, float] = {}
        self.counts: dict[str, list[int]] = {}  # cell -> [samples finished, total]
        self.last_line = time.monotonic()

    def begin(self, cells) -> None:
        """The worker took these cells (a Q-alignment cell, or a decode group interleaved sample by sample)."""
        for cell in cells:
            self.began[cell.cell_id] = time.monotonic()
            self.log(f"cell {cell.cell_id} {cell_label(cell)}: starting")

    def __call__(self, event: str, **fields) -> None:
        cid = fields.get("cell")
        label = cell_label(self.plan.cells[cid]) if cid in self.plan.cells else cid
        if event in ("cell_done", "cell_failed") and cid in self.began:
            fields["elapsed_s"] = round(time.monotonic() - self.began.pop(cid), 3)
        self.emit(event, **fields)
        if event == "cell_start":
            total, done = fields.get("total", 0), fields.get("done", 0)
            self.counts[cid] = [done, total]
            try:
                write_started(self.results, cid, total)
            except (OSError, ValueError):  # only `qval plan`'s "12/40" needs it: never fail a cell over it
                pass
            self.log(f"cell {cid} {label}: {total} samples, {done} already done, {total - done} to run")
        elif event == "sample" and cid in self.counts:
            count = self.counts[cid]
            count[0] += 1
            if time.monotonic() - self.last_line >= self.every:
                self.last_line = time.monotonic()
                self.log(f"cell {cid}: sample {count[0]}/{count[1]}")
        elif event == "cell_done":
            took = duration(fields.get("elapsed_s", 0))
            self.log(f"cell {cid} {label}: finished, n={fields.get('n')}, {fields.get('failed')} failed, in {took}")
        elif event == "cell_failed":
            self.log(f"cell {cid} {label}: failed: {fields.get('error')}")
