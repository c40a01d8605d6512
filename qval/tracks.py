"""Tracks as plugins (entry-point group ``qval.tracks``): everything that differs between Q-alignment and decoding.

A track declares its suite section (a pydantic model), how that section expands into cells, how a worker runs a
group of its cells, the sample tables its workers write (Arrow schema, DuckDB table, metric view), and what its
leaderboard adds (title, figures, extra columns and analyses). The core (suite, plan, worker, store, metrics,
report, compare) reaches a track only through this interface, so it holds no track names and a third track is one
package: a subclass of ``Track`` and its entry point. ``qval.qalign.track`` and ``qval.decode.track`` are the two
built-in ones and the examples to copy.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import pyarrow as pa

from .errors import PluginError
from .registry import REGISTRY
from .section import TrackSection

if TYPE_CHECKING:
    from pathlib import Path

    import pandas as pd

    from .cell import Cell


_IDENTIFIER = re.compile(r"[a-z_][a-z0-9_]{0,62}")


@dataclass(frozen=True)
class SampleTable:
    """One per-sample table: workers write its rows as Parquet parts, ingest copies them into DuckDB, its metrics
    read them through its view. ``kind`` is what a cell's ``track`` column holds for cells whose rows live here."""

    kind: str
    table: str  # DuckDB table name (created by a migration for built-in tracks, from ``schema`` for others)
    schema: pa.Schema
    view: str  # "module:attribute" of its qval.metrics.base.MetricView, imported when a metric needs it
    listing_order: str = "sample_id"  # the column that orders rows within a sample in listings (`qval samples`)
    listing_drop: tuple[str, ...] = ()  # columns too bulky to list (token ids)
    shape: str = "rows"  # how `qval samples` and drill-down pages lay rows out: "turns", "states" or "rows"

    def __post_init__(self) -> None:
        # Table and column names are formatted into SQL statements: a plugin may only declare plain identifiers.
        for name in (self.table, self.listing_order, *self.listing_drop):
            if not _IDENTIFIER.fullmatch(name):
                raise PluginError(
                    f"sample table {self.kind!r}: {name!r} is not a plain SQL identifier ([a-z_][a-z0-9_]*)"
                )
        if self.shape not in ("turns", "states", "rows"):
            raise PluginError(
                f"sample table {self.kind!r}: shape must be 'turns', 'states' or 'rows', not {self.shape!r}"
            )


# What a worker's run of one cell returns: (samples, failed) or (samples, failed, extra manifest fields), or the
# exception that kept the cell from running at all.
Outcome = tuple | BaseException


