"""Progress for people: the lines `qval run` prints while it runs, and what an interrupted run kept.

A run with no terminal attached (CI, SLURM, `qval run ... > log`) gets plain lines: one per finished cell, and a
progress line every ``QVAL_PROGRESS_S`` seconds (default 30) with cells and samples done and an ETA. A terminal
keeps its live bars (cli.py) and gets the per-cell lines above them. What a worker writes in its shard log is
qval.shard_log's.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .store.parts import held_samples, is_done
from .tracks import board_of

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
    # A cell of a kind other than its track's own (guided episodes beside Q-alignment's points) says which.
    kind = "" if board_of(cell.track) == cell.track else f" [{cell.track}]"
    return f"{cell.method} on {cell.dataset_label or cell.dataset}{kind} ({cell.model or 'no model'}, T={temperature}, seed {cell.seed})"


@dataclass
class _Cell:
    total: int | None = None  # samples in the cell, known once it started
    before: int = 0  # samples finished by earlier runs (resumed, not redone)
    now: int = 0  # samples finished in this run
    finished: bool = False


class RunProgress:
    """Counts a run's events (they arrive on the runner's reader threads) and writes the per-cell and periodic
    lines through ``write``; ``periodic`` is off under a live terminal display, which shows the same."""

    def __init__(
        self,
        plan,
        todo: list[str],
        write: Callable[[str], None],
        periodic: bool,
        every: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.plan, self.write, self.clock = plan, write, clock
        self.cells = {cid: _Cell() for cid in todo}
        self.finished = 0
        self.started_at = clock()
        # The sample rate is measured from the first finished sample: start-up (loading a model, collecting the
        # points) is not sampling, and counting it made an 8 s run show "ETA ~2m51s".
        self.first_sample_at: float | None = None
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
                if self.first_sample_at is None:
                    self.first_sample_at = self.clock()
            elif kind in ("cell_done", "cell_failed") and not cell.finished:
                cell.finished = True
                self.finished += 1
                self.write(self._cell_line(event, cell))
                if self.finished == len(self.cells):
                    took = duration(self.clock() - self.started_at)
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
            clock = self.clock()
            elapsed = clock - self.started_at
            known = [c for c in self.cells.values() if c.total is not None]
            unknown = len(self.cells) - len(known)
            done = sum(min(c.total or 0, c.before + c.now) for c in known)
            total = sum(c.total or 0 for c in known)
            now = sum(c.now for c in self.cells.values())
            left = sum(max(0, (c.total or 0) - c.before - c.now) for c in known if not c.finished)
            samples = f"{done}/{total} samples" + (f" ({unknown} cell(s) not started, size unknown)" if unknown else "")
            if self.finished == len(self.cells):
                eta = "ETA 0s"
            elif self.first_sample_at is None or now < 2 or clock <= self.first_sample_at:
                eta = "ETA unknown"  # no rate yet: the first sample only starts its clock
            else:
                # Cells not started yet are assumed the size of those known: the estimate says so with '~'.
                left += unknown * (total / len(known)) if known else 0
                rate = (now - 1) / (clock - self.first_sample_at)  # samples after the first, per second since it
                eta = f"ETA {'~' if unknown else ''}{duration(left / rate)}"
            return f"progress: {self.finished}/{len(self.cells)} cells, {samples}, {duration(elapsed)} elapsed, {eta}"

    def reported(self) -> dict[str, int]:
        """Per started, unfinished cell: the samples it holds by the workers' events (earlier runs' plus this one's)."""
        with self.lock:
            return {cid: c.before + c.now for cid, c in self.cells.items() if c.total is not None and not c.finished}

    def _tick(self) -> None:
        while not self._stop.wait(self.every):
            self.write(self.line())

    def stop(self) -> None:
        self._stop.set()


def _count(value) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def interrupted_message(plan, results: Path, how: str = "interrupted", reported: dict[str, int] | None = None) -> str:
    """What an interrupted run kept, read from disk after its workers stopped, and how to resume. Finished cells
    keep their parts and DONE manifest; an unfinished cell keeps every sample written to a part and resumes after
    them (a stopped worker writes the samples it buffered before it exits; one killed after the runner's grace loses
    them, and they are run again). ``reported`` (RunProgress.reported) is what the workers said they finished: the
    message gives it, and says how many of those never reached the disk. Nothing of this run reached the database
    yet: the re-run ingests it."""
    results = Path(results)
    done = sum(is_done(results, cid) for cid in plan.cells)
    held = {cid: held_samples(results, cid) for cid in plan.cells if not is_done(results, cid)}
    kept, partial = sum(held.values()), sum(1 for n in held.values() if n)
    said = ""
    if reported is not None:
        # A sample written but not yet reported when the signal came makes held one more than reported: not a loss.
        # A cell whose DONE was written but not yet reported is finished, not lost: only unfinished ones count.
        reported = {cid: n for cid, n in reported.items() if cid in held}
        lost = sum(max(0, n - held[cid]) for cid, n in reported.items())
        said = f" (the workers reported {sum(reported.values())} finished)"
        if lost:
            said += f"; {lost} of those were lost (a worker killed before it wrote them) and are run again"
    return (
        f"{how}: {done} of {len(plan.cells)} cells finished and kept in {results / 'parts'}; "
        f"{kept} sample(s) of {partial} unfinished cell(s) kept{said}; a re-run continues each cell after its kept "
        f"samples: re-run the same command to resume (it also ingests everything into {results / 'qval.duckdb'})"
    )
