"""What every figure kind shares: matplotlib settings, PNG encoding, hand-set layouts, legends, whiskers, and the
pooling of a pair's cells (seeds) into one series.

Agg is used directly through the object-oriented API rather than pyplot: importing this module never switches the
host process's backend, and no figure is registered globally, so none can leak or needs closing."""

from __future__ import annotations

import functools
import io
import textwrap
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import matplotlib
import numpy as np
import pandas as pd
import PIL
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.collections import LineCollection
from matplotlib.figure import Figure
from matplotlib.font_manager import FontProperties
from matplotlib.lines import Line2D
from matplotlib.patches import Rectangle
from matplotlib.ticker import MaxNLocator
from PIL import Image

from .. import cache
from ..model import TrackBoard

MAX_BARS = 30  # bars per figure; keeps figure rendering cheap and readable
MAX_SERIES = 30  # lines, histograms or heatmap rows/columns per figure
FONT_SIZE = 9  # points, for the bar labels
LEGEND_SIZE = 8  # points, for legend entries
PLOT_WIDTH = 6.0  # inches of plot area, to the right of the bar labels
COLORS = (
    "#4c78a8",
    "#f58518",
    "#54a24b",
    "#e45756",
    "#72b7b2",
    "#b279a2",
    "#eeca3b",
    "#9d755d",
    "#ff9da6",
    "#79706e",
)
LINE_STYLES = ("-", "--", ":")
# Names are untrusted and a '$' would start mathtext, which raises on invalid
# TeX, so math parsing is off. Unhinted text renders about 20% faster, and
# text is most of the cost of these figures. A fixed title height spares
# matplotlib measuring every tick label to place the title (no figure here has
# tick labels above its axes).
RC: dict[str, Any] = {"text.parse_math": False, "text.hinting": "no_hinting", "axes.titley": 1.0}


def text_width(fig: Figure, labels: list[str], size: float = FONT_SIZE) -> float:
    """Inches taken by the longest (by characters) of labels, with 10% slack."""
    if not labels:
        return 0.0
    renderer = FigureCanvasAgg(fig).get_renderer()
    longest = max(labels, key=len)
    width, _, _ = renderer.get_text_width_height_descent(longest, FontProperties(size=size), ismath=False)
    return 1.1 * width / fig.dpi


def label_width(fig: Figure, labels: list[str]) -> float:
    """Inches needed left of the plot for the labels.

    Only the longest label is measured, with 10% slack: shaping text is the
    slowest step in rendering these figures, so measuring every one would cost
    nearly as much as drawing it.
    """
    return text_width(fig, labels) + 0.2


def png(fig: Figure) -> bytes:
    """The figure as a 256-colour PNG.

    Charts use few colours, so an adaptive palette looks the same as RGBA while
    the file is about a quarter of the size (the page embeds every figure) and
    encoding takes half the time.
    """
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    rgb = np.ascontiguousarray(np.asarray(canvas.buffer_rgba())[..., :3])
    image = Image.fromarray(rgb).quantize(256, method=Image.Quantize.FASTOCTREE)
    buffer = io.BytesIO()
    image.save(buffer, format="png", compress_level=1)
    return buffer.getvalue()


# Besides the drawing function's own module, the code every figure's pixels depend on.
_FIGURE_CODE = ("qval.report.figures.common", "qval.report.format", "qval.report.prepare", "qval.report.analysis")


def cached(draw: Callable[..., bytes]) -> Callable[..., bytes]:
    """A PNG-drawing function whose result the report folder's cache keeps (cache.py), keyed by its arguments, its
    code, matplotlib's and Pillow's versions and settings: a rebuild draws only the figures whose data changed,
    byte for byte the PNG drawing them again would give. Its arguments must be all it reads (pass a BoardTraits,
    not the board, whose rows hold every group's data)."""

    @functools.wraps(draw)
    def wrapper(*args: Any) -> bytes:
        store = cache.active()
        if store is None:
            return draw(*args)
        name = cache.key(
            "figure",
            cache.code_version(*_FIGURE_CODE, draw.__module__),
            [matplotlib.__version__, PIL.__version__, repr(sorted(matplotlib.rcParams.items()))],
            draw.__qualname__,
            list(args),
        )
        data = store.get("figures", name + ".png")
        if data is None:
            data = draw(*args)
            store.put("figures", name + ".png", data)
        return data

    return wrapper


@dataclass(frozen=True)
class BoardTraits:
    """What a figure reads of its board besides its own group's data."""

    main_metric: str
    higher_is_better: dict[str, bool]
    references: dict[str, float]


def traits(board: TrackBoard) -> BoardTraits:
    return BoardTraits(board.main_metric, dict(board.higher_is_better), dict(board.references))


def dodge(i: int, n: int, step: float) -> float:
    """x offset of series i of n, so that whiskers at the same x stay apart (30% of a step)."""
    return 0.0 if n < 2 else (i - (n - 1) / 2) * 0.3 * step / (n - 1)


