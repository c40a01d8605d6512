"""The metric stage: a suite's metrics only, back-fill of a metric added to a finished suite or of a metric whose
version changed, from stored rows and without recomputing a sample; per-state values stored once."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pytest
from conftest import model_free_suite, run_qval

from qval.metrics.stage import compute_metrics
from qval.qalign.metrics import PooledSpearman
from qval.store.db import connect_writer


def _metrics(results: Path) -> dict[str, set[str]]:
    con = duckdb.connect(str(results / "qval.duckdb"), read_only=True)
    try:
        rows = con.execute("SELECT cell_id, metric FROM cell_metrics").fetchall()
    finally:
        con.close()
    out: dict[str, set[str]] = {}
    for cell_id, metric in rows:
        out.setdefault(cell_id, set()).add(metric)
    return out


def _parts(results: Path) -> dict[str, float]:
    return {str(p): p.stat().st_mtime_ns for p in (results / "parts").rglob("part-*.parquet")}


def _scalar(results: Path, sql: str):
    con = duckdb.connect(str(results / "qval.duckdb"), read_only=True)
    try:
        return con.execute(sql).fetchone()[0]
    finally:
        con.close()


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A finished suite whose metrics list holds only per-state Spearman."""
    tmp = tmp_path_factory.mktemp("stage")
    suite = model_free_suite(tmp, "stage", "[oracle-q, random]", episodes=3, points=3)
    text = suite.read_text().replace("  points:", "  metrics: [per_state_spearman]\n  points:")
    suite.write_text(text)
    results = tmp / "results"
    proc = run_qval("run", suite, "--results", results)
    assert proc.returncode == 0, proc.stderr
    return suite, results


def test_only_the_suites_metrics_are_computed(finished):
    _, results = finished
    metrics = _metrics(results)
    assert len(metrics) == 2
    assert all(names == {"per_state_spearman"} for names in metrics.values()), metrics


def test_metric_added_to_a_finished_suite_is_back_filled_without_recomputing_a_sample(finished, tmp_path):
    suite, results = finished
    before = _parts(results)
    n_units = _scalar(results, "SELECT count(*) FROM metric_units")
    changed = tmp_path / "stage.yaml"
    changed.write_text(
        suite.read_text().replace(
            "metrics: [per_state_spearman]", "metrics: [per_state_spearman, top1, pooled_spearman_all]"
        )
    )
    proc = run_qval("run", changed, "--results", results)
    assert proc.returncode == 0, proc.stderr
    assert "nothing to run" in proc.stdout, proc.stdout  # same cells: nothing re-scored
    assert "0 rows, 4 metric value(s)" in proc.stdout, proc.stdout  # 2 added metrics × 2 cells, nothing else
    assert _parts(results) == before  # no part written or rewritten
    metrics = _metrics(results)
    assert all(names == {"per_state_spearman", "top1", "pooled_spearman_all"} for names in metrics.values())
    # top1 stores its per-state values beside per_state_spearman's; ρ's were not recomputed (still the same count).
    assert _scalar(results, "SELECT count(*) FROM metric_units WHERE metric = 'per_state_spearman'") == n_units
    assert _scalar(results, "SELECT count(*) FROM metric_units WHERE metric = 'top1'") == n_units


def test_a_bumped_version_recomputes_that_metric_only(finished, monkeypatch):
    _, results = finished
    con = connect_writer(results)
    try:
        assert compute_metrics(con, []) == 0  # nothing missing, nothing outdated
        stamps = dict(con.execute("SELECT metric, max(computed_at) FROM metric_versions GROUP BY metric").fetchall())
        monkeypatch.setattr(PooledSpearman, "version", PooledSpearman.version + 1)
        assert compute_metrics(con, []) == 0  # pooled_spearman is not in this suite: nothing to do
        # per_state_spearman's definition "changed": only it is recomputed, for both cells.
        from qval.qalign.metrics import PerStateSpearman

        monkeypatch.setattr(PerStateSpearman, "version", PerStateSpearman.version + 1)
        assert compute_metrics(con, []) == 2
        after = dict(con.execute("SELECT metric, max(computed_at) FROM metric_versions GROUP BY metric").fetchall())
        versions = {
            v
            for (v,) in con.execute(
                "SELECT DISTINCT version FROM metric_versions WHERE metric = 'per_state_spearman'"
            ).fetchall()
        }
    finally:
        con.close()
    assert versions == {PerStateSpearman.version}
    assert after["per_state_spearman"] > stamps["per_state_spearman"]
    assert all(after[m] == stamps[m] for m in stamps if m != "per_state_spearman")


def test_a_metric_dropped_from_the_suite_is_forgotten(finished, tmp_path):
    suite, results = finished
    proc = run_qval("run", suite, "--results", results)  # the original list: per_state_spearman only
    assert proc.returncode == 0, proc.stderr
    assert all(names == {"per_state_spearman"} for names in _metrics(results).values()), _metrics(results)
    assert _scalar(results, "SELECT count(DISTINCT metric) FROM metric_units") == 1


def test_a_cell_in_no_suite_keeps_no_values_and_does_not_stop_the_ingest(finished, tmp_path):
    import shutil

    _, results = finished
    copy = tmp_path / "results"
    shutil.copytree(results, copy)
    con = connect_writer(copy)
    try:
        cell = con.execute("SELECT min(cell_id) FROM cells").fetchone()[0]
        con.execute("DELETE FROM suite_cells WHERE cell_id = ?", [cell])
        compute_metrics(con, [cell])  # its rows "changed", and no suite wants a metric of it
        left = con.execute("SELECT count(*) FROM cell_metrics WHERE cell_id = ?", [cell]).fetchone()[0]
        others = con.execute("SELECT count(*) FROM cell_metrics WHERE cell_id <> ?", [cell]).fetchone()[0]
    finally:
        con.close()
    assert left == 0 and others == 1


