"""CPU threads are part of a fair timing: the vLLM child gets the worker's torch thread count, each decoding turn
records the threads its engine ran with, and reports and `qval compare` flag cells timed with different counts."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pandas as pd
import pytest
from conftest import ROOT, run_qval, write_suite

import qval.results as R
from qval import compare as C
from qval.backends.vllm_source import VLLMModel, VLLMServedModel, engine_env, worker_threads


def test_the_vllm_child_gets_the_workers_thread_count(monkeypatch):
    monkeypatch.setenv("QVAL_TORCH_THREADS", "3")
    assert worker_threads() == 3
    source = VLLMModel(VLLMModel.Params(path="/nowhere"))
    assert source.engine_threads() == 3
    # OMP_NUM_THREADS is what the in-process engine honours; nobind keeps the multi-process engine's auto binding
    # (one CPU per physical core, minus reserved ones) from replacing it.
    assert engine_env(source.engine_threads()) == {"OMP_NUM_THREADS": "3", "VLLM_CPU_OMP_THREADS_BIND": "nobind"}
    monkeypatch.delenv("QVAL_TORCH_THREADS")
    assert worker_threads() == len(os.sched_getaffinity(0))  # outside a worker: every CPU this process may use
    monkeypatch.setenv("QVAL_TORCH_THREADS", "")
    assert worker_threads() == len(os.sched_getaffinity(0))


def test_a_model_param_overrides_the_thread_count_and_enters_the_identity_only_when_set(monkeypatch):
    monkeypatch.setenv("QVAL_TORCH_THREADS", "2")
    default = VLLMModel(VLLMModel.Params(path="/m"))
    pinned = VLLMModel(VLLMModel.Params(path="/m", threads=1))
    assert pinned.engine_threads() == 1 and engine_env(pinned.engine_threads())["OMP_NUM_THREADS"] == "1"
    assert "threads" not in default.identity()  # cells planned before the param existed keep their ids
    assert pinned.identity()["threads"] == 1  # an override re-measures
    with pytest.raises(ValueError):
        VLLMModel.Params(path="/m", threads=0)


def test_a_served_model_reports_the_threads_its_engine_said_it_runs_with():
    served = VLLMServedModel(VLLMModel(VLLMModel.Params(path="/m")), "/m", None, {0})
    assert served.threads is None  # no engine started yet: unknown, never a guess
    served.engine_info = {"threads": 2, "engine_mode": "inproc"}
    assert served.threads == 2


def _board(cell):
    return pd.DataFrame(
        [{"track": "decode", "model": "m", "method": "ar", "dataset": "d", "temperature": 0.0, "seed": 0}]
    ).assign(cell_id=cell, tokens_per_s=10.0, tokens_per_s__lo=9.0, tokens_per_s__hi=11.0)


def test_compare_names_the_conditions_that_differ(monkeypatch):
    boards = {"A": _board("a"), "B": _board("b")}
    conditions = {"A": {"a": {"threads": "2"}}, "B": {"b": {"threads": "1"}}}
    monkeypatch.setattr(C, "_cells", lambda side: boards[side.suite])
    monkeypatch.setattr(C, "_per_sample", lambda side, track: {})
    monkeypatch.setattr(C, "_conditions", lambda side: conditions[side.suite])
    assert C.compare(C.Side(None, "A"), C.Side(None, "B"))["conditions_differ"].tolist() == ["threads 2 → 1"]
    conditions["B"] = {"b": {"threads": "2"}}
    assert C.compare(C.Side(None, "A"), C.Side(None, "B"))["conditions_differ"].isna().all()
    conditions["B"] = {}  # not recorded on one side (a remote server): unknown is not a difference
    assert C.compare(C.Side(None, "A"), C.Side(None, "B"))["conditions_differ"].isna().all()


def _qval_on_one_cpu(cpu: int, *args) -> subprocess.CompletedProcess:
    """The real CLI under `taskset -c CPU`, as a user would pin it."""
    command = ["taskset", "-c", str(cpu), sys.executable, "-m", "qval", *map(str, args)]
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=900)


SUITE = """\
name: {name}
models: [smollm2-135m-instruct]
decode:
  datasets: [{{name: spec-bench, params: {{categories: [coding], limit_per_category: 1, max_turns: 1}}}}]
  policies: {policies}
  max_new_tokens: 4
  metrics: [speedup, tokens_per_s]
"""


@pytest.mark.slow
def test_threads_are_recorded_flagged_in_the_report_and_in_compare(tmp_path):
    """Real runs: one on every CPU, one under `taskset -c 0` (the runner splits the CPUs it may use, so its worker
    decodes on 1 thread); a suite whose cells come from both shows the difference, and so does `qval compare`."""
    cpus = len(os.sched_getaffinity(0))
    if cpus < 2:
        pytest.skip(f"needs 2 CPUs to time with two thread counts; this process may use {cpus}")
    one = sorted(os.sched_getaffinity(0))[0]
    ar = write_suite(tmp_path / "ar.yaml", SUITE.format(name="thr", policies="[ar]"))
    a, b = tmp_path / "a", tmp_path / "b"
    assert (proc := run_qval("run", ar, "--results", a)).returncode == 0, proc.stdout + proc.stderr
    proc = _qval_on_one_cpu(one, "run", ar, "--results", b)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert R.samples(a, "decode", "thr")["threads"].tolist() == [cpus]
    assert R.samples(b, "decode", "thr")["threads"].tolist() == [1]
    assert R.samples(a, "decode", "thr")["forward"].tolist() == ["qval"]  # qval's own forward covers SmolLM2

    proc = run_qval("compare", f"{a}:thr", f"{b}:thr", "--json")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert {r["conditions_differ"] for r in json.loads(proc.stdout)} == {f"threads {cpus} → 1"}
    proc = run_qval("compare", f"{a}:thr", f"{b}:thr")
    assert f"was measured with threads {cpus} → 1" in " ".join(proc.stdout.split())

    # A policy added later, on 1 thread, beside the AR cell timed on every CPU: the report's environment says so.
    both = write_suite(tmp_path / "both.yaml", SUITE.format(name="thr2", policies="[ar, prompt-lookup]"))
    proc = _qval_on_one_cpu(one, "run", both, "--results", a)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert run_qval("report", "--results", a, "--out", tmp_path / "rep").returncode == 0
    page = (tmp_path / "rep" / "thr2" / "leaderboard.md").read_text()
    line = next(x for x in page.splitlines() if x.startswith("- **threads**"))
    assert "DIFFER" in line and "1: smollm2-135m-instruct prompt-lookup" in line, line
    assert f"{cpus}: smollm2-135m-instruct ar" in line, line
    page = (tmp_path / "rep" / "thr" / "leaderboard.md").read_text()
    assert f"- **threads**: {cpus} (every cell that recorded it)" in page
    assert "- **forward**: qval (every cell that recorded it)" in page