def style(i: int) -> tuple[str, str]:
    """(colour, line style) of series i: 30 distinct combinations."""
    return COLORS[i % len(COLORS)], LINE_STYLES[(i // len(COLORS)) % len(LINE_STYLES)]


def series_note(shown: int, total: int, what: str, by: str) -> str:
    if shown < total:
        return f"top {shown} of {total} {what} by {by}; the figure is capped at {MAX_SERIES}"
    return f"all {total} {what}"


def line_layout(
    n_panels: int, legend: list[str], panel_width: float = 4.2, panel_height: float = 3.0
) -> tuple[Figure, list, float]:
    """Figure with n_panels axes side by side and room on the right for a text legend.

    Margins are set by hand (no layout engine) and the legend is plain text:
    both would otherwise measure every label again, which is most of the cost.
    Returns (figure, axes, legend x position in figure fraction).
    """
    fig = Figure(dpi=100)
    legend_width = text_width(fig, legend, LEGEND_SIZE) + 0.55 if legend else 0.0
    left, gap, right, bottom, top = 0.75, 0.75, 0.15, 0.55, 0.45
    width = left + n_panels * panel_width + (n_panels - 1) * gap + right + legend_width
    height = max(panel_height + bottom + top, 0.16 * len(legend) + 0.6)
    fig.set_size_inches(width, height)
    axes = []
    for k in range(n_panels):
        x0 = left + k * (panel_width + gap)
        # Top-aligned with the legend, which may be taller than the plot.
        y0 = height - top - panel_height
        ax = fig.add_axes((x0 / width, y0 / height, panel_width / width, panel_height / height))
        # Few ticks: each tick label is a text to shape, the dominant cost of a figure.
        ax.yaxis.set_major_locator(MaxNLocator(5))
        axes.append(ax)
    return fig, axes, (width - legend_width + 0.1) / width


def text_legend(fig: Figure, x: float, entries: list[tuple[str, str, str]]) -> None:
    """A legend of (label, colour, mark) drawn as plain marks and text at figure x. The mark is the chart's own:
    a line style ("-", "--", ":") for a line, "bar" for a bar (a filled square)."""
    width, height = fig.get_size_inches()
    top = 1 - 0.45 / height
    step = 0.16 / height
    for k, (label, color, mark) in enumerate(entries):
        y = top - k * step
        if mark == "bar":
            side = 0.1  # inches
            fig.add_artist(
                Rectangle((x + 0.1 / width, y - side / 2 / height), side / width, side / height, color=color, lw=0)
            )
        else:
            fig.add_artist(Line2D([x, x + 0.3 / width], [y, y], color=color, ls=mark, lw=1.5))
        fig.text(x + 0.38 / width, y, label, fontsize=LEGEND_SIZE, va="center")


def title(ax, text: str, fontsize: float = 10) -> None:
    """A title that wraps to the width of its axes instead of being cut (at most three lines; the caption under
    the figure always carries the full text), the figure grown at the top to hold the extra lines. Call it before
    drawing anything placed in figure coordinates (text_legend)."""
    fig = ax.figure
    width, height = fig.get_size_inches()
    chars = max(20, int(ax.get_position().width * width / (0.078 * fontsize / 10)))
    lines = textwrap.wrap(" ".join(str(text).split()), chars, break_long_words=True)[:3] or [""]
    # Panels side by side share the room made for the longest of their titles.
    added = getattr(fig, "_qval_title_lines", 0)
    extra = max(0, len(lines) - 1 - added) * fontsize * 1.3 / 72  # inches per added line
    fig._qval_title_lines = max(added, len(lines) - 1)  # type: ignore[attr-defined]
    if extra:
        for other in fig.axes:
            x0, y0, w, h = other.get_position().bounds
            other.set_position((x0, y0 * height / (height + extra), w, h * height / (height + extra)))
        fig.set_size_inches(width, height + extra)
    ax.set_title("\n".join(lines), fontsize=fontsize)


def whiskers(ax, segments: list, colors: list) -> None:
    """Vertical CI whiskers as one collection (cheaper than errorbar), inside the data limits."""
    if segments:
        ax.add_collection(LineCollection(segments, colors=colors, linewidths=0.9), autolim=True)
        ax.autoscale_view()


POOLED_NOTE = "where a series has several cells (seeds), the point is their mean and the whisker spans all their CIs"


def series_what(model: str | None) -> str:
    return f"method (model {model})" if model is not None else "model \u00b7 method"


def pooled(rows: pd.DataFrame, by: list[str], metrics: list[str]) -> tuple[pd.DataFrame, bool]:
    """Rows aggregated per `by` (in order of first appearance): mean value, lowest CI
    low and highest CI high of each metric; and whether any aggregate has several rows."""
    spec = {}
    for metric in metrics:
        spec[metric] = (metric, "mean")
        spec[f"{metric}__lo"] = (f"{metric}__lo", "min")
        spec[f"{metric}__hi"] = (f"{metric}__hi", "max")
    grouped = rows.groupby(by, sort=False)
    return grouped.agg(**spec).reset_index(), bool((grouped.size() > 1).any())


def best_pairs(board: TrackBoard, points: pd.DataFrame) -> list[tuple[str, str]]:
    """(model, method) pairs, best mean main metric first, undefined last."""
    main = board.main_metric
    mean = points.groupby(["model", "method"], sort=False)[main].mean().reset_index()
    mean = mean.sort_values(
        [main, "model", "method"],
        ascending=[not board.higher_is_better.get(main, True), True, True],
        na_position="last",
        kind="stable",
    )
    return list(zip(mean["model"], mean["method"]))


def rotated_label_height(fig: Figure, labels: list[str]) -> float:
    """Inches below the axes for x labels rotated by 30 degrees."""
    return 0.5 * text_width(fig, labels) + 0.35
