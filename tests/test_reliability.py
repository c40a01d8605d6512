"""Faults found from outside (issue #12), each ending with nothing lost, nothing duplicated, nothing hanging and
no traceback. Plugins misbehave for real (tests/plugins/qval-example-plugin: example-hostile), through the CLI."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import psutil
import pyarrow.parquet as pq
import pytest
from conftest import install_plugin, model_free_suite, pip, run_qval, write_suite


@pytest.fixture(scope="module")
def hostile():
    install_plugin("qval-example-plugin")
    yield
    pip("uninstall", "-y", "qval-example-plugin")


def suite_for(tmp_path: Path, *modes: str, timeout: float = 2.0, name: str = "hostile") -> Path:
    methods = ", ".join(["oracle-q", *(f"{{name: example-hostile, params: {{mode: {m}}}}}" for m in modes)])
    return write_suite(
        tmp_path / f"{name}.yaml",
        f"""\
        name: {name}
        seeds: [0]
        models: [smollm2-135m-instruct]
        qalign:
          envs: [{{name: frozenlake, params: {{map: 4x4}}}}]
          methods: [{methods}]
          points: {{episodes: 2, epsilon: 0.3, max_points_per_episode: 2}}
          timeout_per_point_s: {timeout}
        """,
    )


def db_rows(results: Path, table: str = "qalign_samples"):
    con = duckdb.connect(str(results / "qval.duckdb"), read_only=True)
    try:
        return con.execute(f"SELECT * FROM {table}").df()
    finally:
        con.close()


def parts_rows(results: Path):
    import pandas as pd

    frames = [pq.read_table(p).to_pandas() for p in sorted((results / "parts").glob("*/part-*.parquet"))]
    return pd.concat(frames, ignore_index=True)


def assert_db_equals_parts(results: Path) -> None:
    """0 lost, 0 duplicated: the database holds one row per (cell, sample, candidate), exactly the parts' rows."""
    db, parts = db_rows(results), parts_rows(results)
    key = ["cell_id", "sample_id", "candidate"]
    assert not db.duplicated(key).any()
    assert set(map(tuple, db[key].to_numpy())) == set(map(tuple, parts[key].to_numpy()))


def cell_of(results: Path, mode: str) -> str:
    con = duckdb.connect(str(results / "qval.duckdb"), read_only=True)
    try:
        rows = con.execute("SELECT cell_id, identity FROM cells WHERE method = 'example-hostile'").fetchall()
    finally:
        con.close()
    return next(cid for cid, identity in rows if f'"mode": "{mode}"' in identity or f'"mode":"{mode}"' in identity)


