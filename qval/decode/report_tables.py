"""The decoding track's own report sections (Track.report_tables): the share of each knob sweep's per-instance
oracle gain that the adaptive policies capture live (``captured.py``), as the report package's Table model."""

from __future__ import annotations

from typing import Any

from ..report import format as fmt
from ..report.table import Cell, Column, Row, Table
from .captured import CAPTURED, STATISTIC

TITLE = "Headroom per knob, captured live by the adaptive policies"


def _estimate(value: Any, ci: Any, as_percent: bool = False) -> Cell:
    if value is None:
        return Cell(fmt.UNDEFINED, undefined=True)
    show = fmt.percent if as_percent else fmt.number
    lo, hi = ci if isinstance(ci, (list, tuple)) and len(ci) == 2 else (None, None)
    ci_text = f"[{show(lo)}, {show(hi)}]" if lo is not None and hi is not None else ""
    return Cell(show(value), value=float(value), ci_low=lo, ci_high=hi, ci_text=ci_text)


def captured_table(board: Any) -> Table | None:
    rows = (board.extras or {}).get(CAPTURED) or []
    if not rows:
        return None
    columns = [
        Column("model"),
        Column("dataset"),
        Column("T", "number"),
        Column("seed", "number"),
        Column("sweep"),
        Column("values"),
        Column("metric"),
        Column("policy (live)"),
        *(Column(label, "number") for label in ("best fixed", "oracle", "policy", "share of oracle gain", "n")),
    ]
    body = [
        Row(
            [
                Cell(str(r["model"])),
                Cell(str(r["dataset"])),
                Cell(fmt.temperature(r["temperature"])),
                Cell(str(r["seed"])),
                Cell(str(r["sweep"])),
                Cell(str(r["values"])),
                Cell(str(r["metric"])),
                Cell(str(r["policy"])),
                Cell(f"{fmt.knob_value(r['best_fixed_value'])}: {fmt.number(r['best_fixed'])}", value=r["best_fixed"]),
                Cell(fmt.number(r["oracle"]), value=r["oracle"]),
                _estimate(r["live"], r["live_ci"]),
                _estimate(r["share"], r["share_ci"], as_percent=True),
                Cell(str(r["n"]), value=float(r["n"])),
            ]
        )
        for r in rows
    ]
    note = (
        "Per knob sweep and adaptive policy of the same model, dataset, temperature and seed: "
        + STATISTIC
        + ". 0% = no better than the best fixed setting, 100% = the per-instance oracle."
    )
    return Table(TITLE, columns, body, name=CAPTURED, note=note)


def report_tables(board: Any, analysis: Any) -> list[Table]:
    table = captured_table(board)
    return [table] if table is not None else []
