"""The leaderboard reads above the fold (issue #16): environment and definitions collapsed, tables narrow enough
for a 1,400 px window, long labels shortened with the full text as a tooltip; figures keep a reference line at the
value of no effect, baselines apart from families, legends with the chart's own marks, and titles that wrap rather
than being cut. The page itself is checked in Chromium in test_browser.py."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest
from matplotlib.lines import Line2D
from matplotlib.patches import Rectangle
from test_report_render import decode_board, make_board, make_report, qalign_rows

from qval.qalign.board import family_aggregates
from qval.report import render as lr
from qval.report.figures import common, make_figures


@pytest.fixture
def drawn(monkeypatch):
    """Every matplotlib Figure the figure kinds encode, kept for inspection (PNG bytes say little)."""
    figures = []
    encode = common.png

    def keep(fig):
        figures.append(fig)
        return encode(fig)

    monkeypatch.setattr(common, "png", keep)
    return figures


def _with_baselines(rows: pd.DataFrame) -> pd.DataFrame:
    """qalign_rows plus the three baselines in each environment, the oracle far above every method."""
    extra = []
    for (dataset, temperature), _ in rows.groupby(["dataset", "temperature"]):
        for method, value in (("oracle-q", 1.0), ("random", 0.0), ("heuristic", 0.6)):
            extra.append(
                {
                    **rows.iloc[0].to_dict(),
                    "cell_id": f"{temperature}-{dataset}-{method}",
                    "model": "",
                    "method": method,
                    "family": "baseline",
                    "dataset": dataset,
                    "temperature": temperature,
                    "score": value,
                    "score__lo": value - 0.05,
                    "score__hi": value + 0.05,
                }
            )
    return pd.concat([rows, pd.DataFrame(extra)], ignore_index=True)


def test_family_table_never_averages_baselines():
    rows = _with_baselines(qalign_rows())
    states = [f"s{i}" for i in range(8)]
    by_state = {c: pd.Series(np.full(8, v), index=states) for c, v in zip(rows["cell_id"], rows["score"])}
    families = family_aggregates(rows, by_state, "score")
    frozen = families[families["dataset"] == "frozenlake(map=4x4)"]
    baselines = frozen[frozen["family"].str.startswith("baseline")].set_index("best_method")
    # One row per baseline with its own value, named: the oracle (1.0) is never averaged with random (0.0).
    assert sorted(baselines.index) == ["heuristic", "oracle-q", "random"]
    assert sorted(baselines["family"]) == ["baseline: heuristic", "baseline: oracle-q", "baseline: random"]
    assert (baselines["methods"] == 1).all()
    assert baselines.loc["oracle-q", "value"] == pytest.approx(1.0)
    assert baselines.loc["random", "value"] == pytest.approx(0.0)
    # A real family still averages its methods: direct = m1 (0.1) and m2 (0.2).
    direct = frozen[frozen["family"] == "direct"].iloc[0]
    assert direct["methods"] == 2 and direct["value"] == pytest.approx(0.15)


def test_best_per_family_chart_draws_baselines_as_lines_and_bars_in_its_legend(drawn):
    board = make_board(_with_baselines(qalign_rows()))
    [(caption, _)] = make_figures(make_report(board), kinds=["family"])
    assert "baselines are drawn as lines" in caption
    [fig] = drawn
    ax = fig.axes[0]
    bars = [p for p in ax.patches if isinstance(p, Rectangle)]
    # Two environments x two families (direct, code): no bar for the baseline family, so no oracle bar on top.
    assert len(bars) == 4
    assert max(bar.get_height() for bar in bars) < 0.5
    reference_lines = [line for line in ax.lines if len(set(line.get_ydata())) == 1]
    assert {float(line.get_ydata()[0]) for line in reference_lines} == {1.0, 0.0, 0.6}
    legend_marks = [a for a in fig.artists if isinstance(a, (Rectangle, Line2D))]
    assert sum(isinstance(a, Rectangle) for a in legend_marks) == 2  # the families, drawn as bars
    assert sum(isinstance(a, Line2D) for a in legend_marks) == 3  # the baselines, drawn as lines
    labels = [t.get_text() for t in fig.texts]
    assert labels[:2] == ["direct", "code"] and "oracle-q (baseline)" in labels


def test_family_chart_skipped_when_only_baselines():
    rows = _with_baselines(qalign_rows())
    board = make_board(rows[rows["family"] == "baseline"].reset_index(drop=True))
    assert make_figures(make_report(board), kinds=["family"]) == []


def test_speedup_ranking_has_a_reference_line_at_one(drawn):
    board = decode_board()
    board.references = {"speedup": 1.0}
    figures = make_figures(make_report(board), kinds=["ranking"])
    assert figures and all("dashed red line marks 1, no effect" in caption for caption, _ in figures)
    for fig in drawn:
        vertical = [list(line.get_xdata()) for line in fig.axes[0].lines]
        assert [1.0, 1.0] in vertical


def test_reference_values_come_from_the_metric_declarations():
    from qval.registry import REGISTRY

    assert REGISTRY.get("metrics", "speedup").reference == 1.0
    assert REGISTRY.get("metrics", "pairwise_accuracy").reference == 0.5
    assert REGISTRY.get("metrics", "per_state_spearman").reference == 0.0
    assert REGISTRY.get("metrics", "top1").reference is None  # chance depends on each state's candidates


def test_long_titles_wrap_inside_the_figure(drawn):
    dataset = "spec-bench(categories=summarization+rag+translation+qa+math_reasoning+writing)"
    board = decode_board()
    board.rows["dataset"] = dataset
    make_figures(make_report(board), kinds=["ranking"])
    assert drawn
    for fig in drawn:
        fig.canvas.draw()
        renderer = fig.canvas.get_renderer()
        title = fig.axes[0].title
        assert " ".join(title.get_text().split()).replace("- ", "-").startswith("spec-bench(")
        assert "\u2026" not in title.get_text()  # wrapped, not cut
        box, page = title.get_window_extent(renderer), fig.bbox
        assert page.x0 <= box.x0 and box.x1 <= page.x1 and box.y1 <= page.y1
        xlabel = fig.axes[0].xaxis.label.get_window_extent(renderer)
        assert page.x0 <= xlabel.x0 and xlabel.x1 <= page.x1 and xlabel.y0 >= page.y0


def test_page_puts_environment_and_definitions_in_collapsed_blocks():
    board = decode_board()
    board.rows["dataset"] = "spec-bench(categories=summarization+rag+translation+qa+math_reasoning+writing)"
    environment = {"generated": "now", "hardware": "cpu", **{f"package{i}": "1.0" for i in range(13)}}
    _, page = lr.render_report(make_report(board, environment=environment))
    env = re.search(r"<details class=\"env\">(.*?)</details>", page, re.S)
    assert env and "package12" in env.group(1)  # every version kept, one click away
    assert '<details class="env" open' not in page
    assert '<details class="legend"><summary>Definitions' in page
    # The long dataset label: shortened in headings and filter choices, the full label as the tooltip.
    heading = re.search(r"<h3 title=\"([^\"]+)\">([^<]+)</h3>", page)
    assert heading and heading.group(1).startswith("spec-bench(categories=") and heading.group(1).endswith(" · T=0")
    assert heading.group(2).endswith("\u2026) \u00b7 T=0") and len(heading.group(2)) <= 48
    assert re.search(r"<option value=\"spec-bench\(categories=[^\"]+\" title=\"spec-bench", page)
    # Value and CI on one line, n on the next: the columns stay narrow.
    assert re.search(r"1\.000 <span class=\"ci\">\[0\.900, 1\.100\]</span><span class=\"n\">n=3, low n</span>", page)


def test_markdown_keeps_full_labels_and_one_line_cells():
    board = decode_board()
    long = "spec-bench(categories=summarization+rag+translation+qa+math_reasoning+writing)"
    board.rows["dataset"] = long
    markdown, _ = lr.render_report(make_report(board))
    assert f"### {long} · T=0" in markdown
    assert "1.000 [0.900, 1.100] (n=3, low n)" in markdown


def test_shortened_headings_keep_what_tells_groups_apart():
    """Only the parameter list is cut: a limited cell's 'limit=N' and the group's temperature always show."""
    board = decode_board(rows=None)
    rows = board.rows
    long = "spec-bench(categories=summarization+rag+translation+qa+math_reasoning+writing)"
    rows["dataset"] = [f"{long} limit=5" if i % 2 else long for i in range(len(rows))]
    _, page = lr.render_report(make_report(board))
    headings = re.findall(r"<h3 title=\"[^\"]+\">([^<]+)</h3>", page)
    assert len(headings) == len(set(headings)) == 4  # (limited or not) x (T=0, T=0.7): all distinct
    assert sum("limit=5 \u00b7 T=" in h for h in headings) == 2
    assert all(len(h) <= 48 and "\u2026)" in h for h in headings)