def test_a_plugin_printing_forged_events_cannot_crash_or_block_the_runner(hostile, tmp_path):
    proc = run_qval("run", suite_for(tmp_path, "print-event"), "--results", tmp_path / "r", timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    assert_db_equals_parts(tmp_path / "r")
    log = next((tmp_path / "r" / "logs").glob("*/shard-*.log")).read_text()
    assert '"event": "cell_start"' in log  # the forged lines went to the log, not to the runner


@pytest.mark.parametrize("mode", ["c-call", "no-alarm"])
def test_the_watchdog_kills_a_worker_that_no_time_limit_can_stop(hostile, tmp_path, mode):
    started = time.monotonic()
    proc = run_qval(
        "run",
        suite_for(tmp_path, mode, timeout=1.0),
        "--results",
        tmp_path / "r",
        timeout=300,
        env={"QVAL_WATCHDOG_GRACE_S": "3"},
    )
    assert time.monotonic() - started < 120, "the run hung"
    assert proc.returncode != 0 and "watchdog" in proc.stderr and "Traceback" not in proc.stderr
    failed = json.loads((tmp_path / "r" / "parts" / cell_of(tmp_path / "r", mode) / "FAILED.json").read_text())
    assert "watchdog" in failed["error"]
    assert not [
        p
        for p in psutil.process_iter(["cmdline"])
        if "qval.worker" in " ".join(p.info["cmdline"] or []) and str(tmp_path) in " ".join(p.info["cmdline"] or [])
    ]


@pytest.mark.parametrize(
    "mode, reason",
    [
        ("never-float", "exceeded its time limit"),
        ("raising-float", "not a float (RuntimeError)"),
        ("huge", "not a float (OverflowError)"),
    ],
)
def test_bad_score_objects_fail_their_points_only(hostile, tmp_path, mode, reason):
    proc = run_qval(
        "run", suite_for(tmp_path, mode, timeout=1.0), "--results", tmp_path / "r", "--allow-failures", timeout=300
    )
    assert proc.returncode == 0, proc.stderr
    rows = db_rows(tmp_path / "r")
    hostile_rows = rows[rows["cell_id"] == cell_of(tmp_path / "r", mode)]
    assert len(hostile_rows) > 0 and hostile_rows["score"].isna().all()
    assert hostile_rows["error"].str.contains(reason, regex=False).all()
    oracle = rows[rows["cell_id"] != cell_of(tmp_path / "r", mode)]
    assert oracle["error"].isna().all()  # the other cell is untouched
    assert_db_equals_parts(tmp_path / "r")


def test_a_child_started_with_setsid_does_not_outlive_the_run(hostile, tmp_path):
    proc = run_qval("run", suite_for(tmp_path, "setsid-child"), "--results", tmp_path / "r", timeout=300)
    assert proc.returncode == 0, proc.stderr
    time.sleep(0.5)
    left = [p for p in psutil.process_iter(["cmdline"]) if "time.sleep(300)" in " ".join(p.info["cmdline"] or [])]
    for p in left:
        p.kill()
    assert not left, "a plugin's setsid child outlived the run"


def test_shard_logs_are_capped(hostile, tmp_path):
    proc = run_qval(
        "run",
        suite_for(tmp_path, "spam"),
        "--results",
        tmp_path / "r",
        timeout=300,
        env={"QVAL_LOG_CAP_BYTES": str(2**20)},
    )
    assert proc.returncode == 0, proc.stderr
    logs = list((tmp_path / "r" / "logs").glob("*/shard-*.log*"))
    assert any(p.name.endswith(".1") for p in logs)  # rotated once the cap was reached
    assert all(p.stat().st_size <= 2**20 + 2**16 for p in logs)


def test_a_plugin_cannot_change_the_stored_reference_q(hostile, tmp_path):
    proc = run_qval("run", suite_for(tmp_path, "mutate"), "--results", tmp_path / "r", timeout=300)
    assert proc.returncode == 0, proc.stderr
    rows = db_rows(tmp_path / "r")
    mutated = rows[rows["cell_id"] == cell_of(tmp_path / "r", "mutate")].set_index(["sample_id", "candidate"])
    oracle = rows[rows["cell_id"] != cell_of(tmp_path / "r", "mutate")].set_index(["sample_id", "candidate"])
    assert (mutated["ref_q"] == oracle.loc[mutated.index, "ref_q"]).all()


def test_failed_work_fails_the_run(hostile, tmp_path):
    proc = run_qval("run", suite_for(tmp_path, "exit"), "--results", tmp_path / "r", "--json", timeout=300)
    assert proc.returncode == 4, proc.stdout + proc.stderr
    problems = json.loads(proc.stdout)["problem_cells"]
    assert len(problems) == 1 and "not finished" in problems[0]["problem"]
    allowed = run_qval("run", suite_for(tmp_path, "exit"), "--results", tmp_path / "r", "--allow-failures", timeout=300)
    assert allowed.returncode == 0, allowed.stderr


def test_two_workers_on_one_shard_write_each_sample_once(hostile, tmp_path):
    suite = model_free_suite(
        tmp_path, "two", "[oracle-q, random, heuristic]", episodes=8, points=4, lake="8x8", file="two.yaml"
    )
    results = tmp_path / "r"
    plan = json.loads(run_qval("plan", suite, "--results", results, "--emit-manifest", "--json").stdout)
    command = [
        sys.executable,
        "-m",
        "qval",
        "worker",
        "--plan",
        plan["plan_id"],
        "--shard",
        "0",
        "--results",
        str(results),
    ]
    workers = [subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) for _ in range(2)]
    for w in workers:
        assert w.wait(timeout=300) == 0, w.stderr.read().decode()
    assert run_qval("ingest", "--results", results).returncode == 0
    assert_db_equals_parts(results)
    per_sample = parts_rows(results).groupby(["cell_id", "sample_id", "candidate"]).size()
    assert (per_sample == 1).all()  # not only deduplicated at ingest: never written twice


