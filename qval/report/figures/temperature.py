"""Decode: speedup and acceptance length vs temperature, per dataset, one line per model · method."""

from __future__ import annotations

import matplotlib
import numpy as np
import pandas as pd

from .. import format as fmt
from ..analysis import BoardAnalysis
from ..model import TrackBoard
from ..prepare import TEMPERATURE_METRICS
from . import common
from .common import MAX_SERIES
from .registry import Figures, figure


@common.cached
@matplotlib.rc_context(common.RC)
def _temperature_png(
    board: common.BoardTraits, dataset: str, metrics: list[str], series: list[tuple[str, pd.DataFrame]]
) -> bytes:
    labels = [label for label, _ in series]
    fig, axes, legend_x = common.line_layout(len(metrics), labels)
    temperatures = np.unique(np.concatenate([rows["temperature"].to_numpy() for _, rows in series]))
    step = float(np.diff(temperatures).min()) if len(temperatures) > 1 else 1.0
    for ax, metric in zip(axes, metrics):
        segments, colors = [], []
        for i, (_, rows) in enumerate(series):
            color, style = common.style(i)
            x = rows["temperature"].to_numpy() + common.dodge(i, len(series), step)
            y, lo, hi = (rows[f"{metric}{s}"].to_numpy() for s in ("", "__lo", "__hi"))
            ax.plot(x, y, color=color, ls=style, lw=1.3, marker="o", ms=3)
            ok = ~(np.isnan(y) | np.isnan(lo) | np.isnan(hi))
            segments += [((a, b), (a, c)) for a, b, c in zip(x[ok], lo[ok], hi[ok])]
            colors += [color] * int(ok.sum())
        common.whiskers(ax, segments, colors)
        if len(temperatures) <= 12:
            ax.set_xticks(temperatures)
        ax.set_xlabel("temperature")
        arrow = fmt.direction(board.higher_is_better, metric)[0]
        ax.set_ylabel(fmt.one_line(f"{metric} {arrow}"))
        common.title(ax, fmt.text(f"{dataset or fmt.UNDEFINED}: {metric}"))
        ax.grid(color="#eee")
        ax.set_axisbelow(True)
    common.text_legend(fig, legend_x, [(label, *common.style(i)) for i, label in enumerate(labels)])
    return common.png(fig)


@figure("temperature")
def temperature(board: TrackBoard, analysis: BoardAnalysis) -> Figures:
    rows = analysis.rows
    if rows.empty:
        return []
    metrics = [m for m in TEMPERATURE_METRICS if rows[m].notna().any()]
    if not metrics:
        return []
    main = board.main_metric
    rows = rows[rows["temperature"].notna() & rows[metrics].notna().any(axis=1)]
    figures = []
    for dataset, sub in rows.groupby("dataset", sort=True):
        if sub["temperature"].nunique() < 2:
            continue
        points, pooled = common.pooled(sub, ["model", "method", "temperature"], list(dict.fromkeys([*metrics, main])))
        points = points.sort_values("temperature", kind="stable")
        pairs = common.best_pairs(board, points)
        by_pair = {pair: part for pair, part in points.groupby(["model", "method"], sort=False)}
        model = fmt.single_model(points)
        series = [(fmt.pair_label(*pair, model is None), by_pair[pair]) for pair in pairs[:MAX_SERIES]]
        note = common.series_note(len(series), len(pairs), "series", f"mean {main}")
        caption = (
            f"{board.title}, {dataset or fmt.UNDEFINED}: "
            + " and ".join(board.label(m) for m in metrics)
            + f" vs temperature, one line per {common.series_what(model)} ({note}); "
            "whiskers are 95% bootstrap CIs where defined" + (f"; {common.POOLED_NOTE}." if pooled else ".")
        )
        figures.append((caption, _temperature_png(common.traits(board), dataset, metrics, series)))
    return figures
