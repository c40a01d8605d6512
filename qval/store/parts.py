"""Worker-side storage: per-cell Parquet parts written atomically, and DONE/FAILED manifests.

Layout: ``RESULTS/parts/<cell_id>/part-<n>-<pid>.parquet`` plus ``DONE.json`` or ``FAILED.json``. A part is written
to a temp name and renamed, so a killed worker leaves whole parts or none. Workers never open the database.
"""
from __future__ import annotations

import json
import os
import shutil
import time
import uuid
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from .tables import SCHEMAS

DONE, FAILED = "DONE.json", "FAILED.json"


def parts_root(results: Path) -> Path:
    return Path(results) / "parts"


def cell_dir(results: Path, cell_id: str) -> Path:
    if not cell_id.isalnum():  # ids are hex digests; anything else could escape the results folder
        raise ValueError(f"invalid cell id {cell_id!r}")
    return parts_root(results) / cell_id


def is_done(results: Path, cell_id: str) -> bool:
    return (cell_dir(results, cell_id) / DONE).exists()


def part_files(directory: Path) -> list[Path]:
    return sorted(directory.glob("part-*.parquet"))


def write_json_atomic(path: Path, data: dict) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        tmp.write_text(json.dumps(data, indent=1, default=str))
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)  # e.g. disk full: leave no half-written file behind
        raise


def quarantine(results: Path, part: Path, reason: str) -> Path:
    """Move an unreadable part aside (never delete evidence) and drop the cell's DONE so it is recomputed."""
    qdir = Path(results) / "quarantine" / part.parent.name
    qdir.mkdir(parents=True, exist_ok=True)
    dest = qdir / part.name
    shutil.move(str(part), dest)
    (qdir / (part.name + ".reason.txt")).write_text(reason)
    (part.parent / DONE).unlink(missing_ok=True)
    return dest


def read_valid_parts(results: Path, directory: Path) -> list[Path]:
    """The parts that read back whole; corrupt or truncated ones are quarantined."""
    good = []
    for part in part_files(directory):
        try:
            pq.read_metadata(part)
            good.append(part)
        except Exception as exc:  # pyarrow raises several types for truncated/corrupt files
            quarantine(results, part, f"{type(exc).__name__}: {exc}")
    return good


def verify_done_cells(results: Path, cell_ids) -> list[Path]:
    """Before planning work: quarantine unreadable parts of finished cells, which un-finishes them (recompute)."""
    quarantined = []
    for cell_id in cell_ids:
        directory = cell_dir(results, cell_id)
        if (directory / DONE).exists():
            before = set(part_files(directory))
            quarantined += sorted(before - set(read_valid_parts(results, directory)))
    return quarantined


class PartWriter:
    """Buffers rows of one cell and writes them as atomic Parquet parts."""

    def __init__(self, results: Path, cell_id: str, track: str, flush_rows: int = 256, flush_seconds: float = 2.0):
        self.results, self.cell_id, self.schema = Path(results), cell_id, SCHEMAS[track]
        self.dir = cell_dir(results, cell_id)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.flush_rows, self.flush_seconds = flush_rows, flush_seconds
        self._rows: list[dict] = []
        self._last = time.monotonic()
        self._seq = len(part_files(self.dir))

    def done_sample_ids(self) -> set[str]:
        """Samples already written by an earlier (possibly killed) attempt: the resume point."""
        ids: set[str] = set()
        for part in read_valid_parts(self.results, self.dir):
            ids.update(pq.read_table(part, columns=["sample_id"]).column("sample_id").to_pylist())
        return ids

    def add_sample(self, rows: list[dict]) -> None:
        """Add all rows of one sample; a sample is never split across parts, so resume is per sample."""
        self._rows.extend({**r, "cell_id": self.cell_id} for r in rows)
        if len(self._rows) >= self.flush_rows or time.monotonic() - self._last >= self.flush_seconds:
            self.flush()

    def flush(self) -> None:
        if not self._rows:
            return
        table = pa.Table.from_pylist(self._rows, schema=self.schema)
        name = f"part-{self._seq:05d}-{uuid.uuid4().hex[:8]}.parquet"
        tmp = self.dir / f".{name}.tmp"
        try:
            pq.write_table(table, tmp)
            os.replace(tmp, self.dir / name)
        except BaseException:
            tmp.unlink(missing_ok=True)  # e.g. disk full: the rows stay buffered, no half-written part remains
            raise
        self._seq += 1
        self._rows = []
        self._last = time.monotonic()

    def finish(self, manifest: dict) -> None:
        self.flush()
        (self.dir / FAILED).unlink(missing_ok=True)
        write_json_atomic(self.dir / DONE, manifest)

    def fail(self, manifest: dict) -> None:
        """The cell could not finish (e.g. the plugin failed to load): FAILED, so a re-run retries it."""
        self.flush()
        write_json_atomic(self.dir / FAILED, manifest)
