"""Worker-side storage: per-cell Parquet parts written atomically, and DONE/FAILED manifests.

Layout: ``RESULTS/parts/<cell_id>/part-<n>-<pid>.parquet`` plus ``DONE.json`` or ``FAILED.json``, and for a scorer
whose prepare() asked the model, ``prepare-requests.parquet``. A file is written to a temp name and renamed, so a
killed worker leaves whole files or none. Workers never open the database.
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

from ..errors import QvalError
from ..tracks import sample_tables
from .tables import PREPARE_REQUESTS

DONE, FAILED = "DONE.json", "FAILED.json"
# Written when a worker starts a cell: how many samples the cell has, so `qval plan` can say "12/40 samples" of a
# cell a run left unfinished (the size of a Q-alignment cell is known only once its points are collected).
STARTED = "STARTED.json"
# The requests a scorer sent while preparing the cell (once per cell, not per sample: beside the parts, not in them).
PREPARE = "prepare-requests.parquet"


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


def held_samples(results: Path, cell_id: str) -> int:
    """Distinct samples the cell's parts hold, read without side effects: only the sample_id column is read, and an
    unreadable part counts nothing here (ingest and verify_done_cells quarantine it; `qval plan` writes nothing)."""
    ids: set[str] = set()
    for part in part_files(cell_dir(results, cell_id)):
        try:
            ids.update(pq.read_table(part, columns=["sample_id"]).column("sample_id").to_pylist())
        except Exception:  # noqa: BLE001 - pyarrow raises several types for truncated/corrupt files
            continue
    return len(ids)


def partial_progress(results: Path, cell_id: str) -> tuple[int, int | None] | None:
    """How far an unfinished cell got, from disk: (samples held, the cell's size or None when no worker recorded it),
    or None when it holds nothing. `qval plan` shows it as '12/40 samples'."""
    if not cell_dir(results, cell_id).is_dir():
        return None
    held = held_samples(results, cell_id)
    return (held, started_total(results, cell_id)) if held else None


def write_started(results: Path, cell_id: str, total: int) -> None:
    write_json_atomic(cell_dir(results, cell_id) / STARTED, {"cell_id": cell_id, "total": total})


def started_total(results: Path, cell_id: str) -> int | None:
    """The sample count a worker recorded when it started the cell, or None (never started, or unreadable)."""
    manifest = read_manifest(cell_dir(results, cell_id) / STARTED)
    total = manifest.get("total") if manifest else None
    return total if isinstance(total, int) and total > 0 else None


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
    root = Path(results) / "quarantine"
    if root.is_symlink():  # a planted link would move evidence out of the results folder
        raise QvalError(f"{root} is a symbolic link; qval refuses to quarantine through it (remove the link)")
    qdir = root / part.parent.name
    qdir.mkdir(parents=True, exist_ok=True)
    dest = qdir / f"{part.name}.{uuid.uuid4().hex[:6]}" if (qdir / part.name).exists() else qdir / part.name
    shutil.move(str(part), dest)
    (qdir / (dest.name + ".reason.txt")).write_text(reason)
    (part.parent / DONE).unlink(missing_ok=True)
    return dest


def _foreign_cell(part: Path, cell_id: str) -> str | None:
    """The reason a readable part does not belong in its cell's folder, or None. Ingest would otherwise trust the
    cell id inside the part and add its rows to another cell."""
    metadata = pq.read_metadata(part)
    names = metadata.schema.names
    if "cell_id" not in names:
        return "part has no cell_id column"
    column = names.index("cell_id")
    ids: set = set()
    for g in range(metadata.num_row_groups):
        stats = metadata.row_group(g).column(column).statistics
        if stats is None or not stats.has_min_max:
            ids = set(pq.read_table(part, columns=["cell_id"]).column("cell_id").to_pylist())
            break
        ids.update({stats.min, stats.max})
    ids = {i.decode() if isinstance(i, bytes) else i for i in ids}
    if ids and ids != {cell_id}:
        return f"part holds rows of cell(s) {sorted(ids)[:3]} but lies in the folder of cell {cell_id}"
    return None


def read_valid_parts(results: Path, directory: Path) -> list[Path]:
    """The parts that read back whole and belong to this folder's cell; the others are quarantined."""
    good = []
    for part in part_files(directory):
        try:
            reason = _foreign_cell(part, directory.name)
        except Exception as exc:  # pyarrow raises several types for truncated/corrupt files
            reason = f"{type(exc).__name__}: {exc}"
        if reason is None:
            good.append(part)
        else:
            quarantine(results, part, reason)
    return good


def sample_ids(parts: list[Path]) -> set[str]:
    ids: set[str] = set()
    for part in parts:
        ids.update(pq.read_table(part, columns=["sample_id"]).column("sample_id").to_pylist())
    return ids


def read_manifest(path: Path) -> dict | None:
    """A DONE/FAILED manifest, or None when it is missing or unreadable (e.g. zero-length after a crash)."""
    try:
        manifest = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    return manifest if isinstance(manifest, dict) else None


def manifest_shortfall(manifest: dict | None, held: int) -> str | None:
    """Why a DONE manifest cannot be trusted: it is unreadable, or it promises more samples than the cell's parts
    hold (``held`` distinct samples; e.g. the parts were lost after the cell finished). None when it agrees."""
    try:
        promised = int(manifest.get("n_samples", 0)) if manifest is not None else None
    except (TypeError, ValueError):
        promised = None
    if promised is None:
        return "its DONE manifest is unreadable"
    if held < promised:
        return f"its DONE manifest promises {promised} samples but its parts hold {held}"
    return None


def verify_done_cells(results: Path, cell_ids) -> list[Path]:
    """Before planning work: quarantine unreadable or misplaced parts of finished cells, and set aside a DONE
    manifest its parts do not back; either un-finishes the cell, so it is resumed and completed, never emptied."""
    quarantined = []
    for cell_id in cell_ids:
        directory = cell_dir(results, cell_id)
        if (directory / DONE).exists():
            before = set(part_files(directory))
            parts = read_valid_parts(results, directory)
            quarantined += sorted(before - set(parts))
            shortfall = (
                manifest_shortfall(read_manifest(directory / DONE), len(sample_ids(parts)))
                if (directory / DONE).exists()
                else None
            )
            if shortfall:
                quarantined.append(quarantine(results, directory / DONE, f"cell {cell_id}: {shortfall}"))
    return quarantined


class PartWriter:
    """Buffers rows of one cell and writes them as atomic Parquet parts."""

    def __init__(self, results: Path, cell_id: str, track: str, flush_rows: int = 256, flush_seconds: float = 2.0):
        self.results, self.cell_id, self.schema = Path(results), cell_id, sample_tables()[track].schema
        self.dir = cell_dir(results, cell_id)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.flush_rows, self.flush_seconds = flush_rows, flush_seconds
        self._rows: list[dict] = []
        self._last = time.monotonic()
        self._seq = len(part_files(self.dir))

    def done_sample_ids(self) -> set[str]:
        """Samples already written by an earlier (possibly killed) attempt: the resume point."""
        return sample_ids(read_valid_parts(self.results, self.dir))

    def add_sample(self, rows: list[dict]) -> None:
        """Add all rows of one sample; a sample is never split across parts, so resume is per sample."""
        # Built first, then added in one step: an interrupt (a signal raises between bytecodes) adds all or none,
        # so the flush on an interrupt (qval.worker) never writes part of a sample.
        stamped = [{**r, "cell_id": self.cell_id} for r in rows]
        self._rows.extend(stamped)
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

    def write_prepare_requests(self, requests: list[dict]) -> None:
        """The requests of this attempt's prepare() (a resumed cell prepares again: the latest attempt's replace
        the earlier ones; none removes them)."""
        path = self.dir / PREPARE
        if not requests:
            path.unlink(missing_ok=True)
            return
        table = pa.Table.from_pylist([{"cell_id": self.cell_id, "requests": requests}], schema=PREPARE_REQUESTS)
        tmp = self.dir / f".{PREPARE}.{uuid.uuid4().hex[:8]}.tmp"
        try:
            pq.write_table(table, tmp)
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise

    def finish(self, manifest: dict) -> None:
        self.flush()
        (self.dir / FAILED).unlink(missing_ok=True)
        write_json_atomic(self.dir / DONE, manifest)

    def fail(self, manifest: dict) -> None:
        """The cell could not finish (e.g. the plugin failed to load): FAILED, so a re-run retries it."""
        self.flush()
        write_json_atomic(self.dir / FAILED, manifest)


LEASE = ".lease"
LEASE_WAIT_S = float(os.environ.get("QVAL_LEASE_WAIT_S", "600"))


class CellBusy(RuntimeError):
    """Another live worker holds the cell's lease for longer than this worker may wait."""


class CellLease:
    """An exclusive lease on one cell for the worker that runs it: a second worker (two `qval worker` on one
    shard, or a re-run while an orphaned worker finishes its point) waits for it instead of writing the same
    samples again. It is an flock, so the kernel releases it when its holder dies, however it dies."""

    def __init__(self, results: Path, cell_id: str, wait_s: float | None = None, say=None):
        self.path = cell_dir(results, cell_id) / LEASE
        self.wait_s = LEASE_WAIT_S if wait_s is None else wait_s
        self.say = say
        self.fd: int | None = None

    def __enter__(self) -> CellLease:
        import fcntl

        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        deadline, told = time.monotonic() + self.wait_s, False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                holder = os.pread(fd, 100, 0).decode(errors="replace").strip() or "another worker"
                if time.monotonic() >= deadline:
                    os.close(fd)
                    raise CellBusy(
                        f"cell {self.path.parent.name} is held by {holder} for more than "
                        f"{self.wait_s:.0f} s; nothing was written twice"
                    ) from None
                if not told and self.say:
                    self.say(f"cell {self.path.parent.name} is held by {holder}; waiting for it")
                    told = True
                time.sleep(0.2)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"worker pid {os.getpid()}".encode(), 0)
        self.fd = fd
        return self

    def __exit__(self, *exc) -> None:
        if self.fd is not None:
            os.close(self.fd)  # closing releases the lock
            self.fd = None
