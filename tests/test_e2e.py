"""End to end with real parts: real SmolLM2, real subprocess workers, a real DuckDB file, real reports."""

import json
import math

import duckdb
import pandas as pd
import pyarrow.parquet as pq
import pytest
from conftest import TINY_SUITE, run_qval, write_suite

import qval.results as R
from qval.store.db import SCHEMA_VERSION


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("e2e")
    suite = write_suite(root / "tiny.yaml", TINY_SUITE)
    results = root / "results"
    proc = run_qval("run", suite, "--results", results, "--workers", "2")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return root, suite, results, proc


def test_run_fills_every_table(tiny_run):
    _, _, results, proc = tiny_run
    assert "ingested 5 cell(s)" in proc.stdout
    cells = R.cells(results, "tiny")
    assert len(cells) == 5 and set(cells["status"]) == {"done"} and cells["n_failed"].sum() == 0
    runs = R.runs(results)
    assert len(runs) == 1 and runs.iloc[0]["status"] == "done" and runs.iloc[0]["torch"]
    con = duckdb.connect(str(results / "qval.duckdb"), read_only=True)
    assert con.execute("SELECT count(*) FROM cell_metrics WHERE isnan(value)").fetchone()[0] == 0
    assert con.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()[0] == str(SCHEMA_VERSION)
    con.close()


def test_metrics_make_sense(tiny_run):
    _, _, results, _ = tiny_run
    q = R.leaderboard(results, "tiny", "qalign").set_index("method")
    assert q.loc["oracle-q", "per_state_spearman"] == pytest.approx(1.0)
    assert q.loc["oracle-q", "per_state_spearman__n"] > 5
    d = R.leaderboard(results, "tiny", "decode").set_index("method")
    assert d.loc["prompt-lookup", "lossless"] == 1.0  # greedy speculative output is token-identical to AR
    assert d.loc["ar", "speedup"] == 1.0 and d.loc["ar", "mean_accepted_tokens"] == 1.0
    assert math.isnan(d.loc["ar", "acceptance_length"])  # vLLM's definition: AR drafts nothing, so no value
    sp = d.loc["prompt-lookup"]
    assert math.isfinite(sp["speedup"]) and sp["speedup__lo"] <= sp["speedup"] <= sp["speedup__hi"]
    assert sp["acceptance_length"] >= 1.0
    samples = R.samples(results, "decode", "tiny")
    assert (samples["new_tokens"] <= 16).all() and (samples["decode_s"] > 0).all()


def test_rerun_is_a_noop(tiny_run):
    _, suite, results, _ = tiny_run
    before = R.samples(results, "decode").sort_values(["cell_id", "sample_id"]).reset_index(drop=True)
    proc = run_qval("run", suite, "--results", results)
    assert proc.returncode == 0 and "nothing to run" in proc.stdout
    after = R.samples(results, "decode").sort_values(["cell_id", "sample_id"]).reset_index(drop=True)
    pd.testing.assert_frame_equal(before, after)
    assert len(list((results / "runs").glob("*.json"))) == 1


def test_reingest_is_idempotent_and_rebuilds_from_parts(tiny_run):
    _, _, results, _ = tiny_run
    metrics_before = R.metrics(results).sort_values(["cell_id", "metric"]).reset_index(drop=True)
    proc = run_qval("ingest", "--results", results)
    assert proc.returncode == 0 and "ingested 0 cell(s)" in proc.stdout
    (results / "qval.duckdb").unlink()  # the parts are the source of truth
    for _ in range(2):
        assert run_qval("ingest", "--results", results).returncode == 0
    metrics_after = R.metrics(results).sort_values(["cell_id", "metric"]).reset_index(drop=True)
    cols = ["cell_id", "metric", "value", "ci_low", "ci_high", "n"]
    pd.testing.assert_frame_equal(metrics_before[cols], metrics_after[cols])


def test_report_and_export(tiny_run):
    root, _, results, _ = tiny_run
    proc = run_qval("report", "--results", results, "--out", root / "reports")
    assert proc.returncode == 0, proc.stderr
    md = (root / "reports" / "tiny" / "leaderboard.md").read_text()
    html = (root / "reports" / "tiny" / "index.html").read_text()
    assert "oracle-q" in md and "prompt-lookup" in md and "95% CI" in md and "(n=" in md
    assert "data:image/png;base64," in html and "hardware" in html
    proc = run_qval("export", "--results", results, "--out", root / "export")
    assert proc.returncode == 0
    table = pq.read_table(root / "export" / "cell_metrics.parquet")
    assert table.num_rows == len(R.metrics(results))


def test_plan_shows_done_cells(tiny_run):
    _, suite, results, _ = tiny_run
    proc = run_qval("plan", suite, "--results", results)
    assert proc.returncode == 0 and "5 done, 0 to do" in proc.stdout


def test_second_writer_gets_a_clear_error(tiny_run):
    from qval.errors import ResultsLockedError
    from qval.store.db import results_lock

    _, _, results, _ = tiny_run
    with results_lock(results, "test holder"):
        proc = run_qval("ingest", "--results", results)
        assert proc.returncode == 3 and "in use by qval test holder" in proc.stderr
        with pytest.raises(ResultsLockedError):
            with results_lock(results, "again"):
                pass


def test_external_scheduler_flow(tmp_path):
    """--emit-manifest, then one `qval worker` per shard, then `qval ingest`: what a SLURM array would do."""
    suite = write_suite(
        tmp_path / "s.yaml",
        """\
        name: ext
        models: [smollm2-135m-instruct]
        qalign:
          envs: [taxi]
          methods: [oracle-q, random]
          points: {episodes: 3, max_points_per_episode: 2, max_steps: 60}
        """,
    )
    results = tmp_path / "r"
    proc = run_qval("plan", suite, "--results", results, "--emit-manifest")
    assert proc.returncode == 0 and "wrote" in proc.stdout
    plan_id = next((results / "plans").glob("*.json")).stem
    assert run_qval("worker", "--plan", plan_id, "--shard", "0", "--results", results).returncode == 0
    bad = run_qval("worker", "--plan", plan_id, "--shard", "7", "--results", results)
    assert bad.returncode == 2 and "out of range" in bad.stderr
    assert run_qval("ingest", "--results", results).returncode == 0
    board = R.leaderboard(results, "ext", "qalign").set_index("method")
    assert board.loc["oracle-q", "per_state_spearman"] == pytest.approx(1.0)


def test_scriptable_json_and_quiet(tiny_run):
    root, suite, results, _ = tiny_run
    plan = json.loads(run_qval("plan", suite, "--results", results, "--json").stdout)
    assert plan["suite"] == "tiny" and len(plan["cells"]) == 5 and all(c["done"] for c in plan["cells"])
    rerun = run_qval("run", suite, "--results", results, "--json")
    summary = json.loads(rerun.stdout)
    assert rerun.returncode == 0 and summary["run_id"] is None and summary["cells_run"] == 0
    ingest = json.loads(run_qval("ingest", "--results", results, "--json").stdout)
    assert ingest["cells_ingested"] == 0 and ingest["cells_unchanged"] == 5
    quiet = run_qval("report", "--results", results, "--out", root / "q", "--quiet")
    assert quiet.returncode == 0 and quiet.stdout == ""
    kinds = {p["kind"] for p in json.loads(run_qval("plugins", "--json").stdout)}
    assert kinds == {"scorers", "policies", "envs", "datasets", "models", "metrics", "runners", "tracks"}
