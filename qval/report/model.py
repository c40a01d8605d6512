"""What a report is drawn from: per suite, one board per track, as build.py loads them from the results."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from ..tracks import find_track

# The family of the methods that bracket the others (oracle, random, a heuristic; AR for decoding): the reports
# never average them into a family aggregate, and draw them as references rather than as competitors.
BASELINE_FAMILY = "baseline"

# Columns of TrackBoard.samples (decode only; one row per sample of a cell).
SAMPLE_COLUMNS = ("cell_id", "sample_id", "tau", "decode_s", "new_tokens")


@dataclass
class TrackBoard:
    track: str
    title: str
    main_metric: str
    metrics: list[str]
    higher_is_better: dict[str, bool]
    labels: dict[str, str]
    rows: pd.DataFrame
    # Decoding: one row per sample with columns cell_id, sample_id,
    # tau (float, per-sample acceptance length), decode_s, new_tokens.
    samples: pd.DataFrame | None = None
    # Per cell with failed samples: columns cell_id, error, samples (the most frequent messages; they may quote
    # model output, so they are untrusted text).
    failures: pd.DataFrame | None = None
    # Q-alignment, when the main metric is a per-state mean: cell_id -> its value per state. It gives the paired
    # test between each row and the next one, on the states both scored.
    by_state: dict[str, pd.Series] | None = None
    # Q-alignment: family aggregates (qval.qalign.board.family_aggregates).
    families: pd.DataFrame | None = None
    # Decoding: one row per knob sweep and metric (qval.decode.sweeps.headroom_rows).
    knob_headroom: pd.DataFrame | None = None
    # Per metric, its value of no effect where it has one (Metric.reference), drawn as a reference line.
    references: dict[str, float] = field(default_factory=dict)
    # The figure kinds drawn for this board and the columns read beyond ``metrics``: by default the installed track's
    # (Track.figures, Track.report_metrics); a board of a track not installed here gets the ranking only.
    figures: tuple[str, ...] | None = None
    report_metrics: tuple[str, ...] | None = None
    # What the track's board hook computed for its own report sections (Track.report_tables reads it); the report
    # package never looks inside.
    extras: dict[str, Any] = field(default_factory=dict)
    # Fields still being computed (by a worker process, background.start), each with the function that waits for
    # its value; ``resolve`` sets them. Only a report being written leaves them pending while it draws the figures,
    # which therefore must not read them; every other board comes resolved.
    deferred: dict[str, Callable[[], Any]] = field(default_factory=dict)

    def resolve(self) -> None:
        for name, wait in list(self.deferred.items()):
            if name not in self.__dataclass_fields__ or name == "deferred":
                raise ValueError(f"deferred board field {name!r}: TrackBoard has no such field")
            setattr(self, name, wait())
            del self.deferred[name]

    def __post_init__(self) -> None:
        track = find_track(self.track)
        if self.figures is None:
            self.figures = track.figures if track is not None else ("ranking",)
        if self.report_metrics is None:
            self.report_metrics = track.report_metrics if track is not None else ()

    def label(self, metric: str) -> str:
        return self.labels.get(metric, metric)

    def higher(self, metric: str) -> bool:
        return self.higher_is_better.get(metric, True)


@dataclass
class SuiteReport:
    suite: str
    description: str
    environment: dict[str, str]
    tracks: list[TrackBoard]

    def resolve(self) -> None:
        """Wait for every board's deferred fields (TrackBoard.deferred)."""
        for board in self.tracks:
            board.resolve()
