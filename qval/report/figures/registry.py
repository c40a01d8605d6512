"""Figure kinds by name: each module of this package draws one kind and registers it here. Which kinds a board gets
is the track's choice (qval.tracks.Track.figures); a track package can register kinds of its own."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from ..analysis import BoardAnalysis
from ..model import TrackBoard

Figures = list[tuple[str, bytes]]  # (caption, PNG bytes)
Draw = Callable[[TrackBoard, BoardAnalysis], Figures]


@dataclass(frozen=True)
class FigureKind:
    name: str
    draw: Draw


KINDS: dict[str, FigureKind] = {}


def figure(name: str) -> Callable[[Draw], Draw]:
    """Register a function drawing every figure of one kind for a board (none where its data is absent)."""

    def register(draw: Draw) -> Draw:
        if name in KINDS:
            raise ValueError(f"figure kind {name!r} registered twice")
        KINDS[name] = FigureKind(name, draw)
        return draw

    return register
