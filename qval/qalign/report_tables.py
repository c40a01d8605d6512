"""The Q-alignment track's own report sections (Track.report_tables): does alignment predict usefulness
(usefulness.py), and how stable the method ranking is across models (model_stability.py). Built once as the report
package's Table model, which the Markdown and HTML writers both lay out."""

from __future__ import annotations

import math

from ..report.analysis import BoardAnalysis
from ..report.document import metric_cell
from ..report.model import TrackBoard
from ..report.table import Cell, Column, Row, Table
from .model_stability import STATISTIC, ModelPair, flips_text, order_text
from .usefulness import LABEL as USEFULNESS_NOTE
from .usefulness import alignment_usefulness

MODEL_STABILITY = "model_stability"  # its key in TrackBoard.extras and its table's name


def _estimate(value: float | None, low: float | None, high: float | None, n: int, states: int | None) -> Cell:
    def nan(x: float | None) -> float:
        return math.nan if x is None else x

    return metric_cell(nan(value), nan(low), nan(high), n, math.nan if states is None else states)


def usefulness_table(board: TrackBoard, analysis: BoardAnalysis) -> Table | None:
    """Does alignment predict usefulness: per guided metric, its rank correlation with per-state rho across rows
    (the same numbers as the usefulness figure's caption); for boards that draw that figure and list a guided
    metric."""
    if "usefulness" not in (board.figures or ()):
        return None
    correlations = alignment_usefulness(analysis.rows)
    if not correlations:
        return None
    columns = [
        Column("alignment"),
        Column("usefulness"),
        Column("Spearman \u03c1", "number", title=USEFULNESS_NOTE),
        Column("why undefined"),
    ]
    body = [
        Row(
            [
                Cell("per_state_spearman"),
                Cell(c.label),
                _estimate(c.value, c.ci_low, c.ci_high, c.n, None),
                Cell(c.reason),
            ]
        )
        for c in correlations
    ]
    return Table("Does alignment predict usefulness?", columns, body, name="usefulness", note=USEFULNESS_NOTE)


def model_stability_table(pairs: list[ModelPair]) -> Table | None:
    """One row per environment, temperature, seed and pair of models; None when the suite ran fewer than 2 models."""
    if not pairs:
        return None
    columns = [
        Column("environment"),
        Column("T"),
        Column("seed"),
        Column("model A"),
        Column("model B"),
        Column("Kendall \u03c4-b", "number", title=STATISTIC),
        Column("flipped pairs (order under A → reversed under B)"),
        Column("order by mean \u03c1 under A"),
        Column("order by mean \u03c1 under B"),
        Column("left out"),
        Column("why undefined"),
    ]
    body = []
    for p in pairs:
        a = p.agreement
        body.append(
            Row(
                [
                    Cell(p.dataset),
                    Cell(f"{p.temperature:g}"),
                    Cell(str(p.seed)),
                    Cell(p.model_a),
                    Cell(p.model_b),
                    _estimate(a.tau, a.ci_low, a.ci_high, a.n, a.n_states),
                    Cell(flips_text(p) if not a.undefined else "\u2013"),
                    Cell(order_text(a.means_a)),
                    Cell(order_text(a.means_b)),
                    Cell("; ".join(p.left_out) or "none"),
                    Cell(a.undefined or ""),
                ]
            )
        )
    return Table("Method ranking across models", columns, body, name=MODEL_STABILITY, note=STATISTIC + ".")


def report_tables(board: TrackBoard, analysis: BoardAnalysis) -> list[Table]:
    tables = (usefulness_table(board, analysis), model_stability_table(board.extras.get(MODEL_STABILITY, [])))
    return [t for t in tables if t is not None]
