"""Chaos: 20+ random kill -9s of `qval run` and of its workers while a slow plugin scores, re-running after each;
the database must then equal an uninterrupted run's: 0 lost, 0 duplicated, 0 differing rows, no orphan left."""

import random
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import psutil
import pytest
from conftest import ROOT, install_plugin, pip, run_qval, write_suite

KILLS = 22

SUITE = """\
name: chaos
seeds: [0]
models: [smollm2-135m-instruct]
qalign:
  envs: [{name: frozenlake, params: {map: 8x8}}]
  methods: [oracle-q, {name: example-hostile, params: {mode: slow}}, random]
  points: {episodes: 40, epsilon: 0.3, max_points_per_episode: 4}
"""


@pytest.fixture(scope="module")
def hostile():
    install_plugin("qval-example-plugin")
    yield
    pip("uninstall", "-y", "qval-example-plugin")


def rows(results: Path):
    con = duckdb.connect(str(results / "qval.duckdb"), read_only=True)
    try:
        return con.execute(
            "SELECT cell_id, sample_id, candidate, action, score, ref_q, error, is_behaviour "
            "FROM qalign_samples ORDER BY cell_id, sample_id, candidate"
        ).df()
    finally:
        con.close()


def ours(results: Path) -> list[psutil.Process]:
    found = []
    for p in psutil.process_iter(["cmdline"]):
        cmd = " ".join(p.info["cmdline"] or [])
        if "qval" in cmd and str(results) in cmd:
            found.append(p)
    return found


def test_random_kills_lose_and_duplicate_nothing(hostile, tmp_path):
    suite = write_suite(tmp_path / "chaos.yaml", SUITE)
    clean = tmp_path / "clean"
    assert run_qval("run", suite, "--results", clean).returncode == 0
    expected = rows(clean)

    results, rng = tmp_path / "chaos", random.Random(12)
    kills = 0
    while kills < KILLS:
        proc = subprocess.Popen(
            [sys.executable, "-m", "qval", "run", str(suite), "--results", str(results), "--quiet"],
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        time.sleep(rng.uniform(0.5, 4.0))
        if proc.poll() is not None:
            if proc.returncode == 0 and "nothing to run" in run_qval("run", suite, "--results", results).stdout:
                break  # finished before we could kill it again: the suite is done
            continue
        workers = [p for p in ours(results) if "qval.worker" in " ".join(p.cmdline())]
        target = rng.choice(workers) if workers and rng.random() < 0.5 else psutil.Process(proc.pid)
        target.kill()
        kills += 1
        if target.pid != proc.pid:
            proc.wait(timeout=120)  # the run notices its worker died and ends
        else:
            proc.wait(timeout=30)
        time.sleep(0.3)  # a worker of a killed run dies with it (PR_SET_PDEATHSIG)
    assert kills >= 20
    final = run_qval("run", suite, "--results", results)
    assert final.returncode == 0, final.stderr
    got = rows(results)
    key = ["cell_id", "sample_id", "candidate"]
    assert not got.duplicated(key).any(), "duplicated rows"
    assert len(got) == len(expected), f"{len(expected) - len(got)} rows lost"
    assert got.reset_index(drop=True).equals(expected.reset_index(drop=True)), "rows differ"
    import pyarrow.parquet as pq

    in_parts = {
        (r["cell_id"], r["sample_id"], r["candidate"])
        for part in (results / "parts").glob("*/part-*.parquet")
        for r in pq.read_table(part, columns=key).to_pylist()
    }
    assert in_parts == set(map(tuple, got[key].to_numpy())), "database differs from the parts"
    time.sleep(0.5)
    assert not ours(results), "orphaned qval processes"
