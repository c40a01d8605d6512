"""Goal: render a suite's leaderboard (Markdown + HTML + figures) over 1,000,000 sample rows in ≤ 5 s."""

import json
import tempfile
import time
from pathlib import Path

from _synthetic import decode_suite, planned, write_decode_parts

from qval.report.build import write_reports
from qval.store.ingest import ingest


def main(smoke: bool = False) -> dict:
    rows_per_cell = 20 if smoke else 10_000
    with tempfile.TemporaryDirectory() as tmp:
        results = Path(tmp) / "results"
        plan = planned(decode_suite(Path(tmp) / "bench.yaml", n_policies=9, n_temps=10, n_seeds=1), results)
        rows = write_decode_parts(results, plan, rows_per_cell)
        ingest(results)
        start = time.perf_counter()
        written = write_reports(results, Path(tmp) / "reports")
        seconds = time.perf_counter() - start
    return {
        "benchmark": "report",
        "size": "smoke" if smoke else "full",
        "rows": rows,
        "cells": len(plan.cells),
        "files": len(written),
        "seconds": round(seconds, 3),
        "goal_seconds": 5.0,
        "ok": seconds <= 5.0,
        "checks": len(written) >= 2,
    }


if __name__ == "__main__":
    print(json.dumps(main()))
