"""Render qval leaderboards as Markdown and as a self-contained interactive HTML page.

Metrics arrive already computed (value, 95% bootstrap CI bounds, n per cell). A report is analysed once per
board (analysis.py), built once as tables (document.py, over the model in table.py) and written by two writers
(markdown.py, html.py with the templates/ and static/ files); figures are one module per kind (figures/). Every
string that can come from a model, suite or plugin is untrusted: it is HTML-escaped in the page,
markup-escaped in Markdown and kept out of mathtext in figures.

This module is the entry point: it keeps the names callers and tests import.
"""

from __future__ import annotations

from . import html as _html
from . import markdown as _markdown
from .analysis import HEADROOM_COLUMNS, BoardAnalysis, analyse, headroom_table
from .document import document
from .figures import FIGURE_KINDS, MAX_BARS, MAX_SERIES, make_figures
from .format import UNDEFINED
from .format import text as _text
from .markdown import escape as _md
from .model import SAMPLE_COLUMNS, SuiteReport, TrackBoard

_SCRIPT = _html.SCRIPT

__all__ = [
    "FIGURE_KINDS",
    "HEADROOM_COLUMNS",
    "MAX_BARS",
    "MAX_SERIES",
    "SAMPLE_COLUMNS",
    "UNDEFINED",
    "BoardAnalysis",
    "SuiteReport",
    "TrackBoard",
    "_md",
    "_text",
    "analyse",
    "headroom_table",
    "make_figures",
    "render_html",
    "render_markdown",
    "render_report",
]


def render_markdown(report: SuiteReport, analyses: list[BoardAnalysis] | None = None) -> str:
    """The leaderboard as GitHub-flavoured Markdown."""
    report.resolve()  # a board's deferred fields (TrackBoard.deferred) are in the tables
    return _markdown.write(document(report, analyses if analyses is not None else analyse(report)))


def render_html(
    report: SuiteReport, figures: list[tuple[str, bytes]], analyses: list[BoardAnalysis] | None = None
) -> str:
    """The leaderboard as one self-contained HTML page (one hash-pinned script, no external files)."""
    report.resolve()  # a board's deferred fields (TrackBoard.deferred) are in the tables
    return _html.write(document(report, analyses if analyses is not None else analyse(report)), figures)


def render_report(report: SuiteReport) -> tuple[str, str]:
    """(Markdown, HTML with every figure) of a report, each board analysed and built as tables once. The figures
    are drawn first, while the boards' deferred fields (TrackBoard.deferred) may still be computed beside."""
    analyses = analyse(report)
    figures = make_figures(report, analyses=analyses)
    report.resolve()
    doc = document(report, analyses)
    return _markdown.write(doc), _html.write(doc, figures)
