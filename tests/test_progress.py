"""Progress where no terminal is attached, and what Ctrl-C keeps (issue #16, "Running"), through the real CLI with
model-free suites: per-cell and periodic lines on a pipe, the interrupt's account of what was kept, `qval plan`'s
partial cells, and a resume that loses and duplicates nothing."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pyarrow.parquet as pq
import pytest
from conftest import ROOT, model_free_suite, run_qval

import qval.results as R
from qval.progress import RunProgress, interrupted_message

FAST = {"QVAL_PROGRESS_S": "0.2"}  # progress lines every 0.2 s instead of 30 s


def _suite(tmp_path: Path, name: str) -> Path:
    # ~600 points per cell: seconds per cell, long enough to see (and interrupt) a run between two cells.
    return model_free_suite(tmp_path, name, methods="[oracle-q, random, heuristic]", episodes=60, points=10, lake="8x8")


def test_a_piped_run_prints_a_line_per_cell_and_periodic_progress_with_an_eta(tmp_path):
    results = tmp_path / "r"
    proc = run_qval("run", _suite(tmp_path, "piped"), "--results", results, env=FAST, timeout=600)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    cells = [
        line for line in lines if re.match(r"cell \d/3 done in \d+s: \S+ on frozenlake\(map=8x8\) .*, n=\d+$", line)
    ]
    assert len(cells) == 3, proc.stdout
    for method in ("oracle-q", "random", "heuristic"):
        assert any(f": {method} on " in line for line in cells), proc.stdout
    periodic = [line for line in lines if line.startswith("progress: ")]
    assert any(re.search(r"\d/3 cells, \d+/\d+ samples.*elapsed, ETA ~?\d+[hms]", line) for line in periodic), (
        proc.stdout
    )
    assert "all 3 cell(s) of this run ended" in proc.stdout
    assert "━" not in proc.stderr  # no terminal: no bar drawn at the end either
    # The shard log says what the worker did: each cell started, sample i/n, finished.
    log = next((results / "logs").glob("*/shard-0.log")).read_text()
    for needle in ("oracle-q on frozenlake(map=8x8) (no model, T=0, seed 0): starting", "samples, 0 already done"):
        assert needle in log, log
    assert re.search(r": sample \d+/\d+$", log, re.M) and log.count(": finished, n=") == 3, log


def _worker_pids(results: Path) -> list[int]:
    out = subprocess.run(["pgrep", "-f", f"qval.worker .*--results {results}"], capture_output=True, text=True)
    return [int(p) for p in out.stdout.split()]


def _held(results: Path) -> dict[str, set]:
    """Distinct sample ids per unfinished cell, straight from its Parquet parts."""
    held = {}
    for directory in (results / "parts").iterdir():
        if not (directory / "DONE.json").exists():
            ids = set()
            for part in directory.glob("part-*.parquet"):
                ids.update(pq.read_table(part, columns=["sample_id"]).column("sample_id").to_pylist())
            held[directory.name] = ids
    return held


def _interrupt(suite: Path, results: Path, how: int) -> tuple[int, str, str]:
    """Start `qval run`, wait for its first finished cell and a part of an unfinished one, then send `how` to its
    whole process group, as a terminal's Ctrl-C does: the workers get it too, and then the runner's SIGTERM."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "qval", "run", str(suite), "--results", str(results)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **FAST},
        start_new_session=True,  # a group of its own: the signal below must not reach pytest's group
    )
    seen = []
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            seen.append(line)
            if line.startswith("cell 1/3 done"):
                break
        deadline = time.time() + 60
        while time.time() < deadline and not any(_held(results).values()):
            time.sleep(0.02)
        os.killpg(proc.pid, how)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    return proc.returncode, "".join(seen) + out, err


@pytest.mark.parametrize("how", [signal.SIGINT, signal.SIGTERM], ids=["sigint", "sigterm"])
def test_an_interrupted_run_says_what_it_kept_and_a_rerun_resumes_it(tmp_path, how):
    # The signal is sent once an unfinished cell has a part; on a loaded machine that cell can still finish before
    # the signal lands, leaving nothing partly done to resume. The account must be right either way (checked on each
    # try); the resume needs a partly done cell, so the run is interrupted again, afresh, until it has one.
    for attempt in range(3):
        folder = tmp_path / f"try{attempt}"
        folder.mkdir()
        suite, results = _suite(folder, f"stop{int(how)}"), folder / "r"
        accounted = _interrupted_and_accounted(suite, results, how)
        if accounted is not None and accounted[1] > 0:
            break
    assert accounted is not None and accounted[1] > 0, "three interrupts in a row landed between cells or too late"
    done, kept, partial, held = accounted
    if how == signal.SIGTERM:
        return  # the resume path is the same as after SIGINT, checked below

    # `qval plan` shows how far each unfinished cell got, from its parts.
    plan = run_qval("plan", suite, "--results", results)
    assert plan.returncode == 0, plan.stderr
    for cell, ids in held.items():
        if ids:
            assert re.search(rf"{cell}.*{len(ids)}/\d+ samples", plan.stdout), plan.stdout
    assert f"{done} done, {3 - done} to do ({partial} partly done" in plan.stdout, plan.stdout

    again = run_qval("run", suite, "--results", results, timeout=600)
    assert again.returncode == 0, again.stderr
    assert f"{3 - done} to run" in again.stdout
    samples = R.samples(results, "qalign", f"stop{int(how)}")
    truth: dict[str, set] = {}
    for part in (results / "parts").glob("*/part-*.parquet"):
        table = pq.read_table(part, columns=["sample_id", "candidate"]).to_pydict()
        truth.setdefault(part.parent.name, set()).update(zip(table["sample_id"], table["candidate"]))
    assert not samples.duplicated(["cell_id", "sample_id", "candidate"]).any()  # 0 duplicated
    got = {c: set(zip(g["sample_id"], g["candidate"])) for c, g in samples.groupby("cell_id")}
    assert got == truth  # 0 lost: every row of every part, once
    cells = R.cells(results, f"stop{int(how)}")
    assert len(cells) == 3 and (cells["status"] == "done").all()
    assert all(len({s for s, _ in truth[c]}) == n for c, n in zip(cells["cell_id"], cells["n_samples"]))
    for cell, ids in held.items():  # the samples kept at the interrupt were resumed after, not recomputed away
        assert ids <= {s for s, _ in truth[cell]}


