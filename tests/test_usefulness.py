"""Does alignment predict usefulness: the rank correlation between per-state ρ and guided success / −regret across a
board's rows (qval/qalign/usefulness.py), the usefulness figure, and its table in the report, through the real CLI."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest
from conftest import run_qval, write_suite
from scipy.stats import spearmanr
from test_guided import GUIDED, SUITE

from qval.qalign.usefulness import LABEL, alignment_usefulness, rank_correlation
from qval.report.analysis import BoardAnalysis
from qval.report.figures.registry import KINDS
from qval.report.model import TrackBoard


def _rows(n: int, seed: int = 3) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rho = rng.uniform(-1, 1, n)
    success = np.clip(0.5 + 0.4 * rho + rng.normal(0, 0.2, n), 0, 1)
    success[1] = success[0]  # a tie: spearmanr's average ranks must agree
    regret = 1 - success + rng.normal(0, 0.1, n)
    return pd.DataFrame(
        {
            "per_state_spearman": rho,
            "guided_success": success,
            "guided_regret": regret,
            "method": [f"m{i}" for i in range(n)],
        }
    )


def test_the_statistic_is_spearmans_rho_with_a_bootstrap_ci_over_rows():
    rows = _rows(12)
    rows.loc[5, "guided_regret"] = np.nan  # a row without regret counts for success only
    success, regret = alignment_usefulness(rows)
    assert success.metric == "guided_success" and regret.metric == "guided_regret"
    expected = spearmanr(rows["per_state_spearman"], rows["guided_success"]).statistic
    assert success.value == pytest.approx(expected, abs=1e-12) and success.n == 12
    assert success.ci_low <= success.value <= success.ci_high and success.reason == ""
    keep = rows["guided_regret"].notna()
    expected = spearmanr(rows.loc[keep, "per_state_spearman"], -rows.loc[keep, "guided_regret"]).statistic
    assert regret.value == pytest.approx(expected, abs=1e-12) and regret.n == 11  # regret negated
    assert regret.ci_low <= regret.value <= regret.ci_high
    assert regret.label == "\u2212guided regret"
    assert alignment_usefulness(rows) == [success, regret]  # seeded: the figure and the table read the same numbers
    assert "qval's own" in LABEL and "n = rows" in LABEL


def test_undefined_with_fewer_than_three_rows_or_constant_values():
    too_few = rank_correlation(np.array([0.1, 0.5, np.nan]), np.array([0.0, 1.0, 1.0]))
    assert too_few.value is None and too_few.n == 2 and "fewer than 3 rows" in too_few.reason
    flat = rank_correlation(np.array([0.1, 0.5, 0.9]), np.array([1.0, 1.0, 1.0]), label="guided success")
    assert flat.value is None and flat.n == 3 and flat.reason == "guided success constant across rows"
    flat_x = rank_correlation(np.array([0.2, 0.2, 0.2, 0.2]), np.array([0.0, 1.0, 0.5, 0.2]))
    assert flat_x.value is None and "per-state \u03c1 constant" in flat_x.reason
    # No guided metric on the board: no correlation, no figure, no error.
    plain = _rows(5).drop(columns=["guided_success", "guided_regret"])
    assert alignment_usefulness(plain) == []
    board = TrackBoard(
        track="qalign",
        title="Q",
        main_metric="per_state_spearman",
        metrics=["per_state_spearman"],
        higher_is_better={"per_state_spearman": True},
        labels={},
        rows=plain.assign(cell_id=[f"c{i}" for i in range(5)], model="", family="x", dataset="d", temperature=0.0),
    )
    assert KINDS["usefulness"].draw(board, BoardAnalysis(board)) == []


def test_cli_usefulness_figure_and_correlation_in_the_report(tmp_path):
    results, out = tmp_path / "results", tmp_path / "reports"
    metrics = "per_state_spearman, top1" + GUIDED
    text = SUITE.format(extra=GUIDED, guided="  guided: {episodes: 5}\n")
    assert metrics in text and "cliffwalking" in text and "heuristic" in text
    proc = run_qval("run", write_suite(tmp_path / "s.yaml", text), "--results", results)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    proc = run_qval("report", "--results", results, "--out", out)
    assert proc.returncode == 0, proc.stdout + proc.stderr

    md = (out / "guided" / "leaderboard.md").read_text()
    assert "### Does alignment predict usefulness?" in md and "qval's own statistic" in md
    lines = [line for line in md.splitlines() if line.startswith("| per_state_spearman |")]
    assert len(lines) == 2, md
    success, regret = lines
    assert "| guided success |" in success and "| \u2212guided regret |" in regret
    for line in lines:  # 3 methods x 2 environments = 6 rows; a value with its CI, or '–' with the reason
        assert "n=6" in line, line
        assert re.search(r"\| -?\d\.\d{3} \[-?\d\.\d{3}, -?\d\.\d{3}\] \(n=6", line) or "| \u2013 |" in line, line

    html = (out / "guided" / "index.html").read_text()
    assert "does alignment predict usefulness? Per-state \u03c1 (x) against guided_success and guided_regret" in html
    assert html.count("data:image/png;base64,") >= 4  # ranking, family, heatmap and usefulness
    assert "Does alignment predict usefulness?" in html and "qval&#x27;s own statistic" in html


def test_report_shows_an_undefined_correlation_as_a_dash_with_its_reason():
    from qval.report.render import SuiteReport, render_report

    rows = _rows(2).assign(
        cell_id=["c0", "c1"], model="", family="baseline", dataset="frozenlake", temperature=0.0, seed=0
    )
    metrics = ["per_state_spearman", "guided_success"]
    board = TrackBoard(
        track="qalign",
        title="Q-alignment",
        main_metric="per_state_spearman",
        metrics=metrics,
        higher_is_better=dict.fromkeys(metrics, True),
        labels={},
        rows=rows,
    )
    markdown, page = render_report(SuiteReport("s", "", {}, [board]))
    line = next(row for row in markdown.splitlines() if row.startswith("| per_state_spearman |"))
    assert line == "| per_state_spearman | guided success | \u2013 | fewer than 3 rows with both values |"
    assert "Does alignment predict usefulness?" in page and "fewer than 3 rows with both values" in page
    # With two points there is still a figure: the correlation is what is undefined, and the caption says why.
    [(caption, png)] = KINDS["usefulness"].draw(board, BoardAnalysis(board))
    assert png.startswith(b"\x89PNG") and "\u2013 (fewer than 3 rows with both values; n = 2)" in caption
