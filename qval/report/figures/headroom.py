"""Decode with samples: the best fixed policy vs the per-sample oracle over policies vs each adaptive policy,
per table group."""

from __future__ import annotations

import matplotlib
import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from .. import format as fmt
from ..analysis import BoardAnalysis, Headroom
from ..model import TrackBoard
from . import common
from .common import MAX_SERIES
from .registry import Figures, figure


@common.cached
@matplotlib.rc_context(common.RC)
def _headroom_png(room: Headroom, bars: list[tuple[str, float, str]]) -> bytes:
    labels = [label for label, _, _ in bars]
    fig = Figure(dpi=100)
    left = common.label_width(fig, labels)
    plot = 4.5
    width, height = left + plot + 0.9, 1.0 + 0.24 * len(bars)
    fig.set_size_inches(width, height)
    fig.subplots_adjust(left=left / width, right=1 - 0.9 / width, top=1 - 0.4 / height, bottom=0.55 / height)
    ax = fig.add_subplot()
    y = np.arange(len(bars))
    values = np.array([value for _, value, _ in bars])
    ax.barh(y, values, color=[color for _, _, color in bars], height=0.6)
    ax.set_yticks([])
    ax.set_ylim(len(bars) - 0.5, -0.5)
    label_at = ax.get_yaxis_transform()
    for position, label, value in zip(y.tolist(), labels, values.tolist()):
        ax.text(-0.01, position, label, transform=label_at, ha="right", va="center", fontsize=common.FONT_SIZE)
        # Values printed for the two reference bars, and for all when there are few.
        if position < 2 or len(bars) <= 12:
            ax.text(value, position, f" {value:.3f}", va="center", fontsize=common.LEGEND_SIZE)
    ax.set_xlim(0, values.max() * 1.15 if values.max() > 0 else 1)
    ax.xaxis.set_major_locator(MaxNLocator(5))
    ax.set_xlabel("mean acceptance length per sample (tau)")
    common.title(ax, fmt.text(f"headroom: {room.group.title}"))
    ax.grid(axis="x", color="#eee")
    ax.set_axisbelow(True)
    return common.png(fig)


@figure("headroom")
def headroom(board: TrackBoard, analysis: BoardAnalysis) -> Figures:
    figures = []
    for room in analysis.headrooms:
        bars = [
            (fmt.one_line(f"best fixed: {room.best_fixed_label}"), room.best_fixed_tau, "#4c78a8"),
            ("per-instance oracle over policies", room.oracle_tau, "#bab0ac"),
        ]
        # Best first; sorted() is stable, so equal means keep the table's rank order.
        adaptive = sorted(room.adaptive, key=lambda item: -item[1])[:MAX_SERIES]
        bars += [(fmt.one_line(f"adaptive: {label}"), tau, "#f58518") for label, tau in adaptive]
        capped = (
            f" (top {len(adaptive)} of {len(room.adaptive)} adaptive cells by mean tau; "
            f"the figure is capped at {MAX_SERIES})"
            if len(adaptive) < len(room.adaptive)
            else ""
        )
        caption = (
            f"{board.title}, {room.group.title}{f', {room.model}' if room.model else ''}: mean per-sample acceptance length over the "
            f"{room.n_samples} samples that all {room.n_cells} policies ran, for the best fixed "
            f"policy ({room.best_fixed_method}), the per-instance oracle over policies and each "
            f"adaptive policy{capped}. The oracle picks the best of the {room.n_cells} policies for "
            "every sample after the fact: it is an upper bound, not a policy."
        )
        figures.append((caption, _headroom_png(room, bars)))
    return figures
