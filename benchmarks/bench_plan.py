"""Goal: plan 10,000 cells in ≤ 2 s (validate the suite, expand the grid, hash identities, check done status)."""

import json
import tempfile
import time
from pathlib import Path

from _synthetic import decode_suite

from qval.api import cell_status, plan_suite


def main(smoke: bool = False) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        shape = dict(n_policies=9, n_temps=2, n_seeds=1) if smoke else dict(n_policies=99, n_temps=10, n_seeds=10)
        suite = decode_suite(Path(tmp) / "bench.yaml", **shape)  # (policies + AR) × temperatures × seeds: 10,000
        plan_suite(suite)  # warm imports and plugin discovery, as any CLI call would have done
        start = time.perf_counter()
        plan = plan_suite(suite)
        cell_status(plan, Path(tmp) / "results")
        seconds = time.perf_counter() - start
    expected = (shape["n_policies"] + 1) * shape["n_temps"] * shape["n_seeds"]
    return {
        "benchmark": "plan",
        "size": "smoke" if smoke else "full",
        "cells": len(plan.cells),
        "seconds": round(seconds, 3),
        "goal_seconds": 2.0,
        "ok": seconds <= 2.0,
        "checks": len(plan.cells) == expected,
    }


if __name__ == "__main__":
    print(json.dumps(main()))
