"""Any track: the main metric per model · method, one bar chart per table group, with CI error bars."""

from __future__ import annotations

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from .. import format as fmt
from ..analysis import BoardAnalysis
from ..model import TrackBoard
from ..prepare import Group
from . import common
from .common import MAX_BARS
from .registry import Figures, figure


@common.cached
@matplotlib.rc_context(common.RC)
def _bar_chart_png(board: common.BoardTraits, group: Group, shown: pd.DataFrame, labels: list[str]) -> bytes:
    main = board.main_metric
    values = shown[main].to_numpy()
    lo, hi = shown[f"{main}__lo"].to_numpy(), shown[f"{main}__hi"].to_numpy()
    y = np.arange(len(shown))

    # Margins are set by hand: layout engines and tick labels measure every
    # text again and would double the rendering time.
    fig = Figure(dpi=100)
    left = common.label_width(fig, labels)
    width, height = left + common.PLOT_WIDTH + 0.3, 1.0 + 0.22 * len(shown)
    fig.set_size_inches(width, height)
    fig.subplots_adjust(left=left / width, right=1 - 0.3 / width, top=1 - 0.4 / height, bottom=0.55 / height)

    ax = fig.add_subplot()
    ax.barh(y, values, color="#4c78a8")
    has_ci = ~(np.isnan(lo) | np.isnan(hi))
    if has_ci.any():
        # Clipped at 0: matplotlib rejects negative error lengths, which a CI
        # that does not contain its own estimate (a plugin bug) would produce.
        xerr = np.clip(np.vstack([values - lo, hi - values]), 0, None)[:, has_ci]
        ax.errorbar(values[has_ci], y[has_ci], xerr=xerr, fmt="none", ecolor="#333", capsize=3, lw=1)
    ax.set_yticks([])
    ax.set_ylim(len(shown) - 0.5, -0.5)  # rank 1 on top, as in the tables
    label_at = ax.get_yaxis_transform()  # x in axes units, y in data units
    for position, label in zip(y.tolist(), labels):
        ax.text(-0.01, position, label, transform=label_at, ha="right", va="center", fontsize=common.FONT_SIZE)
    ax.axvline(0, color="#999", lw=0.8)
    reference = board.references.get(main)
    if reference is not None and reference != 0:
        # The value of no effect (a speedup of 1): bars left of it lose to the baseline.
        ax.axvline(reference, color="#c0392b", lw=1.0, ls="--")
    # The metric's name, not its definition (the caption carries that): a label must fit under the plot.
    ax.set_xlabel(f"{main} ({fmt.direction(board.higher_is_better, main)[1]})")
    common.title(ax, fmt.text(group.title), fontsize=12)
    ax.grid(axis="x", color="#eee")
    ax.set_axisbelow(True)
    return common.png(fig)


def _caption(board: TrackBoard, group: Group, shown: int, defined: int) -> str:
    subset = f"top {shown} of {defined} rows" if shown < defined else f"all {defined} rows"
    reference = board.references.get(board.main_metric)
    line = f"; the dashed red line marks {reference:g}, no effect" if reference not in (None, 0) else ""
    return (
        f"{board.title}, {group.title}: {board.label(board.main_metric)} "
        f"per model \u00b7 method ({subset} with a defined value; "
        f"error bars are 95% bootstrap CIs where defined{line})."
    )


@figure("ranking")
def ranking(board: TrackBoard, analysis: BoardAnalysis) -> Figures:
    figures = []
    for group in analysis.groups:
        defined = group.rows[group.rows[board.main_metric].notna()]
        if defined.empty:
            continue
        shown = defined.head(MAX_BARS)  # rows are ranked, so these are the best
        # Labels come from all defined rows so that a pair's seed is shown
        # even when its other seeds fall outside the top rows.
        labels = fmt.bar_labels(defined)[:MAX_BARS]
        caption = _caption(board, group, len(shown), len(defined))
        figures.append((caption, _bar_chart_png(common.traits(board), group, shown, labels)))
    return figures
