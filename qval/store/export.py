"""Export the results tables as Parquet files (COPY … TO, one file per table)."""

from __future__ import annotations

from pathlib import Path

from .db import connect_reader

TABLES = (
    "runs",
    "suites",
    "suite_cells",
    "cells",
    "cell_metrics",
    "metric_versions",
    "metric_units",
    "qalign_samples",
    "qalign_state_values",
    "decode_samples",
    "prepare_requests",
)


def export_parquet(results: Path, out_dir: Path) -> list[Path]:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    con = connect_reader(Path(results))
    written = []
    try:
        for table in TABLES:
            path = out_dir / f"{table}.parquet"
            con.execute(f"COPY {table} TO ? (FORMAT parquet)", [str(path)])
            written.append(path)
    finally:
        con.close()
    return written