def _interrupted_and_accounted(suite: Path, results: Path, how: int) -> tuple[int, int, int, dict[str, set]] | None:
    """Interrupt a run of ``suite`` and check its exit and its account of what it kept against the parts on disk.
    Returns (cells done, samples kept of unfinished cells, unfinished cells with samples, those samples by cell);
    None where the run had finished every cell before the signal came (it ends as a finished run)."""
    code, out, err = _interrupt(suite, results, how)
    if code == 0 and all((d / "DONE.json").exists() for d in (results / "parts").iterdir()):
        return None
    assert code == (130 if how == signal.SIGINT else 143), out + err
    assert "Traceback" not in err and "internal error" not in err, err
    time.sleep(0.5)
    assert _worker_pids(results) == [], "a worker outlived the interrupted run"

    held = _held(results)
    done = sum(1 for d in (results / "parts").iterdir() if (d / "DONE.json").exists())
    kept = sum(len(ids) for ids in held.values())
    partial = sum(1 for ids in held.values() if ids)
    assert 1 <= done < 3, (out, err)
    word = "interrupted" if how == signal.SIGINT else "terminated (SIGTERM)"
    said = re.search(
        rf"{re.escape(word)}: (\d+) of 3 cells finished and kept in {re.escape(str(results / 'parts'))}; "
        r"(\d+) sample\(s\) of (\d+) unfinished cell\(s\) kept \(the workers reported (\d+) finished\); ",
        err,
    )
    assert said, err
    assert [int(n) for n in said.groups()[:3]] == [done, kept, partial], err
    # Every sample the runner counted is on disk: the workers' buffered tail was written, not cut short by the
    # runner's SIGTERM arriving during that write. One more per cell is a sample written but not yet reported.
    reported = int(said.group(4))
    assert reported <= kept <= reported + partial, err
    assert "were lost" not in err, err
    assert "re-run the same command to resume" in err, err
    return done, kept, partial, held


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_the_eta_counts_from_the_first_sample_not_from_the_start_up():
    clock, lines = _Clock(), []
    progress = RunProgress(SimpleNamespace(cells={}), ["a", "b"], lines.append, periodic=False, clock=clock)
    clock.now += 120  # two minutes loading a model and collecting points: no sample yet
    progress.event({"event": "cell_start", "cell": "a", "total": 100, "done": 0})
    progress.event({"event": "cell_start", "cell": "b", "total": 100, "done": 0})
    assert progress.line().endswith("2m00s elapsed, ETA unknown")
    progress.event({"event": "sample", "cell": "a"})  # the first sample starts the rate's clock
    clock.now += 1
    assert progress.line().endswith("ETA unknown")
    for _ in range(10):  # then 10 samples a second
        progress.event({"event": "sample", "cell": "a"})
    # 189 samples left at 10 per second, not 189 * 121 s / 11
    assert progress.line() == "progress: 0/2 cells, 11/200 samples, 2m01s elapsed, ETA 19s"


def test_the_interrupt_message_says_what_the_workers_reported_and_what_was_lost(tmp_path):
    from qval.store.parts import PartWriter

    writer = PartWriter(tmp_path, "c1", "qalign", flush_rows=10**6, flush_seconds=10**6)
    for i in range(5):
        writer.add_sample([{"sample_id": f"s{i}", "state_key": "x", "candidate": 0, "action": "a"}])
    writer.flush()
    plan = SimpleNamespace(cells={"c1": None, "c2": None})
    assert "5 sample(s) of 1 unfinished cell(s) kept (the workers reported 5 finished); a re-run" in (
        interrupted_message(plan, tmp_path, reported={"c1": 5})
    )
    assert "were lost" not in interrupted_message(plan, tmp_path, reported={"c1": 4})  # written, not yet reported
    lost = interrupted_message(plan, tmp_path, reported={"c1": 8, "c2": 2})
    assert "kept (the workers reported 10 finished); 5 of those were lost (a worker killed before" in lost