class Track:
    """Base class of a track. Class attributes describe it; methods do its track-specific work."""

    name: ClassVar[str] = ""  # set from the entry-point name: the suite section's key and cells' ``track``
    title: ClassVar[str] = ""  # the leaderboard's heading
    position: ClassVar[int] = 100  # order of sections in reports and of work in a worker (lower first)
    Section: ClassVar[type[TrackSection]] = TrackSection
    axes: ClassVar[dict[str, str]] = {}  # section field (a list of plugin references) -> plugin kind
    tables: ClassVar[tuple[SampleTable, ...]] = ()  # the first holds the track's own cells
    timed: ClassVar[bool] = False  # cells measure time: a shard holding them runs alone
    paired_metric: ClassVar[str | None] = None  # the per-unit metric `qval compare` resamples for paired p
    figures: ClassVar[tuple[str, ...]] = ("ranking",)  # figure kinds (qval.report.figures) drawn for its board
    report_metrics: ClassVar[tuple[str, ...]] = ()  # board columns the report reads beyond the suite's metrics

    def grid_size(self, section: Any, models: int, seeds: int) -> int:
        """About how many cells the section expands to (checked against the suite's cell limit before expanding)."""
        size = models * seeds * len(section.temperatures)
        for axis in self.axes:
            size *= len(getattr(section, axis))
        return size

    def needs_model(self, suite: Any, section: Any) -> list[str]:
        """Entries of the section that need a model, for the message when the suite lists none ([]: none do)."""
        return []

    def problems(self, suite: Any, section: Any, metrics: list[tuple[int, str, type]]) -> list[tuple[str, str]]:
        """(field, reason) for what does not fit together in the section once its plugins are resolved (``metrics``:
        (index, name, class) of the listed metrics that loaded); [] when all fits."""
        return []

    def expand(self, suite: Any, section: Any, limit: int | None) -> list[Cell]:
        """The section's cells (qval.cell.make_cell builds each)."""
        raise NotImplementedError

    def groups(self, cells: list[Cell]) -> list[list[Cell]]:
        """Cells a worker runs together (sharing a baseline, interleaved); by default each runs alone."""
        return [[cell] for cell in cells]

    def run(self, cells: list[Cell], model: Any, writers: dict, report: Any, section: dict) -> dict[str, Outcome]:
        """Run one group: write each cell's samples with its writer (qval.store.parts.PartWriter) and return each
        cell's outcome by id. ``section``: the track's section of the planned suite, as JSON."""
        raise NotImplementedError

    def board(self, results: Path, suite: str, section: dict, rows: pd.DataFrame) -> dict[str, Any]:
        """Extra fields of the track's leaderboard (qval.report.model.TrackBoard), from stored values. A field that
        the figures do not read may come under ``"deferred"`` as a function that waits for its value (computed beside
        the report by qval.report.background.start), so that a large report draws its figures meanwhile."""
        return {}

    def report_tables(self, board: Any, analysis: Any) -> list[Any]:
        """The track's own sections of the report (qval.report.table.Table, built with qval.report.document's cell
        helpers), shown after the family aggregates in Markdown and HTML; they read the board (report.model's
        TrackBoard), its analysis (report.analysis's BoardAnalysis) and what ``board`` returned in ``extras``. Typed
        Any: the report package imports this module, so naming its types here would make an import cycle."""
        return []

    def paired_units(self, results: Path, suite: str) -> dict[str, pd.Series]:
        """Per cell, the per-unit values `qval compare` pairs between two runs (indexed by unit)."""
        return {}

    def conditions(self, results: Path, suite: str) -> dict[str, dict[str, str]]:
        """Per cell, what its measurements were taken under that its identity leaves out (decoding: the CPU threads
        of the engine), as {name: value}. Reports list them, and flag a board whose cells differ; `qval compare`
        flags a matched pair of cells that differ: their timings do not compare."""
        return {}


_LOADED: dict[tuple[int, ...], tuple[Track, ...]] = {}


def _loaded() -> tuple[Track, ...]:
    """The installed tracks, loaded once per set of registered entries (a test may register one at run time)."""
    key = tuple(id(entry) for entry in REGISTRY.entries("tracks"))
    if key not in _LOADED:
        _LOADED.clear()
        _LOADED[key] = _load()
    return _LOADED[key]


# Keys every suite has: a track named so would replace one of them in the suite's schema.
RESERVED = frozenset({"name", "description", "seeds", "models"})


def _load() -> tuple[Track, ...]:
    tracks = []
    for name in REGISTRY.names("tracks"):
        # One broken or hostile third-party track must not take the others (or qval) down: it is skipped, saying why.
        try:
            cls = REGISTRY.get("tracks", name)
            if not (isinstance(cls, type) and issubclass(cls, Track)):
                raise PluginError(f"track plugin '{name}' is {cls!r}, not a subclass of qval.tracks.Track")
            if name in RESERVED:
                raise PluginError(f"track plugin '{name}' takes a name every suite uses for itself; rename it")
            tracks.append(cls())
        except Exception as exc:  # noqa: BLE001 - a plugin's constructor may raise anything
            print(f"qval: track plugin skipped: {exc}", file=sys.stderr)
    return tuple(sorted(tracks, key=lambda t: (t.position, t.name)))


def all_tracks() -> tuple[Track, ...]:
    """Every track that loads, in report order."""
    return _loaded()


def find_track(name: str) -> Track | None:
    """The installed track of this name, or None."""
    return next((track for track in _loaded() if track.name == name), None)


def get_track(name: str) -> Track:
    track = find_track(name)
    if track is not None:
        return track
    raise PluginError(f"no track '{name}' is installed (tracks: {', '.join(t.name for t in _loaded()) or 'none'})")


def sample_tables() -> dict[str, SampleTable]:
    """Every sample table by kind (the value of a cell's ``track`` column)."""
    return {table.kind: table for track in _loaded() for table in track.tables}


def board_kinds(track: str) -> tuple[str, ...]:
    """The kinds of cells one track's leaderboard shows (its own, and e.g. imported per-state values)."""
    return tuple(table.kind for table in get_track(track).tables)


def board_of(kind: str) -> str:
    """The track whose leaderboard shows cells of this kind."""
    for track in _loaded():
        if any(table.kind == kind for table in track.tables):
            return track.name
    return kind
