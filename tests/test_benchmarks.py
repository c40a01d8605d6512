"""Every benchmark smoke-runs at a small size, so that none can silently rot (the ingest and report benchmarks
once crashed on a schema change and nothing noticed). Full sizes and goals: ``make bench``."""

from __future__ import annotations

import json
import subprocess
import sys

from conftest import ROOT

EXPECTED = {
    "plan",
    "ingest",
    "report",
    "ar_vs_generate",
    "draft_vs_assisted",
    "engine_overhead",
    "engine_vs_vllm",
    "engine_levers",
    "qalign_requests",
    "qalign_vllm",
    "cross_vs_uag",
    "gpu_check",
}


def test_every_benchmark_smoke_runs():
    proc = subprocess.run(
        [sys.executable, "benchmarks/run_all.py", "--smoke"], cwd=ROOT, capture_output=True, text=True, timeout=1800
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    rows = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    assert {r["benchmark"] for r in rows} == EXPECTED
    assert all(r["size"] == "smoke" and r["checks"] is True for r in rows), rows
    by_name = {r["benchmark"]: r for r in rows}
    vllm = by_name["engine_vs_vllm"]  # skipped only with its reason: no vLLM venv on this machine
    assert isinstance(vllm.get("skipped"), str) or (
        vllm["identical_outputs"] and vllm["vllm_threads"] == vllm["threads"]
    )
    scoring = by_name["qalign_vllm"]  # skipped likewise; else the log-prob scorers agreed (its checks, above)
    assert isinstance(scoring.get("skipped"), str) or (
        scoring["logprob_scorers_within_tolerance"] and scoring["vllm_threads"] == scoring["threads"]
    )
    assert by_name["ingest"]["rows"] == by_name["ingest"]["cells"] * 20 and by_name["ingest"]["metric_values"] > 0


def test_gpu_check_refuses_cleanly_without_cuda():
    """On a machine without CUDA the GPU check runs nothing: one JSON line and exit 3 (its --cpu-dry-run is in the
    smoke run above)."""
    import torch

    if torch.cuda.is_available():
        return  # a GPU machine runs the real check instead (make gpu-check)
    proc = subprocess.run(
        [sys.executable, "benchmarks/gpu_check.py"], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 3, proc.stdout + proc.stderr
    lines = [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]
    assert lines == [{"check": "gpu_check", "ok": False, "skipped": "no CUDA device", "exit_code": 3}]
