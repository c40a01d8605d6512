"""Q-alignment: the best method per family and environment, per temperature."""

from __future__ import annotations

from collections.abc import Iterable

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from .. import format as fmt
from ..analysis import BoardAnalysis
from ..model import BASELINE_FAMILY, TrackBoard
from . import common
from .common import MAX_SERIES
from .registry import Figures, figure

# Q-alignment families in their usual reading order; any other follows, sorted.
_QALIGN_FAMILIES = (
    "direct",
    "code",
    "intrinsic",
    "ranking",
    "self-distillation",
    "embedding",
)


def _ordered_families(families: Iterable[str]) -> list[str]:
    present = set(families)
    known = [f for f in _QALIGN_FAMILIES if f in present]
    return known + sorted(present - set(known))


@common.cached
@matplotlib.rc_context(common.RC)
def _family_png(
    board: common.BoardTraits,
    temperature: float,
    envs: list[str],
    families: list[str],
    best: pd.DataFrame,
    baselines: pd.DataFrame,
) -> bytes:
    main = board.main_metric
    env_labels = [fmt.one_line(e or fmt.UNDEFINED) for e in envs]
    family_labels = [fmt.one_line(f or fmt.UNDEFINED) for f in families]
    references = list(dict.fromkeys(baselines["method"]))[: len(common.LINE_STYLES)]
    reference_labels = [fmt.one_line(f"{m} ({BASELINE_FAMILY})") for m in references]
    fig = Figure(dpi=100)
    bottom = common.rotated_label_height(fig, env_labels)
    legend_width = common.text_width(fig, family_labels + reference_labels, common.LEGEND_SIZE) + 0.55
    plot = min(14.0, max(4.0, 0.18 * len(envs) * len(families) + 0.3 * len(envs)))
    left, top = 0.8, 0.45
    width = left + plot + 0.15 + legend_width
    height = max(3.0 + bottom + top, 0.16 * (len(families) + len(references)) + 0.6)
    fig.set_size_inches(width, height)
    ax = fig.add_axes((left / width, bottom / height, plot / width, 3.0 / height))
    bar = 0.8 / len(families)
    env_at = {e: k for k, e in enumerate(envs)}
    segments, colors = [], []
    for i, family in enumerate(families):
        part = best[best["family"] == family]
        if part.empty:
            continue
        color = common.COLORS[i % len(common.COLORS)]
        hatch = None if i < len(common.COLORS) else ("//" if i < 2 * len(common.COLORS) else "..")
        x = np.array([env_at[e] for e in part["dataset"]]) - 0.4 + bar * (i + 0.5)
        values = part[main].to_numpy()
        ax.bar(x, values, width=bar, color=color, hatch=hatch, edgecolor="white" if hatch else None, lw=0)
        lo, hi = part[f"{main}__lo"].to_numpy(), part[f"{main}__hi"].to_numpy()
        ok = ~(np.isnan(lo) | np.isnan(hi))
        segments += [((a, b), (a, c)) for a, b, c in zip(x[ok], lo[ok], hi[ok])]
        colors += ["#333"] * int(ok.sum())
    common.whiskers(ax, segments, colors)
    # Baselines bracket the families rather than compete with them: a line across each environment's bars.
    for style, method in zip(common.LINE_STYLES, references):
        part = baselines[(baselines["method"] == method) & baselines["dataset"].isin(env_at)]
        for dataset, value in zip(part["dataset"], part[main].to_numpy(float)):
            at = env_at[dataset]
            ax.plot([at - 0.45, at + 0.45], [value, value], color="#333", ls=style, lw=1.2)
    ax.autoscale_view()
    ax.axhline(0, color="#999", lw=0.8)
    ax.set_xticks(np.arange(len(envs)), labels=env_labels, rotation=30, ha="right", fontsize=common.FONT_SIZE)
    ax.set_xlim(-0.5, len(envs) - 0.5)
    ax.set_ylabel(fmt.one_line(f"{main} {fmt.direction(board.higher_is_better, main)[0]}"))
    common.title(ax, f"best method per family, T={fmt.temperature(temperature)}")
    ax.grid(axis="y", color="#eee")
    ax.set_axisbelow(True)
    common.text_legend(
        fig,
        (width - legend_width + 0.1) / width,
        [(label, common.COLORS[i % len(common.COLORS)], "bar") for i, label in enumerate(family_labels)]
        + [(label, "#333", style) for style, label in zip(common.LINE_STYLES, reference_labels)],
    )
    return common.png(fig)


@figure("family")
def family(board: TrackBoard, analysis: BoardAnalysis) -> Figures:
    main = board.main_metric
    rows = analysis.rows
    if rows.empty:
        return []
    defined = rows[rows[main].notna()]
    higher = board.higher_is_better.get(main, True)
    # Best first within each (temperature, dataset, family); ties by model, method, cell.
    defined = defined.sort_values(
        [main, "model", "method", "cell_id"], ascending=[not higher, True, True, True], kind="stable"
    )
    figures = []
    for temperature, sub in defined.groupby("temperature", dropna=False, sort=True):
        is_baseline = (sub["family"] == BASELINE_FAMILY).to_numpy()
        if is_baseline.all():
            continue  # no family to compare, only references
        baselines = sub[is_baseline].drop_duplicates(["dataset", "method"])
        best = sub[~is_baseline].drop_duplicates(["dataset", "family"])
        envs = sorted(best["dataset"].unique())
        families = _ordered_families(best["family"].unique())
        notes = []
        if len(envs) > MAX_SERIES:
            notes.append(f"first {MAX_SERIES} of {len(envs)} environments by name")
            envs = envs[:MAX_SERIES]
        if len(families) > MAX_SERIES:
            notes.append(f"first {MAX_SERIES} of {len(families)} families")
            families = families[:MAX_SERIES]
        best = best[best["dataset"].isin(envs) & best["family"].isin(families)]
        capped = f" Capped at {MAX_SERIES}: {'; '.join(notes)}." if notes else ""
        caption = (
            f"{board.title}, T={fmt.temperature(float(temperature))}: {board.label(main)} "
            f"({fmt.direction(board.higher_is_better, main)[1]}) by environment and method family; each bar is the "
            "best model \u00b7 method of that family in that environment, whiskers are its 95% "
            f"bootstrap CI where defined; baselines are drawn as lines across each environment, not as "
            f"families.{capped}"
        )
        figures.append(
            (caption, _family_png(common.traits(board), float(temperature), envs, families, best, baselines))
        )
    return figures
