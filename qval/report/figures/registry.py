"""Figure kinds by name: each module of this package draws one kind and registers it here, with the tracks it
draws for."""

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
    tracks: tuple[str, ...] | None  # the tracks it draws for; None: any
    draw: Draw


KINDS: dict[str, FigureKind] = {}


def figure(name: str, tracks: tuple[str, ...] | None = None) -> Callable[[Draw], Draw]:
    """Register a function drawing every figure of one kind for a board (none where its data is absent)."""

    def register(draw: Draw) -> Draw:
        if name in KINDS:
            raise ValueError(f"figure kind {name!r} registered twice")
        KINDS[name] = FigureKind(name, tracks, draw)
        return draw

    return register
