"""Goal: ingest 1,000,000 per-sample rows in ≤ 10 s (parts → DuckDB, plus every metric with its bootstrap CI)."""

import json
import tempfile
import time
from pathlib import Path

from _synthetic import decode_suite, planned, write_decode_parts

from qval.store.ingest import ingest


def main(smoke: bool = False) -> dict:
    rows_per_cell = 20 if smoke else 10_000
    with tempfile.TemporaryDirectory() as tmp:
        results = Path(tmp) / "results"
        plan = planned(decode_suite(Path(tmp) / "bench.yaml", n_policies=9, n_temps=10, n_seeds=1), results)
        rows = write_decode_parts(results, plan, rows_per_cell)
        start = time.perf_counter()
        report = ingest(results)
        seconds = time.perf_counter() - start
    return {
        "benchmark": "ingest",
        "size": "smoke" if smoke else "full",
        "rows": rows,
        "cells": len(plan.cells),
        "metric_values": report.metrics_computed,
        "seconds": round(seconds, 3),
        "goal_seconds": 10.0,
        "ok": seconds <= 10.0,
        # every cell has the suite's 5 metrics, the load and the per-position family the reports read
        "checks": report.rows == rows and report.metrics_computed >= 7 * len(plan.cells),
    }


if __name__ == "__main__":
    print(json.dumps(main()))