def test_ingest_keeps_one_copy_of_a_sample_written_twice(tmp_path):
    suite = model_free_suite(tmp_path, "twice", "[oracle-q]", episodes=3, points=2)
    results = tmp_path / "r"
    assert run_qval("run", suite, "--results", results).returncode == 0
    before = db_rows(results)
    part = next((results / "parts").glob("*/part-*.parquet"))
    (part.parent / "part-00099-orphan.parquet").write_bytes(part.read_bytes())  # an orphan wrote them again
    assert run_qval("ingest", "--results", results).returncode == 0
    after = db_rows(results)
    assert len(after) == len(before) and not after.duplicated(["cell_id", "sample_id", "candidate"]).any()


def test_a_done_manifest_without_parts_is_recomputed_not_emptied(tmp_path):
    suite = model_free_suite(tmp_path, "lost", "[oracle-q]", episodes=3, points=2)
    results = tmp_path / "r"
    assert run_qval("run", suite, "--results", results).returncode == 0
    before = db_rows(results)
    for part in (results / "parts").glob("*/part-*.parquet"):
        part.unlink()  # the parts are lost; DONE.json stays
    ingest = run_qval("ingest", "--results", results)
    assert ingest.returncode == 0
    con = duckdb.connect(str(results / "qval.duckdb"), read_only=True)
    status, error = con.execute("SELECT status, error FROM cells").fetchone()
    con.close()
    assert status == "partial" and "promises" in error  # reported, never a finished cell with n = 0
    again = run_qval("run", suite, "--results", results)
    assert again.returncode == 0, again.stderr
    after = db_rows(results)
    assert len(after) == len(before) and not after.duplicated(["sample_id", "candidate"]).any()


def test_a_part_in_another_cells_folder_is_quarantined(tmp_path):
    suite = model_free_suite(tmp_path, "moved", "[oracle-q, random]", episodes=3, points=2)
    results = tmp_path / "r"
    assert run_qval("run", suite, "--results", results).returncode == 0
    before = db_rows(results)
    a, b = sorted(p for p in (results / "parts").iterdir() if p.is_dir())
    stray = next(a.glob("part-*.parquet"))
    (b / ("part-99999-stray.parquet")).write_bytes(stray.read_bytes())
    assert run_qval("ingest", "--results", results).returncode == 0
    after = db_rows(results)
    assert len(after) == len(before)
    assert any((results / "quarantine" / b.name).glob("part-99999-stray*"))


@pytest.mark.parametrize(
    "text, message",
    [
        ("name: d\nname: e\n", "duplicate key 'name'"),
        (
            "name: s\nseeds: [4294967296]\nmodels: [smollm2-135m-instruct]\nqalign: {envs: [frozenlake], "
            "methods: [oracle-q]}\n",
            "32-bit",
        ),
        (
            "name: s\nseeds: [0]\nmodels:\n  - {source: hf, params: {path: /x, engine_args: &a [1,1,1,1,1,1,1,1,1,1]}}\n"
            "x1: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a,*a]\nx2: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b,*b]\n"
            "x3: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c,*c]\nx4: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d,*d]\n"
            "x5: [*e,*e,*e,*e,*e,*e,*e,*e,*e,*e]\n",
            "expands to more than",
        ),
    ],
)
def test_hostile_yaml_is_refused_quickly(tmp_path, text, message):
    path = tmp_path / "s.yaml"
    path.write_text(text)
    started = time.monotonic()
    proc = run_qval("plan", path, "--results", tmp_path / "r")
    assert proc.returncode == 2 and message in proc.stderr and "Traceback" not in proc.stderr
    assert time.monotonic() - started < 60


def test_a_huge_grid_is_refused_before_expanding(tmp_path):
    temps = ", ".join(f"{t / 1000:g}" for t in range(1000))
    seeds = ", ".join(str(s) for s in range(100))
    path = write_suite(
        tmp_path / "s.yaml",
        f"""\
        name: grid
        seeds: [{seeds}]
        models: [smollm2-135m-instruct]
        decode:
          datasets: [spec-bench]
          policies: [ar, prompt-lookup]
          temperatures: [{temps}]
        """,
    )
    proc = run_qval("plan", path, "--results", tmp_path / "r")
    assert proc.returncode == 2 and "above the limit" in proc.stderr and "QVAL_MAX_CELLS" in proc.stderr


