"""Decode with samples: the distribution of per-sample acceptance length (tau), per table group, one step
histogram per model · method."""

from __future__ import annotations

import matplotlib
import numpy as np

from .. import format as fmt
from ..analysis import BoardAnalysis
from ..model import TrackBoard
from ..prepare import Group
from . import common
from .common import MAX_SERIES
from .registry import Figures, figure


@common.cached
@matplotlib.rc_context(common.RC)
def _histogram_png(group: Group, series: list[tuple[str, np.ndarray]]) -> bytes:
    labels = [label for label, _ in series]
    fig, (ax,), legend_x = common.line_layout(1, labels, panel_width=5.0)
    pooled = np.concatenate([taus for _, taus in series])
    low, high = float(pooled.min()), float(pooled.max())
    if high - low < 1e-9:
        low, high = low - 0.5, high + 0.5
    edges = np.histogram_bin_edges(pooled, bins=min(40, max(5, int(np.sqrt(pooled.size)))), range=(low, high))
    for i, (_, taus) in enumerate(series):
        color, style = common.style(i)
        counts, _ = np.histogram(taus, bins=edges)
        # A stepped line, not ax.stairs: patches recompute data limits slowly.
        heights = np.r_[0.0, counts / taus.size, 0.0]
        ax.plot(np.r_[edges[0], edges], heights, drawstyle="steps-post", color=color, ls=style, lw=1.3)
    ax.set_xlabel("acceptance length per sample (tau)")
    ax.set_ylabel("fraction of samples")
    common.title(ax, fmt.text(group.title))
    ax.grid(color="#eee")
    ax.set_axisbelow(True)
    common.text_legend(fig, legend_x, [(label, *common.style(i)) for i, label in enumerate(labels)])
    return common.png(fig)


@figure("tau_histogram")
def tau_histogram(board: TrackBoard, analysis: BoardAnalysis) -> Figures:
    if not analysis.groups:
        return []
    taus = analysis.taus
    figures = []
    for group in analysis.groups:
        rows = group.rows.drop_duplicates("cell_id")
        rows = rows[rows["cell_id"].isin(taus.keys())]
        if rows.empty:
            continue
        # Ranked rows, so pairs come best first; a pair's cells (seeds) are pooled.
        parts: dict[tuple[str, str], list[np.ndarray]] = {}
        for model, method, cell in zip(rows["model"], rows["method"], rows["cell_id"]):
            parts.setdefault((model, method), []).append(taus[cell])
        model = fmt.single_model(rows)
        series = [(fmt.pair_label(*pair, model is None), np.concatenate(arrays)) for pair, arrays in parts.items()][
            :MAX_SERIES
        ]
        pooled = any(len(arrays) > 1 for arrays in parts.values())
        note = common.series_note(len(series), len(parts), "series with samples", "rank")
        caption = (
            f"{board.title}, {group.title}: distribution of the per-sample acceptance "
            f"length tau, one step histogram per {common.series_what(model)} ({note}); "
            "heights are fractions of each series' samples"
            + ("; the samples of several cells (seeds) of one series are pooled." if pooled else ".")
        )
        figures.append((caption, _histogram_png(group, series)))
    return figures
