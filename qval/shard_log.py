"""What a worker says in its shard log: a cell started (with its size), sample i/n every ``QVAL_PROGRESS_S`` seconds,
a cell finished or failed. The same events go on, unchanged, to the runner (qval.progress counts them there)."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path

from .progress import cell_label, duration, every_s
from .store.parts import write_started


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