def test_plan_order_is_by_sequence_not_clock_and_bad_manifests_are_skipped(tmp_path):
    first = model_free_suite(tmp_path, "seq", "[oracle-q]", episodes=2, points=2, file="a.yaml")
    results = tmp_path / "r"
    assert run_qval("run", first, "--results", results).returncode == 0
    old_plan = next((results / "plans").glob("*.json"))
    os.utime(old_plan, (time.time() + 10**7, time.time() + 10**7))  # a clock far in the future
    second = write_suite(tmp_path / "b.yaml", first.read_text().replace("[oracle-q]", "[oracle-q, random]"))
    (results / "plans" / "broken.json").write_text("")  # a zero-length manifest after a crash
    proc = run_qval("run", second, "--results", results)
    assert proc.returncode == 0, proc.stderr
    con = duckdb.connect(str(results / "qval.duckdb"), read_only=True)
    n = con.execute("SELECT count(*) FROM suite_cells WHERE suite = 'seq'").fetchone()[0]
    con.close()
    assert n == 2  # the later run's methods are on the board despite the older plan's clock


def test_a_killed_run_is_marked_interrupted(tmp_path):
    (tmp_path / "r" / "runs").mkdir(parents=True)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    record = {
        "run_id": "r1",
        "suite": "x",
        "status": "running",
        "pid": dead.pid,
        "host": __import__("socket").gethostname(),
    }
    (tmp_path / "r" / "runs" / "r1.json").write_text(json.dumps(record))
    assert run_qval("ingest", "--results", tmp_path / "r").returncode == 0
    assert json.loads((tmp_path / "r" / "runs" / "r1.json").read_text())["status"] == "interrupted"


def test_readers_wait_for_an_ingest_instead_of_failing(tmp_path):
    suite = model_free_suite(tmp_path, "readers", "[oracle-q]", episodes=2, points=2)
    results = tmp_path / "r"
    assert run_qval("run", suite, "--results", results).returncode == 0
    (results / "parts" / next(p.name for p in (results / "parts").iterdir() if p.is_dir()) / "DONE.json").touch()
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import duckdb, sys, time; con = duckdb.connect(sys.argv[1]); print('open', flush=True); time.sleep(4)",
            str(results / "qval.duckdb"),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout.readline().strip() == "open"
    report = run_qval("report", "--results", results, "--out", tmp_path / "rep")
    holder.wait()
    assert report.returncode == 0, report.stderr
    assert "busy" in report.stderr and "Traceback" not in report.stderr


def test_report_folders_never_collide_and_hostile_characters_are_neutralised(tmp_path):
    from qval.errors import QvalError
    from qval.report.build import report_folder
    from qval.report.render import _md, _text
    from qval.store.parts import quarantine

    assert report_folder("a/b") != report_folder("a_b") and report_folder("a_b") == "a_b"
    assert len(report_folder("x" * 300)) < 100 and "/" not in report_folder("../../etc")
    assert "\x00" not in _md("bad\x00name\u202eevil") and "\u202e" not in _text("a\u202eb")
    outside = tmp_path / "outside"
    outside.mkdir()
    results = tmp_path / "r"
    (results / "parts" / "abc").mkdir(parents=True)
    part = results / "parts" / "abc" / "part-00000-x.parquet"
    part.write_bytes(b"junk")
    (results / "quarantine").symlink_to(outside)
    with pytest.raises(QvalError, match="symbolic link"):
        quarantine(results, part, "corrupt")
    assert part.exists() and not any(outside.iterdir())


def test_a_final_ingest_that_cannot_write_keeps_the_parts_and_says_how(tmp_path):
    suite = model_free_suite(tmp_path, "locked", "[oracle-q]", episodes=2, points=2)
    results = tmp_path / "r"
    assert run_qval("run", suite, "--results", results).returncode == 0
    second = write_suite(tmp_path / "t.yaml", suite.read_text().replace("[oracle-q]", "[oracle-q, random]"))
    reader = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import duckdb, sys, time; con = duckdb.connect(sys.argv[1], "
            "read_only=True); print('open', flush=True); time.sleep(30)",
            str(results / "qval.duckdb"),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert reader.stdout.readline().strip() == "open"
        proc = run_qval("run", second, "--results", results, env={"QVAL_DB_WAIT_S": "2"})
    finally:
        reader.kill()
    assert proc.returncode == 3 and "Nothing is lost" in proc.stderr and "qval ingest" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert run_qval("ingest", "--results", results).returncode == 0
    assert len(db_rows(results)["cell_id"].unique()) == 2
