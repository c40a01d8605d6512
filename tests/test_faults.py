"""kill -9 of a worker mid-cell: no finished sample lost, none duplicated, the database consistent."""
import os
import signal
import subprocess
import sys
import time

import pyarrow.parquet as pq

import qval.results as R
from conftest import ROOT, run_qval, write_suite

SUITE = """\
name: killme
models: [smollm2-135m-instruct]
decode:
  datasets: [{name: spec-bench, params: {categories: [summarization], limit_per_category: 10, max_turns: 1}}]
  policies: [ar]
  max_new_tokens: 32
  metrics: [speedup, acceptance_length]
"""


def _worker_pids(results):
    out = subprocess.run(["pgrep", "-f", f"qval.worker .*--results {results}"], capture_output=True, text=True)
    return [int(p) for p in out.stdout.split()]


def test_kill_worker_mid_cell_then_resume(tmp_path):
    suite = write_suite(tmp_path / "killme.yaml", SUITE)
    results = tmp_path / "results"
    proc = subprocess.Popen([sys.executable, "-m", "qval", "run", str(suite), "--results", str(results)],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 600
    parts = []
    while time.time() < deadline and not parts:
        parts = list((results / "parts").glob("*/part-*.parquet")) if (results / "parts").exists() else []
        time.sleep(0.1)
    assert parts, "no part was written"
    pids = _worker_pids(results)
    assert pids, "worker not found"
    for pid in pids:
        os.kill(pid, signal.SIGKILL)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 1 and "shard(s) failed" in err and "Traceback" not in err
    cell_dir = parts[0].parent
    assert not (cell_dir / "DONE.json").exists(), "the kill came too late to test a mid-cell resume"
    finished = {}
    for part in sorted(cell_dir.glob("part-*.parquet")):
        for row in pq.read_table(part).to_pylist():
            finished[row["sample_id"]] = row["output_sha"]
    assert 0 < len(finished) < 10
    partial = R.cells(results, "killme")
    assert partial.iloc[0]["status"] == "partial" and partial.iloc[0]["n_samples"] == len(finished)

    again = run_qval("run", suite, "--results", results)
    assert again.returncode == 0, again.stderr
    samples = R.samples(results, "decode", "killme")
    assert len(samples) == 10 and samples["sample_id"].nunique() == 10  # none lost, none duplicated
    kept = samples.set_index("sample_id").loc[list(finished), "output_sha"].to_dict()
    assert kept == finished  # samples finished before the kill were kept, not recomputed
    assert R.cells(results, "killme").iloc[0]["status"] == "done"


def test_corrupt_part_is_quarantined_and_recomputed(tmp_path):
    suite = write_suite(tmp_path / "s.yaml", SUITE.replace("limit_per_category: 10", "limit_per_category: 2")
                        .replace("max_new_tokens: 32", "max_new_tokens: 8"))
    results = tmp_path / "results"
    assert run_qval("run", suite, "--results", results).returncode == 0
    part = next((results / "parts").glob("*/part-*.parquet"))
    part.write_bytes(part.read_bytes()[:50])  # truncated
    proc = run_qval("run", suite, "--results", results)
    assert proc.returncode == 0, proc.stderr
    assert "quarantined unreadable part" in proc.stderr and "1 to run" in proc.stdout
    assert any((results / "quarantine").rglob("*.parquet"))
    proc = run_qval("run", suite, "--results", results)
    assert proc.returncode == 0 and "nothing to run" in proc.stdout
    samples = R.samples(results, "decode")
    assert len(samples) == 2 and samples["sample_id"].nunique() == 2


def test_sigterm_to_run_stops_its_workers(tmp_path):
    suite = write_suite(tmp_path / "term.yaml", SUITE.replace("name: killme", "name: term"))
    results = tmp_path / "results"
    proc = subprocess.Popen([sys.executable, "-m", "qval", "run", str(suite), "--results", str(results)],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while time.time() < deadline and not _worker_pids(results):
        time.sleep(0.1)
    assert _worker_pids(results), "worker did not start"
    proc.terminate()
    proc.communicate(timeout=60)
    assert proc.returncode != 0
    time.sleep(0.5)
    assert _worker_pids(results) == [], "an orphan worker survived SIGTERM of qval run"
