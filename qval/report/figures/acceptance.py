"""Decode: the acceptance rate accept_rate@i vs draft position i, per table group, one line per model · method."""

from __future__ import annotations

import matplotlib
import numpy as np
import pandas as pd

from .. import format as fmt
from ..analysis import BoardAnalysis
from ..model import TrackBoard
from ..prepare import Group, accept_positions
from . import common
from .common import MAX_SERIES
from .registry import Figures, figure


@common.cached
@matplotlib.rc_context(common.RC)
def _acceptance_png(group: Group, positions: list[int], shown: pd.DataFrame, labels: list[str]) -> bytes:
    fig, (ax,), legend_x = common.line_layout(1, labels, panel_width=5.0)
    x = np.array(positions, dtype=float)
    columns = [f"accept_rate@{i}" for i in positions]
    values = shown[columns].to_numpy()
    lows = shown[[f"{c}__lo" for c in columns]].to_numpy()
    highs = shown[[f"{c}__hi" for c in columns]].to_numpy()
    segments, colors = [], []
    step = float(np.diff(x).min()) if len(x) > 1 else 1.0
    for i in range(len(shown)):
        color, style = common.style(i)
        xs = x + common.dodge(i, len(shown), step)
        ax.plot(xs, values[i], color=color, ls=style, lw=1.3, marker="o", ms=3)
        ok = ~(np.isnan(values[i]) | np.isnan(lows[i]) | np.isnan(highs[i]))
        segments += [((a, b), (a, c)) for a, b, c in zip(xs[ok], lows[i][ok], highs[i][ok])]
        colors += [color] * int(ok.sum())
    common.whiskers(ax, segments, colors)
    everything = np.concatenate([values.ravel(), lows.ravel(), highs.ravel()])
    everything = everything[~np.isnan(everything)]
    if everything.size and everything.min() >= 0 and everything.max() <= 1:
        ax.set_ylim(0, 1.03)
    if len(positions) <= 16:
        ax.set_xticks(x)
    ax.set_xlabel("draft position i")
    ax.set_ylabel("acceptance rate at position i")
    common.title(ax, fmt.text(group.title))
    ax.grid(color="#eee")
    ax.set_axisbelow(True)
    common.text_legend(fig, legend_x, [(label, *common.style(i)) for i, label in enumerate(labels)])
    return common.png(fig)


@figure("acceptance")
def acceptance(board: TrackBoard, analysis: BoardAnalysis) -> Figures:
    positions = accept_positions(board)
    if not positions:
        return []
    columns = [f"accept_rate@{i}" for i in positions]
    figures = []
    for group in analysis.groups:
        with_rates = group.rows[group.rows[columns].notna().any(axis=1)]
        if with_rates.empty:
            continue
        # Ranked rows, grouped in order of first appearance: best pairs first.
        points, pooled = common.pooled(with_rates, ["model", "method"], columns)
        shown = points.head(MAX_SERIES)
        model = fmt.single_model(points)
        labels = [fmt.pair_label(m, p, model is None) for m, p in zip(shown["model"], shown["method"])]
        note = common.series_note(len(shown), len(points), "series with acceptance rates", "rank")
        caption = (
            f"{board.title}, {group.title}: per-position acceptance rate accept_rate@i "
            f"vs draft position i, one line per {common.series_what(model)} ({note}); "
            "whiskers are 95% bootstrap CIs where defined" + (f"; {common.POOLED_NOTE}." if pooled else ".")
        )
        figures.append((caption, _acceptance_png(group, positions, shown, labels)))
    return figures
