"""The Q-alignment track's own report sections (Track.report_tables): does alignment predict usefulness
(usefulness.py), does the method order survive Monte-Carlo labels (label_noise.py), and how stable the method ranking
is across models (model_stability.py). Built once as the report package's Table model, which the Markdown and HTML
writers both lay out."""

from __future__ import annotations

import math

from ..report import format as fmt
from ..report.analysis import BoardAnalysis
from ..report.document import metric_cell
from ..report.model import TrackBoard
from ..report.table import Cell, Column, Row, Table
from .label_noise import STATISTIC as LABEL_NOISE_STATISTIC
from .method_order import order_text
from .model_stability import STATISTIC, ModelPair, flips_text
from .usefulness import LABEL as USEFULNESS_NOTE
from .usefulness import alignment_usefulness

MODEL_STABILITY = "model_stability"  # its key in TrackBoard.extras and its table's name
LABEL_NOISE = "label_noise"  # likewise, for the exact-vs-Monte-Carlo comparison (qalign.label_noise)
LABEL_NOISE_TITLE = "Label noise: does the method order survive Monte-Carlo labels?"


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


def _noise_row(group: str, c: dict | None, note: str) -> Row:
    """One label set's comparison on one set of points; ``c`` None: no comparison (``note`` says why)."""
    if c is None:
        return Row(
            [
                Cell(group),
                Cell(fmt.UNDEFINED),
                Cell(fmt.UNDEFINED, sort="", undefined=True),
                *[Cell("")] * 3,
                Cell(note),
            ]
        )
    tau = [math.nan if v is None else float(v) for v in (c["kendall_tau_b"], c["ci_low"], c["ci_high"])]
    flips = "; ".join(f"{f['exact_above']} > {f['mc_above']} reversed" for f in c["flipped_pairs"])
    # An undefined τ has no number to carry n: the note carries it.
    notes = [f"undefined (n={c['n']}, {c['n_states']} states): {c['undefined']}"] if c["undefined"] else []
    notes += [f"{method} left out ({why})" for method, why in c["left_out"].items()]
    notes += [f"{a} and {b} tie under one label set only" for a, b in c["tie_changes"]]
    return Row(
        [
            Cell(group),
            Cell(f"MC {c['rollouts']}\u00d7{c['agg']}"),
            metric_cell(tau[0], tau[1], tau[2], c["n"], c["n_states"]),
            Cell(flips or "none"),
            Cell(order_text(c["mean_rho_exact"]) if c["mean_rho_exact"] else fmt.UNDEFINED),
            Cell(order_text(c["mean_rho_mc"]) if c["mean_rho_mc"] else fmt.UNDEFINED),
            Cell("; ".join(notes)),
        ]
    )


def label_noise_table(doc: dict | None) -> Table | None:
    """Exact Q* vs Monte-Carlo labels (``qalign.label_noise``): per set of points and label set, Kendall τ-b between
    the two method orders with its state-bootstrap CI, the pairs that flip and both orders."""
    if doc is None:
        return None
    columns = [
        Column("points"),
        Column("labels"),
        Column("Kendall \u03c4-b", "number", title=LABEL_NOISE_STATISTIC),
        Column("flipped pairs (exact order > MC order)"),
        Column("order by mean \u03c1, exact Q*"),
        Column("order by mean \u03c1, MC"),
        Column("notes"),
    ]
    if "error" in doc:
        return Table(
            LABEL_NOISE_TITLE,
            columns,
            [_noise_row("all", None, doc["error"])],
            name=LABEL_NOISE,
            note=LABEL_NOISE_STATISTIC + ".",
        )
    body = [_noise_row(g["group"], c, "") for g in doc["groups"] for c in g["comparisons"]]
    body += [_noise_row(title, None, why) for title, why in doc["unlabelled_groups"].items()]
    body += [_noise_row(title, None, "fewer than 2 methods on these points") for title in doc["skipped_groups"]]
    policies = "; ".join(
        dict.fromkeys(f"{g['reference_policy']}, at most {g['rollout_max_steps']} steps" for g in doc["groups"])
    )
    note = (
        f"{LABEL_NOISE_STATISTIC}. Monte-Carlo labels as QVal's: restore the state, force the candidate, then follow "
        f"the reference policy ({policies or 'none rolled out'}); a label is the max or the mean of the discounted "
        f"returns of N rollouts (label seed {doc['label_seed']}; stored under the results' labels/, shared with "
        f"`qval label-noise`). Bootstrap: {doc['bootstrap']['resamples']} resamples of states."
    )
    return Table(LABEL_NOISE_TITLE, columns, body, name=LABEL_NOISE, note=note)


def report_tables(board: TrackBoard, analysis: BoardAnalysis) -> list[Table]:
    tables = (
        usefulness_table(board, analysis),
        label_noise_table(board.extras.get(LABEL_NOISE)),
        model_stability_table(board.extras.get(MODEL_STABILITY, [])),
    )
    return [t for t in tables if t is not None]
