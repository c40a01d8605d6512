"""A third track is one package: tests/plugins/qval-example-track declares the `rollout` track (suite section, cells,
worker, sample table, metrics) through entry points only, and every stage of qval runs it through the real CLI:
plan, run (workers), ingest (its table created from its schema), metrics with n and CIs, report, `qval samples`,
`qval compare`. The core holds no track names (the guardrail below), so this is the only way a track gets in."""

from __future__ import annotations

import ast
import json
import re
import shutil

import duckdb
import pyarrow.parquet as pq
import pytest
from conftest import ROOT, run_qval, write_suite
from path_plugins import expose_package

PACKAGE = ROOT / "tests" / "plugins" / "qval-example-track"

SUITE = """\
name: walks
seeds: [0, 1]
rollout:
  envs: [frozenlake, {name: cliffwalking}]
  episodes: 12
  max_steps: 60
"""


@pytest.fixture(scope="module")
def walks(tmp_path_factory):
    root = tmp_path_factory.mktemp("track")
    env = expose_package(root / "site", PACKAGE)
    suite = write_suite(root / "walks.yaml", SUITE)
    proc = run_qval("run", suite, "--results", root / "r", "--workers", "2", env=env)
    return root, env, suite, proc


def test_a_third_track_runs_ingests_and_reports_through_the_cli(walks):
    root, env, _, proc = walks
    assert proc.returncode == 0, proc.stdout + proc.stderr
    con = duckdb.connect(str(root / "r" / "qval.duckdb"), read_only=True)
    try:
        cells = con.execute("SELECT cell_id, track, status, n_samples FROM cells ORDER BY cell_id").fetchall()
        rows = con.execute("SELECT cell_id, count(*) FROM rollout_samples GROUP BY 1").fetchall()
        metrics = con.execute("SELECT metric, value, ci_low, ci_high, n FROM cell_metrics").fetchall()
        # An independent computation of the point estimates from the stored rows.
        expected = con.execute(
            "SELECT m.metric, m.value, CASE m.metric WHEN 'mean_return' THEN avg(r.discounted_return) "
            "ELSE avg(r.success::DOUBLE) END FROM cell_metrics m JOIN rollout_samples r USING (cell_id) "
            "GROUP BY m.cell_id, m.metric, m.value"
        ).fetchall()
    finally:
        con.close()
    assert len(cells) == 4 and {c[1:] for c in cells} == {("rollout", "done", 12)}  # 2 envs x 2 seeds
    assert sorted(n for _, n in rows) == [12] * 4
    # The database equals the parts: every row the workers wrote, once.
    parts = sum(pq.read_table(p).num_rows for p in (root / "r" / "parts").rglob("part-*.parquet"))
    assert parts == 48
    by_metric: dict[str, list] = {}
    for metric, value, lo, hi, n in metrics:
        by_metric.setdefault(metric, []).append((value, lo, hi, n))
    assert set(by_metric) == {"mean_return", "success_rate"}
    for values in by_metric.values():
        assert all(n == 12 and lo <= value <= hi for value, lo, hi, n in values)
    assert len(expected) == 8 and all(abs(value - independent) < 1e-12 for _, value, independent in expected)


def test_its_leaderboard_samples_and_comparison(walks):
    root, env, _, _ = walks
    proc = run_qval("report", "--results", root / "r", "--out", root / "reports", env=env)
    assert proc.returncode == 0, proc.stderr
    md = (root / "reports" / "walks" / "leaderboard.md").read_text()
    assert "Random rollouts" in md and "mean_return" in md and "uniform-random" in md
    html = (root / "reports" / "walks" / "index.html").read_text()
    assert "Random rollouts" in html and "<img" in html  # the ranking figure, the one a track gets by default
    cell = next(iter((root / "r" / "parts").iterdir())).name
    proc = run_qval("samples", cell, "--results", root / "r", env=env)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("── sample episode-") == 12 and "discounted_return" in proc.stdout
    shutil.copytree(root / "r", root / "r2")
    proc = run_qval("compare", f"{root / 'r'}:walks", f"{root / 'r2'}:walks", "--json", env=env)
    assert proc.returncode == 0, proc.stderr
    verdicts = {row["verdict"] for row in json.loads(proc.stdout)}
    assert verdicts and not any("only in" in v for v in verdicts)


def test_without_its_plugin_the_track_is_an_unknown_section_and_its_parts_wait(walks, tmp_path):
    root, _, suite, _ = walks
    proc = run_qval("plan", suite, "--results", tmp_path / "r")
    assert proc.returncode == 2 and "rollout" in proc.stderr and "Traceback" not in proc.stderr
    shutil.copytree(root / "r", tmp_path / "copy")
    (tmp_path / "copy" / "qval.duckdb").unlink()
    proc = run_qval("ingest", "--results", tmp_path / "copy")
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    assert "4 cell(s) of track 'rollout' not ingested" in proc.stderr
    assert len(list((tmp_path / "copy" / "parts").rglob("part-*.parquet"))) >= 4  # kept for when it is installed
    proc = run_qval("report", "--results", tmp_path / "copy", "--out", tmp_path / "reports")
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    assert "section 'rollout' is left out of the report: no such track is installed" in proc.stderr


CORE = [
    "suite.py",
    "plan.py",
    "worker.py",
    "compare.py",
    "results.py",
    "api.py",
    "cell.py",
    "tracks.py",
    "section.py",
    "samples_view.py",
    "store",
    "metrics",
    "report",
    "runners",
]


def test_the_core_holds_no_track_names():
    """The issue's rule: suite, plan, worker, store, metrics, report and compare reach a track only through
    qval.tracks. A string literal naming a built-in track (or its tables) in those modules is a regression."""
    names = re.compile(r"(qalign|decode)(_samples|_state|_state_values)?")
    offenders = []
    for entry in CORE:
        path = ROOT / "qval" / entry
        for file in [path] if path.is_file() else sorted(path.rglob("*.py")):
            for node in ast.walk(ast.parse(file.read_text())):
                if isinstance(node, ast.Constant) and isinstance(node.value, str) and names.fullmatch(node.value):
                    offenders.append(f"{file.relative_to(ROOT)}:{node.lineno}: {node.value!r}")
    assert not offenders, offenders


def test_plugins_check_runs_the_track_contract(walks):
    _, env, _, _ = walks
    proc = run_qval("plugins", "--check", "rollout", env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "track RolloutTrack: 5 checks passed" in proc.stdout and "sample table 'rollout_samples'" in proc.stdout


def test_a_broken_or_hostile_track_is_skipped_and_the_others_still_load(capsys):
    """A track plugin that is not a Track, one whose constructor raises, and one named like a key every suite has
    ("models" would replace the suite's model list): each is skipped with a line saying why, never a traceback."""
    from qval.registry import REGISTRY
    from qval.tracks import Track, all_tracks

    class Exploding(Track):
        def __init__(self):
            raise RuntimeError("boom")

    class Models(Track):
        pass

    hostile = {"notatrack": object(), "exploding": Exploding, "models": Models}
    for name, obj in hostile.items():
        REGISTRY.register("tracks", name, obj)
    try:
        names = [t.name for t in all_tracks()]
        err = capsys.readouterr().err
    finally:
        for name in hostile:
            REGISTRY.unregister("tracks", name)
    assert names == ["qalign", "decode"]
    assert "not a subclass of qval.tracks.Track" in err and "boom" in err and "every suite uses" in err
    assert [t.name for t in all_tracks()] == ["qalign", "decode"]
