"""Export the results tables as Parquet files (COPY … TO, one file per table)."""

from __future__ import annotations

from pathlib import Path

from ..tracks import sample_tables
from .db import connect_reader

# The store's own tables; each installed track adds its sample tables (those present in the database).
TABLES = (
    "runs",
    "suites",
    "suite_cells",
    "cells",
    "cell_metrics",
    "metric_versions",
    "metric_units",
    "prepare_requests",
)


def export_parquet(results: Path, out_dir: Path) -> list[Path]:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    con = connect_reader(Path(results))
    written = []
    try:
        present = {row[0] for row in con.execute("SELECT table_name FROM duckdb_tables()").fetchall()}
        tracks = [spec.table for spec in sample_tables().values() if spec.table in present]
        for table in (*TABLES, *tracks):
            path = out_dir / f"{table}.parquet"
            con.execute(f"COPY {table} TO ? (FORMAT parquet)", [str(path)])
            written.append(path)
    finally:
        con.close()
    return written