def test_a_metric_reading_a_column_its_view_lacks_is_refused():
    from qval.errors import PluginError
    from qval.metrics.base import Metric
    from qval.metrics.stage import _check_reads

    class Typo(Metric):
        name, track, reads = "typo", "decode", ("new_tokens", "decode_seconds")

    with pytest.raises(PluginError, match="decode_seconds"):
        _check_reads(Typo())


def test_reports_on_a_database_an_older_qval_wrote_say_how_to_upgrade(finished, tmp_path):
    import shutil

    from qval import results as R
    from qval.errors import UsageError

    _, results = finished
    copy = tmp_path / "results"
    shutil.copytree(results, copy)
    con = duckdb.connect(str(copy / "qval.duckdb"))
    con.execute("UPDATE meta SET value = '5' WHERE key = 'schema_version'")
    con.close()
    with pytest.raises(UsageError, match="qval ingest"):
        R.cells(copy)
    proc = run_qval("report", "--results", copy, "--out", tmp_path / "reports")
    assert proc.returncode == 2 and "qval ingest" in proc.stderr + proc.stdout, proc.stderr


def test_a_metric_of_an_unknown_track_is_refused():
    from qval.errors import PluginError
    from qval.metrics.base import Metric
    from qval.metrics.stage import _check_reads

    class Elsewhere(Metric):
        name, track = "elsewhere", "vision"

    with pytest.raises(PluginError, match="vision"):
        _check_reads(Elsewhere())


def test_list_counts_equal_duckdb_list_filter():
    """The stage counts a ListCount view column in numpy; it must equal len(list_filter(...)) in DuckDB for every
    shape of list: empty, NULL, with NULL elements, longer than a fetch batch, and thresholds with gaps."""
    import numpy as np
    import pandas as pd

    from qval.metrics import stage
    from qval.metrics.base import ListCount

    rng = np.random.default_rng(1)
    con = duckdb.connect()
    lists = [None, [], [None, 3], [0, 0], [7, 1, None, 9]] + [
        rng.integers(-2, 12, rng.integers(0, 40)).tolist() for _ in range(3000)
    ]
    con.execute(
        "CREATE TABLE t AS SELECT unnest(?::INTEGER[][]) AS l, generate_subscripts(?::INTEGER[][], 1) AS i",
        [lists, lists],
    )
    thresholds = [1, 2, 3, 5, 8]
    expected = con.execute(
        "SELECT "
        + ", ".join(f"len(list_filter(l, lambda x: x >= {t})) AS c{t}" for t in thresholds)
        + " FROM t ORDER BY i"
    ).df()
    counted = {f"c{t}": ListCount("l", t) for t in thresholds}
    stage_batch, stage._COUNT_BATCH = stage._COUNT_BATCH, 1000  # several batches
    try:
        got = stage._with_list_counts(con, "SELECT i, l AS qval_list_l FROM t ORDER BY i", [], ["i", *counted], counted)
    finally:
        stage._COUNT_BATCH = stage_batch
    pd.testing.assert_frame_equal(got.drop(columns="i"), expected)
    assert got["c1"].isna().sum() == 1 and got.loc[1, "c1"] == 0 and got.loc[2, "c1"] == 1


def test_decode_metrics_back_filled_equal_a_full_ingest_bit_for_bit(tmp_path):
    """The stage answers the ratio bootstraps of every metric of every cell in one product (stats.bootstrap_ratios_
    many); a back-fill answers only the added metrics'. Exact resampled sums make the two the same, bit for bit:
    decode metrics over synthetic parts (float timings, integer counts), added to a finished suite vs ingested
    whole."""
    import sys

    sys.path.insert(0, str(Path(__file__).parents[1] / "benchmarks"))
    from _synthetic import decode_suite, planned, write_decode_parts

    from qval.store.ingest import ingest

    def values(results: Path) -> dict:
        con = duckdb.connect(str(results / "qval.duckdb"), read_only=True)
        try:
            rows = con.execute("SELECT cell_id, metric, value, ci_low, ci_high, n FROM cell_metrics").fetchall()
        finally:
            con.close()
        return {(c, m): rest for c, m, *rest in rows}

    full, partial = tmp_path / "full", tmp_path / "partial"
    for folder in (full, partial):
        folder.mkdir()
        suite = decode_suite(folder / "bench.yaml", n_policies=2, n_temps=2, n_seeds=1)
        if folder is partial:  # finished with speedup only, then the others added
            text = suite.read_text()
            suite.write_text(text.replace("metrics: [speedup, ", "metrics: [speedup]\n  #"))
        plan = planned(suite, folder / "results")
        write_decode_parts(folder / "results", plan, 300)
        ingest(folder / "results")
    assert {m for _, m in values(partial / "results")} >= {"speedup", "accept_rate@1", "load_other_cores"}
    assert "tokens_per_s" not in {m for _, m in values(partial / "results")}
    planned(decode_suite(partial / "bench.yaml", n_policies=2, n_temps=2, n_seeds=1), partial / "results")
    assert ingest(partial / "results").metrics_computed > 0  # the back-fill
    want, got = values(full / "results"), values(partial / "results")
    assert got.keys() == want.keys() and any(m == "tokens_per_s" for _, m in got)
    assert got == want
