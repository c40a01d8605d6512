"""`qalign.label_noise` in a suite: the report's label-noise table (the same comparison as `qval label-noise`), with
n and CI, computed once and reused by a rebuild, through the real CLI on a model-free suite."""

from __future__ import annotations

import json

import pytest

from tests.conftest import run_qval, usage_error, write_suite

SUITE = """\
name: noisy
seeds: [0]
models: [smollm2-135m-instruct]
qalign:
  envs: [{name: frozenlake, params: {map: 4x4}}, {name: frozenlake, params: {map: 4x4, slippery: true}}]
  methods: [oracle-q, random, heuristic]
  points: {episodes: 6, max_points_per_episode: 3}
  label_noise: {rollouts: [1, 16], agg: [max, mean]}
"""
TITLE = "Label noise: does the method order survive Monte-Carlo labels?"


@pytest.fixture(scope="module")
def noisy(tmp_path_factory):
    """The suite run, then reported; and `qval label-noise --json` on the same results, for comparison."""
    tmp = tmp_path_factory.mktemp("noisy")
    results, out = tmp / "results", tmp / "reports"
    proc = run_qval("run", write_suite(tmp / "s.yaml", SUITE), "--results", results, "--quiet")
    assert proc.returncode == 0, proc.stderr
    proc = run_qval("report", "--results", results, "--out", out, "--suite", "noisy")
    assert proc.returncode == 0, proc.stderr
    return tmp, results, out / "noisy"


def _section(markdown: str) -> list[str]:
    """The label-noise table's rows in the Markdown report."""
    lines = markdown.split(f"### {TITLE}", 1)[1].split("\n### ", 1)[0].splitlines()
    return [line for line in lines if line.startswith("| ") and "---" not in line][1:]


def test_report_has_the_comparison_with_n_and_ci(noisy):
    _, results, folder = noisy
    markdown = (folder / "leaderboard.md").read_text()
    rows = _section(markdown)
    deterministic = [r for r in rows if r.startswith("| frozenlake · seed 0 ")]
    slippery = [r for r in rows if r.startswith("| frozenlake(slippery=True) · seed 0 ")]
    assert [r.split(" | ")[1] for r in deterministic] == ["MC 1×max", "MC 1×mean", "MC 16×max", "MC 16×mean"]
    assert len(slippery) == 4
    # Deterministic dynamics: Monte-Carlo returns equal exact Q*, so the orders agree exactly; every number with n.
    for row in deterministic:
        assert " | 1.000 [1.000, 1.000] (n=" in row and " states" in row and "| none |" in row
    # The numbers are `qval label-noise`'s own (one code path): τ, CI and n for each label set.
    proc = run_qval("label-noise", "noisy", "--results", results, "--json")
    assert proc.returncode == 0, proc.stderr
    groups = {g["group"]: g for g in json.loads(proc.stdout)["groups"]}
    for row in slippery:
        c = next(
            c
            for c in groups["frozenlake(slippery=True) · seed 0"]["comparisons"]
            if c["agg"] in row.split(" | ")[1] and f"MC {c['rollouts']}×" in row
        )
        if c["undefined"] is None:
            expected = (
                f"{c['kendall_tau_b']:.3f} [{c['ci_low']:.3f}, {c['ci_high']:.3f}] (n={c['n']}, {c['n_states']} states"
            )
            assert expected in row, (expected, row)
        else:
            assert c["undefined"] in row
    assert "QVal never published one" in markdown  # the statistic's label, as the command prints it
    page = (folder / "index.html").read_text()
    assert TITLE in page and "MC 16×mean" in page and '1.000 <span class="ci">[1.000, 1.000]</span>' in page


def test_computed_once_then_reused(noisy):
    tmp, results, folder = noisy
    labels = {p: p.stat().st_mtime_ns for p in (results / "labels").glob("*.json")}
    entries = {p: p.stat().st_mtime_ns for p in (folder / ".cache" / "label_noise").glob("*.json")}
    assert len(labels) == 4 and len(entries) == 1  # 2 sets of points × (1, 16) rollouts; one comparison
    before = (folder / "leaderboard.md").read_text()
    proc = run_qval("report", "--results", results, "--out", tmp / "reports", "--suite", "noisy")
    assert proc.returncode == 0, proc.stderr
    assert {p: p.stat().st_mtime_ns for p in (results / "labels").glob("*.json")} == labels
    assert {p: p.stat().st_mtime_ns for p in (folder / ".cache" / "label_noise").glob("*.json")} == entries
    assert _section((folder / "leaderboard.md").read_text()) == _section(before)


def test_off_by_default_and_strict(tmp_path):
    results, out = tmp_path / "results", tmp_path / "reports"
    plain = write_suite(
        tmp_path / "plain.yaml", SUITE.replace("name: noisy", "name: plain").rsplit("  label_noise", 1)[0]
    )
    assert run_qval("run", plain, "--results", results, "--quiet").returncode == 0
    assert run_qval("report", "--results", results, "--out", out).returncode == 0
    assert TITLE not in (out / "plain" / "leaderboard.md").read_text()
    assert not (results / "labels").exists()

    bad = write_suite(tmp_path / "bad.yaml", SUITE.replace("agg: [max, mean]", "agg: [median]"))
    usage_error(run_qval("run", bad, "--results", results), "qalign.label_noise.agg")
    bad = write_suite(tmp_path / "bad.yaml", SUITE.replace("rollouts: [1, 16]", "rollouts: [0]"))
    usage_error(run_qval("run", bad, "--results", results), "qalign.label_noise.rollouts")
    bad = write_suite(tmp_path / "bad.yaml", SUITE.replace("agg: [max, mean]", "agg: [max], rolouts: [2]"))
    usage_error(run_qval("run", bad, "--results", results), "rolouts")


def test_one_method_shows_why_in_the_report(tmp_path):
    """A suite the comparison cannot apply to keeps its report: the table says why."""
    results, out = tmp_path / "results", tmp_path / "reports"
    one = write_suite(
        tmp_path / "one.yaml", SUITE.replace("name: noisy", "name: one").replace(", random, heuristic", "")
    )
    assert run_qval("run", one, "--results", results, "--quiet").returncode == 0
    proc = run_qval("report", "--results", results, "--out", out)
    assert proc.returncode == 0, proc.stderr
    rows = _section((out / "one" / "leaderboard.md").read_text())
    assert len(rows) == 1 and "fewer than 2 methods" in rows[0]
