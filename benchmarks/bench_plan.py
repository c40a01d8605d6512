"""Goal: plan 10,000 cells in ≤ 2 s (validate the suite, expand the grid, hash identities, check done status)."""
import json
import tempfile
import time
from pathlib import Path

from _synthetic import decode_suite

from qval.api import cell_status, plan_suite


def main() -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        suite = decode_suite(Path(tmp) / "bench.yaml", n_policies=99, n_temps=10, n_seeds=10)  # +AR = 10,000
        plan_suite(suite)  # warm imports and plugin discovery, as any CLI call would have done
        start = time.perf_counter()
        plan = plan_suite(suite)
        cell_status(plan, Path(tmp) / "results")
        seconds = time.perf_counter() - start
    return {"benchmark": "plan", "cells": len(plan.cells), "seconds": round(seconds, 3), "goal_seconds": 2.0,
            "ok": seconds <= 2.0}


if __name__ == "__main__":
    print(json.dumps(main()))
