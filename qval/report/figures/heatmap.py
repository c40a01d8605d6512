"""Q-alignment: the model · method x environment heatmap of the main metric, per temperature."""

from __future__ import annotations

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from .. import format as fmt
from ..analysis import BoardAnalysis
from ..model import TrackBoard
from . import common
from .common import MAX_SERIES
from .registry import Figures, figure


@common.cached
@matplotlib.rc_context(common.RC)
def _heatmap_png(board: common.BoardTraits, temperature: float, table: pd.DataFrame) -> bytes:
    main = board.main_metric
    row_labels = [fmt.one_line(r) for r in table.index]
    env_labels = [fmt.one_line(e or fmt.UNDEFINED) for e in table.columns]
    fig = Figure(dpi=100)
    left = common.label_width(fig, row_labels) + 0.1
    bottom = common.rotated_label_height(fig, env_labels)
    # At most 12 inches of cells either way (30 x 30 cells at most are drawn).
    cell_w, cell_h = min(0.75, 12.0 / len(env_labels)), 0.28
    plot_w, plot_h = max(2.0, cell_w * len(env_labels)), cell_h * len(row_labels)
    width, height = left + plot_w + 0.3, bottom + plot_h + 0.45
    fig.set_size_inches(width, height)
    ax = fig.add_axes((left / width, bottom / height, plot_w / width, plot_h / height))
    values = table.to_numpy(dtype=float)
    masked = np.ma.masked_invalid(values)
    cmap = matplotlib.colormaps["viridis" if board.higher_is_better.get(main, True) else "viridis_r"].with_extremes(
        bad="#e5e5e5"
    )
    defined = values[~np.isnan(values)]
    low, high = (float(defined.min()), float(defined.max())) if defined.size else (0.0, 1.0)
    if high <= low:
        low, high = low - 0.5, high + 0.5
    ax.imshow(masked, aspect="auto", cmap=cmap, vmin=low, vmax=high, interpolation="nearest")
    for (r, c), value in np.ndenumerate(values):
        if np.isnan(value):
            continue
        shade = (value - low) / (high - low)
        if not board.higher_is_better.get(main, True):
            shade = 1 - shade
        ax.text(c, r, f"{value:.2f}", ha="center", va="center", fontsize=7, color="black" if shade > 0.55 else "white")
    ax.set_xticks(np.arange(len(env_labels)), labels=env_labels, rotation=30, ha="right", fontsize=common.FONT_SIZE)
    ax.set_yticks(np.arange(len(row_labels)), labels=row_labels, fontsize=common.FONT_SIZE)
    ax.tick_params(length=0)
    common.title(ax, fmt.text(f"{main}, T={fmt.temperature(temperature)}"))
    return common.png(fig)


@figure("heatmap")
def heatmap(board: TrackBoard, analysis: BoardAnalysis) -> Figures:
    main = board.main_metric
    rows = analysis.rows
    if rows.empty:
        return []
    defined = rows[rows[main].notna()]
    higher = board.higher_is_better.get(main, True)
    figures = []
    for temperature, sub in defined.groupby("temperature", dropna=False, sort=True):
        single_model = sub["model"].nunique() == 1
        label = sub["method"] if single_model else sub["model"] + " \u00b7 " + sub["method"]
        stats = sub.groupby([label.rename("label"), "dataset"])[main].agg(["mean", "size"])
        averaged = bool((stats["size"] > 1).any())
        table = stats["mean"].unstack("dataset")
        envs = sorted(table.columns)
        notes = []
        if len(envs) > MAX_SERIES:
            notes.append(f"first {MAX_SERIES} of {len(envs)} environments by name")
            envs = envs[:MAX_SERIES]
        table = table[envs]
        score = table.mean(axis=1, skipna=True)
        order = pd.DataFrame({"label": table.index, "score": score.to_numpy()}).sort_values(
            ["score", "label"], ascending=[not higher, True], na_position="last", kind="stable"
        )
        names = order["label"].tolist()
        if len(names) > MAX_SERIES:
            notes.append(f"top {MAX_SERIES} of {len(names)} methods by mean over environments")
            names = names[:MAX_SERIES]
        table = table.loc[names]
        table = table[table.notna().any(axis=1)]
        if table.empty:
            continue
        capped = f" Capped at {MAX_SERIES}: {'; '.join(notes)}." if notes else ""
        what = "method" if single_model else "model \u00b7 method"
        caption = (
            f"{board.title}, T={fmt.temperature(float(temperature))}: {board.label(main)} "
            f"({fmt.direction(board.higher_is_better, main)[1]}) per {what} (rows, best mean first) and environment "
            f"(columns); grey = undefined"
            + ("; cells with several seeds show their mean" if averaged else "")
            + f".{capped}"
        )
        figures.append((caption, _heatmap_png(common.traits(board), float(temperature), table)))
    return figures
