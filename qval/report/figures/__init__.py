"""Figures of a report, one module per kind, each registered by name (registry.py)."""

from __future__ import annotations

from collections.abc import Iterable

from ..analysis import BoardAnalysis, analyse
from ..model import SuiteReport
from . import (  # noqa: F401 (register)
    acceptance,
    family,
    headroom,
    heatmap,
    ranking,
    speed_quality,
    tau_histogram,
    temperature,
    usefulness,
)
from .common import MAX_BARS, MAX_SERIES
from .registry import KINDS, Figures

# Every kind of figure make_figures can draw, in the order they are returned per track.
FIGURE_KINDS = (
    "ranking",  # any track: main metric per model · method, one bar chart per table group
    "temperature",  # decode: speedup and acceptance length vs temperature, per dataset
    "acceptance",  # decode: accept_rate@i vs draft position i, per table group
    "tau_histogram",  # decode with samples: per-sample acceptance length histograms, per group
    "headroom",  # decode with samples: best fixed policy vs per-sample oracle vs adaptive
    "speed_quality",  # decode with a checked dataset: speedup vs task accuracy, lossy policies marked, Pareto front
    "family",  # qalign: best method per family and environment, per temperature
    "heatmap",  # qalign: model · method x environment heatmap, per temperature
    "usefulness",  # qalign with guided metrics: per-state rho vs guided success and regret, rank correlation
)
assert set(FIGURE_KINDS) == set(KINDS), "every registered kind has its place in FIGURE_KINDS"

__all__ = ["FIGURE_KINDS", "MAX_BARS", "MAX_SERIES", "make_figures"]


def make_figures(
    report: SuiteReport, kinds: Iterable[str] | None = None, analyses: list[BoardAnalysis] | None = None
) -> Figures:
    """(caption, PNG bytes) for every figure whose data is present.

    Per track, in FIGURE_KINDS order: the main-metric bar chart per table group
    (every track); for decode, metrics vs temperature per dataset (with at least
    two temperatures), per-position acceptance per group (with accept_rate@i
    columns), and, with samples, tau histograms and headroom per group; for
    qalign, best method per family and environment, and the method x environment
    heatmap, per temperature, and, with guided metrics, per-state rho against guided
    success and regret. `kinds` restricts the output to some of FIGURE_KINDS.
    `analyses` (analysis.analyse(report)) shares the work with the tables.
    """
    wanted = set(FIGURE_KINDS if kinds is None else kinds)
    unknown = wanted - set(FIGURE_KINDS)
    if unknown:
        raise ValueError(f"unknown figure kinds: {', '.join(sorted(unknown))}")
    figures: Figures = []
    for board, analysis in zip(report.tracks, analyses if analyses is not None else analyse(report)):
        for name in FIGURE_KINDS:
            kind = KINDS[name]
            if name in wanted and name in (board.figures or ()):
                figures += kind.draw(board, analysis)
    return figures
