"""Decode: speed against quality. Measured speedup (x) vs task accuracy (y) per model · method, one panel per table
group whose dataset has a checker, AR's accuracy as a line, lossy policies marked, and the Pareto front."""

from __future__ import annotations

import matplotlib
import numpy as np
import pandas as pd

from ...cell import LOSSY_FAMILY
from .. import format as fmt
from ..analysis import BoardAnalysis
from ..model import BASELINE_FAMILY, TrackBoard
from . import common
from .common import MAX_SERIES
from .registry import Figures, figure

SPEED, QUALITY = "speedup", "task_accuracy"
MARKERS = {"lossless": "o", "lossy": "X", "baseline": "s"}


def pareto_front(speed: np.ndarray, quality: np.ndarray) -> list[int]:
    """Indices of the points no other point dominates (another at least as fast and as accurate, and strictly
    better in one), by point estimate; ordered by speed. Ties keep every copy (none dominates the other)."""
    front = []
    for i in range(len(speed)):
        dominated = (speed >= speed[i]) & (quality >= quality[i]) & ((speed > speed[i]) | (quality > quality[i]))
        if not dominated.any():
            front.append(i)
    return sorted(front, key=lambda i: (speed[i], -quality[i]))


def kind_of(family: str) -> str:
    if family == LOSSY_FAMILY:
        return "lossy"
    return "baseline" if family == BASELINE_FAMILY else "lossless"


@common.cached
@matplotlib.rc_context(common.RC)
def _speed_quality_png(title: str, shown: pd.DataFrame, labels: list[str], front: list[int], ar: float | None) -> bytes:
    legend = [f"{label} ({kind})" for label, kind in zip(labels, shown["kind"])]
    fig, (ax,), legend_x = common.line_layout(1, legend, panel_width=5.0, panel_height=3.6)
    x, y = shown[SPEED].to_numpy(float), shown[QUALITY].to_numpy(float)
    segments, colors = [], []
    for i in range(len(shown)):
        color, _ = common.style(i)
        ax.scatter([x[i]], [y[i]], color=color, marker=MARKERS[shown["kind"].iloc[i]], s=36, zorder=3)
        for lo, hi, vertical in ((f"{QUALITY}__lo", f"{QUALITY}__hi", True), (f"{SPEED}__lo", f"{SPEED}__hi", False)):
            a, b = float(shown[lo].iloc[i]), float(shown[hi].iloc[i])
            if np.isfinite(a) and np.isfinite(b):
                segments.append(((x[i], a), (x[i], b)) if vertical else ((a, y[i]), (b, y[i])))
                colors.append(color)
    common.whiskers(ax, segments, colors)
    if front:
        ax.step(x[front], y[front], where="post", color="#444", lw=1.0, ls="--", zorder=2)
    if ar is not None:
        ax.axhline(ar, color="#888", lw=0.8, ls=":")
    ax.axvline(1.0, color="#bbb", lw=0.8)
    ax.set_ylim(-0.03, 1.03)
    ax.set_xlabel("measured speedup vs AR \u2191")
    ax.set_ylabel("task accuracy \u2191")
    common.title(ax, title)
    ax.grid(color="#eee")
    ax.set_axisbelow(True)
    common.text_legend(fig, legend_x, [(text, *common.style(i)) for i, text in enumerate(legend)])
    return common.png(fig)


@figure("speed_quality")
def speed_quality(board: TrackBoard, analysis: BoardAnalysis) -> Figures:
    figures = []
    for group in analysis.groups:
        rows = group.rows
        if QUALITY not in rows or SPEED not in rows:
            continue
        both = rows[rows[QUALITY].notna() & rows[SPEED].notna()]
        if both.empty:
            continue  # no checker for this dataset (accuracy undefined), or no speedup: nothing to place
        points, pooled = common.pooled(both, ["model", "method", "family"], [SPEED, QUALITY])
        points["kind"] = [kind_of(f) for f in points["family"]]
        shown = points.head(MAX_SERIES).reset_index(drop=True)
        front = pareto_front(shown[SPEED].to_numpy(float), shown[QUALITY].to_numpy(float))
        ar_rows = shown[shown["kind"] == "baseline"]
        ar = float(ar_rows[QUALITY].mean()) if not ar_rows.empty else None
        model = fmt.single_model(shown)
        labels = [fmt.pair_label(m, p, model is None) for m, p in zip(shown["model"], shown["method"])]
        on_front = ", ".join(labels[i] for i in front)
        note = common.series_note(len(shown), len(points), "series with speedup and task accuracy", "rank")
        caption = (
            f"{board.title}, {group.title}: measured speedup vs AR (x) against task accuracy (y), one point per "
            f"{common.series_what(model)} ({note}); square = AR, circle = lossless policy, cross = lossy policy "
            "(family 'lossy'). The dotted line is AR's accuracy: a lossless policy emits AR's tokens at T = 0 and "
            "lands on it (at T > 0 within sampling noise); a lossy one lands wherever its outputs score. Whiskers "
            "are 95% CIs (Wilson for accuracy, paired bootstrap for speedup). Dashed: the Pareto front of the "
            f"point estimates (no other point both faster and more accurate): {on_front}"
            + (f"; {common.POOLED_NOTE}." if pooled else ".")
        )
        figures.append((caption, _speed_quality_png(fmt.text(group.title), shown, labels, front, ar)))
    return figures
