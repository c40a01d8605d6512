"""A third-party package with one entry-point line and one class adds a scorer: pip-installed for real."""

import subprocess
import sys

import pytest
from conftest import install_plugin, pip, run_qval, write_suite

import qval.results as R


@pytest.fixture(scope="module")
def example_plugin():
    install_plugin("qval-example-plugin")
    yield
    pip("uninstall", "-y", "qval-example-plugin")


def test_plugin_is_listed_with_its_distribution(example_plugin):
    proc = run_qval("plugins")
    assert proc.returncode == 0
    line = next(row for row in proc.stdout.splitlines() if "example-goal-distance" in row)
    assert "qval-example-plugin" in line and "0.3.0" in line


def test_broken_plugin_warns_in_list_and_fails_hard_when_used(example_plugin, tmp_path):
    proc = run_qval("list", "scorers")
    assert proc.returncode == 0 and "example-broken" in proc.stdout and "warning" in proc.stderr
    suite = write_suite(
        tmp_path / "s.yaml",
        """\
        name: broken
        models: [smollm2-135m-instruct]
        qalign:
          envs: [frozenlake]
          methods: [example-broken]
        """,
    )
    proc = run_qval("run", suite, "--results", tmp_path / "r")
    assert proc.returncode == 2 and "qalign.methods[0].name" in proc.stderr and "failed to load" in proc.stderr
    assert "Traceback" not in proc.stderr and not (tmp_path / "r").exists()


def test_third_party_scorers_run_and_failures_are_recorded(example_plugin, tmp_path):
    suite = write_suite(
        tmp_path / "s.yaml",
        """\
        name: thirdparty
        models: [smollm2-135m-instruct]
        qalign:
          envs: [frozenlake]
          methods: [oracle-q, example-goal-distance, example-flaky]
          points: {episodes: 6, max_points_per_episode: 4}
          timeout_per_point_s: 1
        """,
    )
    proc = run_qval("run", suite, "--results", tmp_path / "r")
    # A plugin that raised or hung on some points: the run goes on, then exits 4 naming the cell and the reasons.
    assert proc.returncode == 4, proc.stderr
    assert "example-flaky" in proc.stderr and "exploded" in proc.stderr and "Traceback" not in proc.stderr
    board = R.leaderboard(tmp_path / "r", "thirdparty", "qalign").set_index("method")
    assert board.loc["example-goal-distance", "per_state_spearman"] > 0.3  # a sensible heuristic is Q-aligned
    flaky = board.loc["example-flaky"]
    assert 0 < flaky["n_failed"] < flaky["n_samples"]  # the run went on after failures
    errors = set(R.samples(tmp_path / "r", "qalign", "thirdparty")["error"].dropna())
    assert any("exploded" in e for e in errors)
    assert any("non-finite" in e for e in errors)
    assert any("1 scores for 4 candidates" in e for e in errors)
    assert any("exceeded its time limit of 1 s" in e for e in errors)  # the hang failed its point, not the run
    proc = run_qval("report", "--results", tmp_path / "r", "--out", tmp_path / "rep")
    assert proc.returncode == 0
    board_md = (tmp_path / "rep" / "thirdparty" / "leaderboard.md").read_text()
    flaky_row = next(line for line in board_md.splitlines() if "example-flaky" in line)
    assert f"| {int(flaky['n_failed'])} |" in flaky_row  # the report flags the failed samples...
    reasons = board_md[board_md.index("### Failures") :]
    assert "flaky scorer exploded" in reasons and "exceeded its time limit" in reasons  # ...and says why


def test_contract_checks_accept_good_and_reject_bad_scorers(example_plugin):
    code = (
        "from qval.testing import check_scorer\n"
        "from qval_example_plugin import GoalDistanceScorer, FlakyScorer\n"
        "check_scorer(GoalDistanceScorer)\n"
        "try:\n    check_scorer(FlakyScorer)\nexcept AssertionError as e:\n    print('rejected:', e)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "rejected:" in proc.stdout


def test_name_clash_is_an_error_naming_both_distributions():
    install_plugin("qval-clash-plugin")
    try:
        proc = run_qval("list")
        assert proc.returncode == 2
        assert "'random' is declared twice" in proc.stderr
        assert "qval 0.1.0" in proc.stderr and "qval-clash-plugin 0.1.0" in proc.stderr
    finally:
        pip("uninstall", "-y", "qval-clash-plugin")
