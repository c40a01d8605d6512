"""A report as the writers see it: per track, its legend and notes and every table, built once from the board
and its analysis. Both writers (markdown.py, html.py) lay out this same document."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from ..loadwatch import BUSY_OTHER_CORES
from ..stats import LOW_N
from ..tracks import find_track
from . import format as fmt
from .analysis import (
    BoardAnalysis,
    Headroom,
    failure_rows,
    family_rows,
    paired_p_values,
    under_load,
)
from .links import cell_page
from .model import SuiteReport, TrackBoard
from .prepare import CI_SUFFIXES, Group
from .table import Cell, Column, Row, Table, Whisker

CI_NOTE = (
    "Cells: value [95% CI] (n = the unit each metric's definition names; 'S states' = distinct states behind a "
    f"count of evaluation points; 'low n' = fewer than {LOW_N} independent units); "
    f"{fmt.UNDEFINED} = undefined; n_failed = samples that failed."
)
LOAD_FLAG = "\u26a0 timed under load"
LOAD_NOTE = (
    f"\u26a0 timed under load: while this cell was timed, other processes kept more than {BUSY_OTHER_CORES} cores "
    "busy on average, so its timings, and the speedups computed from them, measured the competition as much as "
    "the policy. Re-run it alone, ideally with `qval run --require-idle`."
)
PAIRED_NOTE = (
    "p vs next: two-sided sign-flip permutation test of this row against the next-ranked one, paired on "
    "the states both scored (main metric per state); a large p means the two ranks are not "
    "distinguishable on these points."
)
FAMILY_NOTE = (
    "Family aggregate: mean over the family's methods of the main metric, on the states all of them "
    "scored; 95% bootstrap CI resampling states; n = states. Baselines (oracle, random, heuristic) are never "
    "averaged: each is its own row."
)
FAILURE_NOTE = "Failed samples are left out of every metric; the most frequent reasons per cell:"
HEADROOM_NOTE = (
    "Mean per-sample acceptance length (tau) over the samples every policy of the group ran. "
    "Best fixed = the non-baseline, non-adaptive policy with the highest mean; oracle = "
    "per-sample best over all the group's policies, an upper bound, not a policy; "
    "gain = oracle - best fixed."
)
KNOB_NOTE = (
    "Per knob swept with everything else fixed (qval export-sweeps writes these sweeps in the replay format). "
    "Per-sample values; best fixed = the setting with the highest mean, chosen on these samples; oracle = "
    "per-sample best setting, an upper bound; selector = logistic regression on prefill features, 5-fold "
    "cross-validated, every sample scored by a model that never saw it. Gains are relative to the best fixed "
    "setting, paired over samples; 95% bootstrap CIs in brackets."
)


@dataclass
class Track:
    track: str
    title: str
    main_metric: str
    ranked_by: str  # which way the main metric ranks, in words
    legend: list[tuple[str, str, str]]  # (metric, arrow, label)
    flagged_under_load: int  # cells timed under load
    paired: bool  # the tables carry the paired test against the next rank
    groups: list[Table]  # one leaderboard per (dataset, temperature), ranked
    datasets: list[str] = field(default_factory=list)  # filter choices
    temperatures: list[str] = field(default_factory=list)
    tables: list[Table] = field(default_factory=list)  # families, failures, headroom, knobs: where present


@dataclass
class Document:
    title: str
    description: str
    environment: list[tuple[str, str]]
    tracks: list[Track]


def _num(value: float) -> float | None:
    return None if value is None or math.isnan(value) else float(value)


def metric_cell(
    value: float,
    lo: float,
    hi: float,
    n: float,
    states: float | None = math.nan,
    axis: tuple[float, float] | None = None,
) -> Cell:
    """One estimate: value, CI and n; a whisker on `axis` when given."""
    text, ci, counts, low_n = fmt.metric(value, lo, hi, n, states)
    if text == fmt.UNDEFINED:
        return Cell(fmt.UNDEFINED, sort="", undefined=True)
    return Cell(
        text,
        value=float(value),
        ci_low=_num(lo),
        ci_high=_num(hi),
        n=None if math.isnan(n) else int(n),
        n_states=None if states is None or math.isnan(states) else int(states),
        low_n=low_n,
        ci_text=ci,
        n_text=counts,
        sort=fmt.sort_key(value),
        whisker=None if axis is None else Whisker(float(value), lo, hi, axis),
    )


def number_cell(value: float, text: str, sort: bool = True) -> Cell:
    return Cell(text, value=_num(value), sort=fmt.sort_key(value) if sort else None)


def _whisker_axis(rows: pd.DataFrame, metric: str) -> tuple[float, float] | None:
    """(low, high) shared by a table's whiskers: the span of its CI bounds (and values)."""
    defined = rows[metric].notna().to_numpy()
    if not defined.any():
        return None
    values = np.concatenate([rows[f"{metric}{suffix}"].to_numpy()[defined] for suffix in ("", "__lo", "__hi")])
    values = values[~np.isnan(values)]
    return float(values.min()), float(values.max())


