"""Q-alignment: does alignment predict usefulness? Per-state ρ against guided success and guided regret, one point
per board row that has both, with the rank correlation across rows (qval.qalign.usefulness) in the caption."""

from __future__ import annotations

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from ...qalign.usefulness import ALIGNMENT, LABEL, USEFULNESS, RankCorrelation, alignment_usefulness, usefulness_rows
from .. import format as fmt
from ..analysis import BoardAnalysis
from ..model import TrackBoard
from . import common
from .registry import Figures, figure

MAX_POINTS = 200  # points per panel; beyond it the figure shows the first rows by environment and method
UP, DOWN = "\u2191", "\u2193"
MAX_LABELS = 24  # points per panel named by their method; more would overlap into noise


def describe(c: RankCorrelation) -> str:
    """How one correlation reads: 'ρ = 0.812 [0.401, 0.967], n = 9' or '– (why)'."""
    if c.value is None:
        return f"{fmt.UNDEFINED} ({c.reason}; n = {c.n})"
    ci = f" [{c.ci_low:.3f}, {c.ci_high:.3f}]" if c.ci_low is not None and c.ci_high is not None else ""
    return f"\u03c1 = {c.value:.3f}{ci}, n = {c.n}" + (f" ({c.reason})" if c.reason else "")


@common.cached
@matplotlib.rc_context(common.RC)
def _usefulness_png(metrics: list[str], envs: list[str], points: pd.DataFrame, titles: list[str]) -> bytes:
    fig = Figure(dpi=100)
    env_labels = [fmt.one_line(e or fmt.UNDEFINED) for e in envs]
    legend_width = common.text_width(fig, env_labels, common.LEGEND_SIZE) + 0.55
    panel, gap, left, bottom, top = 3.6, 1.0, 0.75, 0.55, 0.45
    width = left + len(metrics) * panel + (len(metrics) - 1) * gap + 0.15 + legend_width
    height = max(panel + bottom + top, 0.16 * len(envs) + 0.6)
    fig.set_size_inches(width, height)
    color = {e: common.COLORS[i % len(common.COLORS)] for i, e in enumerate(envs)}
    axes = [
        fig.add_axes(
            ((left + k * (panel + gap)) / width, (height - top - panel) / height, panel / width, panel / height)
        )
        for k in range(len(metrics))
    ]
    for ax, metric, title in zip(axes, metrics, titles):
        part = points[points[metric].notna()]
        x, y = part[ALIGNMENT].to_numpy(float), part[metric].to_numpy(float)
        colors = [color[e] for e in part["dataset"]]
        x_lo, x_hi = part[f"{ALIGNMENT}__lo"].to_numpy(float), part[f"{ALIGNMENT}__hi"].to_numpy(float)
        y_lo, y_hi = part[f"{metric}__lo"].to_numpy(float), part[f"{metric}__hi"].to_numpy(float)
        segments, seg_colors = [], []
        for i in range(len(part)):  # horizontal whisker: per-state ρ's CI; vertical: the guided metric's
            if np.isfinite(x_lo[i]) and np.isfinite(x_hi[i]):
                segments.append(((x_lo[i], y[i]), (x_hi[i], y[i])))
                seg_colors.append(colors[i])
            if np.isfinite(y_lo[i]) and np.isfinite(y_hi[i]):
                segments.append(((x[i], y_lo[i]), (x[i], y_hi[i])))
                seg_colors.append(colors[i])
        common.whiskers(ax, segments, seg_colors)
        ax.scatter(x, y, c=colors, s=22, zorder=3, edgecolors="white", linewidths=0.5)
        if len(part) <= MAX_LABELS:
            for xi, yi, name in zip(x, y, part["method"]):
                ax.annotate(fmt.one_line(name), (xi, yi), xytext=(3, 3), textcoords="offset points", fontsize=6.5)
        ax.autoscale_view()
        ax.set_xlabel(f"{ALIGNMENT} (per-state \u03c1) \u2191")
        ax.set_ylabel(f"{metric} {DOWN if metric == 'guided_regret' else UP}")
        ax.grid(color="#eee")
        ax.set_axisbelow(True)
        common.title(ax, title)
    common.text_legend(fig, (width - legend_width + 0.1) / width, [(e, color[e], "bar") for e in env_labels])
    return common.png(fig)


@figure("usefulness")
def usefulness(board: TrackBoard, analysis: BoardAnalysis) -> Figures:
    rows = usefulness_rows(analysis.rows)
    correlations = {c.metric: c for c in alignment_usefulness(analysis.rows)}
    if rows.empty or not correlations:
        return []  # no guided metric listed, or no row has both: nothing to draw
    metrics = [m for m, _, _ in USEFULNESS if m in correlations]
    rows = rows.sort_values(["dataset", "model", "method", "temperature", "seed", "cell_id"], kind="stable")
    note = ""
    if len(rows) > MAX_POINTS:
        note = f" Capped: the first {MAX_POINTS} of {len(rows)} rows by environment, model and method."
        rows = rows.iloc[:MAX_POINTS]
    envs = sorted(rows["dataset"].unique())
    columns = ["dataset", "method", *(f"{m}{s}" for m in [ALIGNMENT, *metrics] for s in ("", "__lo", "__hi"))]
    points = rows[columns].reset_index(drop=True)
    titles = [f"per-state \u03c1 vs {correlations[m].label}: {describe(correlations[m])}" for m in metrics]
    summary = "; ".join(f"per-state \u03c1 vs {correlations[m].label}: {describe(correlations[m])}" for m in metrics)
    caption = (
        f"{board.title}: does alignment predict usefulness? Per-state \u03c1 (x) against "
        + " and ".join(metrics)
        + " (y), one point per row with both values (model \u00b7 method \u00b7 environment \u00b7 temperature \u00b7 "
        f"seed), colour per environment, named by method where at most {MAX_LABELS} points share a panel; whiskers "
        f"are each value's 95% CI. Rank correlation: {summary}. {LABEL}{note}"
    )
    return [(caption, _usefulness_png(metrics, envs, points, titles))]
