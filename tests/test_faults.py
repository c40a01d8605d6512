"""kill -9 of a worker mid-cell: no finished sample lost, none duplicated, the database consistent."""

import os
import signal
import subprocess
import sys
import time

import pyarrow.parquet as pq
from conftest import ROOT, run_qval, write_suite

import qval.results as R

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
    proc = subprocess.Popen(
        [sys.executable, "-m", "qval", "run", str(suite), "--results", str(results)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
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
    suite = write_suite(
        tmp_path / "s.yaml",
        SUITE.replace("limit_per_category: 10", "limit_per_category: 2").replace(
            "max_new_tokens: 32", "max_new_tokens: 8"
        ),
    )
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
    proc = subprocess.Popen(
        [sys.executable, "-m", "qval", "run", str(suite), "--results", str(results)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.time() + 300
    while time.time() < deadline and not _worker_pids(results):
        time.sleep(0.1)
    assert _worker_pids(results), "worker did not start"
    proc.terminate()
    proc.communicate(timeout=60)
    assert proc.returncode != 0
    time.sleep(0.5)
    assert _worker_pids(results) == [], "an orphan worker survived SIGTERM of qval run"


MODEL_FREE = """\
name: {name}
models: [smollm2-135m-instruct]
qalign:
  envs: [{{name: frozenlake, params: {{map: 8x8}}}}, cliffwalking]
  methods: [{methods}]
  points: {{episodes: {episodes}, epsilon: 0.3, max_points_per_episode: 5}}
"""


def _parts_rows(results):
    """(sample id, candidate) rows per cell, straight from the Parquet parts (the truth a database must match)."""
    rows = {}
    for part in (results / "parts").glob("*/part-*.parquet"):
        table = pq.read_table(part, columns=["sample_id", "candidate"]).to_pydict()
        rows.setdefault(part.parent.name, []).extend(zip(table["sample_id"], table["candidate"]))
    return rows


def _assert_database_matches_parts(results, suite_name):
    samples = R.samples(results, "qalign", suite_name)
    truth = _parts_rows(results)
    got = samples.groupby("cell_id").size().to_dict()
    assert got == {c: len(ids) for c, ids in truth.items()}  # every row, once
    cells = R.cells(results, suite_name)
    assert (cells["status"] == "done").all()
    board = R.leaderboard(results, suite_name, "qalign")
    assert len(board) == len(cells) and board["per_state_spearman__n"].notna().all()  # metrics for every cell


def test_kill_ingest_mid_transaction_leaves_the_database_as_before(tmp_path):
    results = tmp_path / "results"
    first = write_suite(tmp_path / "a.yaml", MODEL_FREE.format(name="a", methods="oracle-q", episodes=4))
    assert run_qval("run", first, "--results", results).returncode == 0
    before = R.samples(results, "qalign").sort_values(["cell_id", "sample_id", "candidate"]).reset_index(drop=True)

    second = write_suite(
        tmp_path / "b.yaml", MODEL_FREE.format(name="b", methods="oracle-q, random, heuristic", episodes=4)
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "qval", "run", str(second), "--results", str(results)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "QVAL_FAULT_PAUSE": "before-commit:600"},
    )
    line = ""
    while "fault point before-commit" not in line:  # the ingest has written everything, uncommitted
        line = proc.stderr.readline()
        assert line or proc.poll() is None, "the run ended before reaching the ingest's commit"
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)

    after_kill = R.samples(results, "qalign").sort_values(["cell_id", "sample_id", "candidate"]).reset_index(drop=True)
    assert after_kill.equals(before)  # nothing of the killed transaction is visible
    assert R.cells(results, "b").empty  # not even the new plan: the whole ingest is one transaction
    rerun = run_qval("ingest", "--results", results)
    assert rerun.returncode == 0, rerun.stderr
    _assert_database_matches_parts(results, "b")


def _mount_tmpfs(path, size: str) -> bool:
    path.mkdir(parents=True, exist_ok=True)
    return (
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True
        ).returncode
        == 0
    )


def test_disk_full_while_writing_parts_loses_nothing(tmp_path):
    """Parts go to a 64 KiB tmpfs that fills mid-run: the worker stops with a clear message, every part on disk is
    whole, and after moving to a larger disk a re-run resumes with no sample lost or duplicated."""
    import shutil

    import pytest

    results = tmp_path / "results"
    if not _mount_tmpfs(results / "parts", "64k"):
        pytest.skip("mounting a small tmpfs needs root (CI runs as root); the disk-full path is not exercised here")
    try:
        suite = write_suite(
            tmp_path / "full.yaml", MODEL_FREE.format(name="full", methods="oracle-q, random, heuristic", episodes=40)
        )
        proc = run_qval("run", suite, "--results", results)
        assert proc.returncode == 1
        assert "disk full while writing results" in proc.stderr and "Traceback" not in proc.stderr
        assert not list((results / "parts").rglob(".*.tmp")), "a half-written file was left behind"
        for part in (results / "parts").glob("*/part-*.parquet"):
            pq.read_metadata(part)  # whole
        kept = _parts_rows(results)
        assert kept, "the disk filled before anything was written: enlarge the tmpfs"
        shutil.copytree(results / "parts", tmp_path / "parts-copy")
    finally:
        subprocess.run(["umount", str(results / "parts")], check=True)
    shutil.rmtree(results / "parts", ignore_errors=True)
    shutil.move(str(tmp_path / "parts-copy"), str(results / "parts"))  # the "larger disk"
    proc = run_qval("run", suite, "--results", results)
    assert proc.returncode == 0, proc.stderr
    final = _parts_rows(results)
    for cell, ids in kept.items():
        assert set(ids) <= set(final[cell])  # finished samples were kept, not recomputed away
    assert all(len(ids) == len(set(ids)) for ids in final.values())  # none duplicated
    _assert_database_matches_parts(results, "full")