def board_table(board: TrackBoard, group: Group) -> Table:
    """The leaderboard of one (dataset, temperature) group: rank, names, one column per metric, failures and,
    where per-state values exist, the paired test against the next rank."""
    main = board.main_metric
    axis = _whisker_axis(group.rows, main) if main in board.metrics else None
    columns = [Column("rank", "number"), Column("model"), Column("method"), Column("family")]
    for metric in board.metrics:
        arrow, words = fmt.direction(board.higher_is_better, metric)
        title = f"{board.label(metric)} ({words})"
        if metric == main and axis is not None:
            title += f"; CI whiskers on a shared axis from {axis[0]:.3f} to {axis[1]:.3f}"
        columns.append(
            Column(
                f"{metric} {arrow}",
                "number",
                title=title,
                first="desc" if board.higher(metric) else "asc",
                main=metric == main,
            )
        )
    columns.append(Column("n_failed", "number"))
    paired = board.by_state is not None
    if paired:
        columns.append(Column("p vs next", "number", title=PAIRED_NOTE))

    metrics = list(dict.fromkeys([*board.metrics, main]))
    shown = ["rank", "model", "method", "family", "n_failed", "cell_id"]
    shown += [f"{m}{suffix}" for m in metrics for suffix in CI_SUFFIXES]
    records = group.rows[shown].to_dict("records")
    p_values = paired_p_values(board.by_state, group)
    rows = []
    for record, p, loaded in zip(records, p_values, under_load(group)):
        rank = record["rank"]
        cells = [
            Cell(
                rank, value=None if rank == fmt.UNDEFINED else float(rank), sort="" if rank == fmt.UNDEFINED else rank
            ),
            Cell(record["model"]),
            Cell(
                record["method"],
                flag=LOAD_FLAG if loaded else "",
                flag_title=LOAD_NOTE if loaded else "",
                href=cell_page(record["cell_id"]),
            ),
            Cell(record["family"]),
        ]
        for metric in board.metrics:
            cells.append(
                metric_cell(
                    record[metric],
                    record[f"{metric}__lo"],
                    record[f"{metric}__hi"],
                    record[f"{metric}__n"],
                    record.get(f"{metric}__n_states", math.nan),
                    axis if metric == main else None,
                )
            )
        cells.append(number_cell(record["n_failed"], fmt.count(record["n_failed"])))
        if paired:
            cells.append(Cell(fmt.p_value(p), value=p, sort="" if p is None else f"{p:.6f}"))
        rows.append(Row(cells, family=record["family"]))
    return Table(
        group.title,
        columns,
        rows,
        name="board",
        sortable=True,
        dataset=group.dataset,
        temperature=fmt.temperature(group.temperature),
    )


def families_table(board: TrackBoard) -> Table | None:
    rows = family_rows(board.families)
    if not rows:
        return None
    columns = [
        Column("dataset"),
        Column("T", "number"),
        Column("family"),
        Column("methods", "number"),
        Column(f"mean {board.main_metric}", "number"),
        Column("best method"),
        Column("best value", "number"),
    ]
    body = [
        Row(
            [
                Cell(fmt.text(r["dataset"])),
                number_cell(r["temperature"], fmt.temperature(r["temperature"]), sort=False),
                Cell(fmt.text(r["family"])),
                Cell(str(r["methods"]), value=float(r["methods"])),
                metric_cell(r["value"], r["ci_low"], r["ci_high"], r["n"]),
                Cell(fmt.text(r["best_method"])),
                number_cell(r["best_value"], fmt.number(r["best_value"]), sort=False),
            ]
        )
        for r in rows
    ]
    return Table("Families", columns, body, name="families", note=FAMILY_NOTE)


def failures_table(board: TrackBoard, analysis: BoardAnalysis) -> Table | None:
    rows = failure_rows(board.failures, analysis.rows)
    if not rows:
        return None
    columns = [
        Column("model"),
        Column("method"),
        Column("dataset"),
        Column("reason", "reason"),
        Column("samples", "number"),
    ]
    body = [
        Row([Cell(model), Cell(method), Cell(dataset), Cell(reason), Cell(str(n), value=float(n))])
        for model, method, dataset, reason, n in rows
    ]
    return Table("Failures", columns, body, name="failures", note=FAILURE_NOTE)


def headroom_table(rooms: list[Headroom]) -> Table | None:
    if not rooms:
        return None
    with_model = any(room.model is not None for room in rooms)
    columns = [
        Column("dataset"),
        *([Column("model")] if with_model else []),
        Column("T", "number"),
        Column("best fixed policy"),
        Column("best fixed tau", "number", first="desc"),
        Column("oracle tau", "number", first="desc"),
        Column("gain", "number", first="desc"),
        Column("n", "number"),
    ]
    body = [
        Row(
            [
                Cell(room.group.dataset or fmt.UNDEFINED),
                *([Cell(room.model or fmt.single_model(room.group.rows) or fmt.UNDEFINED)] if with_model else []),
                number_cell(room.group.temperature, fmt.temperature(room.group.temperature)),
                Cell(room.best_fixed_method),
                *(number_cell(v, fmt.number(v)) for v in (room.best_fixed_tau, room.oracle_tau, room.gain)),
                Cell(str(room.n_samples), value=float(room.n_samples), sort=str(room.n_samples)),
            ]
        )
        for room in rooms
    ]
    return Table(
        "Headroom: per-sample oracle vs best fixed policy",
        columns,
        body,
        name="headroom",
        note=HEADROOM_NOTE,
        sortable=True,
    )


