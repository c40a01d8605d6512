"""Timing under load: the load is measured, stored per decode turn, flagged in reports, and --require-idle
refuses to time on a busy machine."""

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest
from conftest import model_free_suite, run_qval

from qval import loadwatch
from qval.report import render as lr


@pytest.fixture
def busy_machine():
    """Two CPU-bound processes that are not ours (double-forked: their parent is init), killed afterwards."""
    code = "import time\nend = time.time() + 120\nwhile time.time() < end: pass"
    pids = []
    for _ in range(2):
        out = subprocess.run(
            ["sh", "-c", f'{sys.executable} -c "{code}" >/dev/null 2>&1 & echo $!'],
            capture_output=True,
            text=True,
            check=True,
        )
        pids.append(int(out.stdout.strip()))
    time.sleep(0.5)
    yield pids
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def test_other_processes_make_the_machine_busy(busy_machine):
    load = loadwatch.measure(1.0)
    assert load.other_cores > loadwatch.BUSY_OTHER_CORES and load.busy
    # Our own work in the window is not "other": a busy loop here counts as ours.
    start = loadwatch.snapshot()
    end_at = time.monotonic() + 0.5
    while time.monotonic() < end_at:
        pass
    own = loadwatch.between(start, loadwatch.snapshot())
    assert own.other_cores < load.other_cores + 0.6


def test_require_idle_refuses_a_busy_machine(tmp_path, busy_machine):
    suite = model_free_suite(tmp_path, "idle", "[oracle-q]", episodes=2, points=2)
    proc = run_qval("run", suite, "--results", tmp_path / "results", "--require-idle", "--idle-timeout", "2")
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "busy" in proc.stderr and "--require-idle" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "results" / "parts").exists() or not any((tmp_path / "results" / "parts").iterdir())


def test_require_idle_runs_on_an_idle_machine_and_records_the_load(tmp_path):
    suite = model_free_suite(tmp_path, "idle-ok", "[oracle-q]", episodes=2, points=2)
    proc = run_qval("run", suite, "--results", tmp_path / "results", "--require-idle", "--idle-timeout", "60")
    assert proc.returncode == 0, proc.stderr
    import json

    run = json.loads(next((tmp_path / "results" / "runs").glob("*.json")).read_text())
    assert run["fingerprint"]["require_idle_s"] == 60.0
    assert set(run["fingerprint"]["load_at_start"]) >= {"load_other_cores", "load_steal", "load_avg1", "busy"}


def test_cells_timed_under_load_are_flagged_in_both_reports():
    rows = pd.DataFrame(
        {
            "cell_id": ["a", "b"],
            "model": "m",
            "method": ["ar", "pl"],
            "family": "policy",
            "dataset": "d",
            "temperature": 0.0,
            "seed": 0,
            "n_samples": 4,
            "n_failed": 0,
            "speedup": [1.0, 0.52],
            "speedup__lo": [1.0, 0.40],
            "speedup__hi": [1.0, 0.67],
            "speedup__n": [4, 4],
            "load_other_cores": [0.02, 1.1],
            "load_other_cores__n": [8, 8],
        }
    )
    board = lr.TrackBoard(
        track="decode",
        title="Decoding",
        main_metric="speedup",
        metrics=["speedup"],
        higher_is_better={"speedup": True},
        labels={"speedup": "speedup"},
        rows=rows,
    )
    report = lr.SuiteReport(suite="s", description="", environment={}, tracks=[board])
    md = lr.render_markdown(report)
    assert "1 cell(s) \u26a0 timed under load" in md
    flagged = [line for line in md.splitlines() if "| pl \u26a0 timed under load |" in line]
    assert len(flagged) == 1 and "| ar |" in md
    page = lr.render_html(report, [])
    assert page.count('class="warn"') == 2  # the section warning and the row's mark


def test_decode_turns_store_their_load(smollm):
    from qval.decode.task import under_watch

    result, load = under_watch(lambda: sum(range(10**6)))
    assert result == sum(range(10**6))
    assert set(load) == {"load_other_cores", "load_steal", "load_avg1"}
    assert all(np.isfinite(v) and v >= 0 for v in load.values())