def _undefined(v: Any) -> bool:
    return v is None or (isinstance(v, float) and np.isnan(v))


def _ci(ci: Any) -> tuple[Any, Any]:
    return (ci[0], ci[1]) if isinstance(ci, (list, tuple)) and len(ci) == 2 else (None, None)


def _knob_estimate(v: Any, ci: Any, prefix: str = "") -> Cell:
    if _undefined(v):
        return Cell(prefix + fmt.UNDEFINED if prefix else fmt.UNDEFINED, undefined=True)
    lo, hi = _ci(ci)
    ci = f"[{fmt.number(lo)}, {fmt.number(hi)}]" if lo is not None and hi is not None else ""
    return Cell(prefix + fmt.number(v), value=float(v), ci_low=_num(lo), ci_high=_num(hi), ci_text=ci)


def _knob_gain(v: Any, ci: Any) -> Cell:
    if _undefined(v):
        return Cell(fmt.UNDEFINED, undefined=True)
    lo, hi = _ci(ci)
    defined = lo is not None and hi is not None
    return Cell(
        fmt.percent(v),
        value=float(v),
        ci_low=_num(lo) if defined else None,
        ci_high=_num(hi) if defined else None,
        ci_text=f"[{fmt.percent(lo)}, {fmt.percent(hi)}]" if defined else "",
    )


def knobs_table(board: TrackBoard) -> Table | None:
    if board.knob_headroom is None or board.knob_headroom.empty:
        return None
    columns = [
        Column("model"),
        Column("dataset"),
        Column("T", "number"),
        Column("seed", "number"),
        Column("knob"),
        Column("values"),
        Column("metric"),
        *(Column(label, "number") for label in ("best fixed", "oracle", "oracle gain", "held-out selector gain", "n")),
    ]
    body = []
    for r in board.knob_headroom.to_dict("records"):
        body.append(
            Row(
                [
                    Cell(str(r["model"])),
                    Cell(str(r["dataset"])),
                    Cell(fmt.temperature(r["temperature"])),
                    # Cells of different seeds form separate sweeps, otherwise indistinguishable rows.
                    Cell(str(r["seed"])),
                    Cell(f"{r['policy']}.{r['knob']}"),
                    Cell(str(r["values"])),
                    Cell(str(r["metric"])),
                    _knob_estimate(
                        r["best_fixed"], r["best_fixed_ci"], prefix=f"{fmt.knob_value(r['best_fixed_value'])}: "
                    ),
                    _knob_estimate(r["oracle"], r["oracle_ci"]),
                    _knob_gain(r["oracle_gain"], r["oracle_gain_ci"]),
                    _knob_gain(r["selector_gain"], r["selector_gain_ci"]),
                    Cell(str(r["n"]), value=None if _undefined(r["n"]) else float(r["n"])),
                ]
            )
        )
    return Table("Headroom per knob", columns, body, name="knobs", note=KNOB_NOTE)


def track(board: TrackBoard, analysis: BoardAnalysis) -> Track:
    legend = [(m, fmt.direction(board.higher_is_better, m)[0], board.label(m)) for m in board.metrics]
    groups = analysis.groups
    view = Track(
        track=board.track,
        title=board.title,
        main_metric=board.main_metric,
        ranked_by=fmt.direction(board.higher_is_better, board.main_metric)[1],
        legend=legend,
        flagged_under_load=analysis.flagged_under_load,
        paired=board.by_state is not None,
        groups=[board_table(board, group) for group in groups],
    )
    if groups:
        view.datasets = list(dict.fromkeys(g.dataset for g in groups))
        temperatures = sorted({g.temperature for g in groups if not math.isnan(g.temperature)})
        view.temperatures = [fmt.temperature(t) for t in temperatures]
        if any(math.isnan(g.temperature) for g in groups):
            view.temperatures.append(fmt.UNDEFINED)
        # The track's own sections (Q-alignment: does alignment predict usefulness, the ranking across models).
        plugin = find_track(board.track)
        tables = (
            families_table(board),
            *(plugin.report_tables(board, analysis) if plugin is not None else ()),
            failures_table(board, analysis),
            headroom_table(analysis.headrooms),
            knobs_table(board),
        )
        view.tables = [t for t in tables if t is not None]
    return view


def document(report: SuiteReport, analyses: list[BoardAnalysis]) -> Document:
    return Document(
        title=f"qval leaderboard: {fmt.text(report.suite)}",
        description=fmt.text(report.description),
        environment=list(report.environment.items()) if report.environment else [],
        tracks=[track(board, analysis) for board, analysis in zip(report.tracks, analyses)],
    )
