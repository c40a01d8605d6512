import re
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from qval.report import render as lr

XSS = "<script>alert(1)</script>"
XSS_ESCAPED = "&lt;script&gt;alert(1)&lt;/script&gt;"


def make_rows(scores, metric="score", **overrides):
    """One row per score, all in one (dataset, temperature) group unless overridden."""
    n = len(scores)
    rows = {
        "cell_id": [f"c{i}" for i in range(n)],
        "model": [f"model{i}" for i in range(n)],
        "method": ["probe"] * n,
        "family": ["fam"] * n,
        "dataset": ["gsm8k"] * n,
        "temperature": [0.7] * n,
        "seed": [0] * n,
        "n_samples": [30] * n,
        "n_failed": [0] * n,
        metric: scores,
        f"{metric}__lo": [None if s is None else s - 0.1 for s in scores],
        f"{metric}__hi": [None if s is None else s + 0.1 for s in scores],
        f"{metric}__n": [30] * n,
    }
    rows.update(overrides)
    return pd.DataFrame(rows)


def make_board(rows, metric="score", higher=True, title="Q-alignment"):
    return lr.TrackBoard(
        track="qalign",
        title=title,
        main_metric=metric,
        metrics=[metric],
        higher_is_better={metric: higher},
        labels={metric: "a score"},
        rows=rows,
    )


def make_report(*boards, suite="smoke", description="A suite.", environment=None):
    env = {"python": "3.11.7", "git_sha": "abc123"} if environment is None else environment
    return lr.SuiteReport(suite=suite, description=description, environment=env, tracks=list(boards))


def split_md_row(line):
    """Cells of a Markdown table row, honouring escaped pipes."""
    return [c.strip() for c in re.split(r"(?<!\\)\|", line.strip())[1:-1]]


def md_tables(markdown):
    """Data rows (as cell lists) of every table, header and alignment rows included."""
    return [split_md_row(line) for line in markdown.splitlines() if line.startswith("|")]


def data_rows(markdown):
    rows = md_tables(markdown)
    return [r for r in rows if r[0] not in ("rank", "---:")]


def test_higher_is_better_ranks_descending():
    md = lr.render_markdown(make_report(make_board(make_rows([0.2, 0.9, 0.5]))))
    rows = data_rows(md)
    assert [(r[0], r[1]) for r in rows] == [("1", "model1"), ("2", "model2"), ("3", "model0")]


def test_lower_is_better_ranks_ascending():
    md = lr.render_markdown(make_report(make_board(make_rows([0.2, 0.9, 0.5]), higher=False)))
    assert [r[1] for r in data_rows(md)] == ["model0", "model2", "model1"]


@pytest.mark.parametrize("undefined", [None, np.nan, float("inf")])
@pytest.mark.parametrize("higher", [True, False])
def test_undefined_sorts_last_with_dash(undefined, higher):
    rows = make_rows([0.5, 0.1, 0.9])
    rows["score"] = rows["score"].astype(object)
    rows.loc[1, "score"] = undefined
    md = lr.render_markdown(make_report(make_board(rows, higher=higher)))
    last = data_rows(md)[-1]
    assert last[1] == "model1"
    assert last[0] == "\u2013"  # rank
    assert last[4] == "\u2013"  # value, without any CI
    assert "nan" not in md.lower() and "inf" not in md.lower()


def test_cell_format_and_missing_ci_parts():
    rows = make_rows([0.734, 0.5, 0.4])
    rows.loc[0, ["score__lo", "score__hi"]] = [0.612, 0.801]
    rows.loc[1, "score__lo"] = np.nan  # half a CI is no CI
    rows["score__n"] = rows["score__n"].astype(object)
    rows.loc[2, "score__n"] = None
    md = lr.render_markdown(make_report(make_board(rows)))
    cells = [r[4] for r in data_rows(md)]
    assert cells == ["0.734 [0.612, 0.801] (n=30)", "0.500 (n=30)", "0.400 [0.300, 0.500]"]


def test_one_table_per_dataset_and_temperature():
    rows = make_rows(
        [0.1, 0.2, 0.3, 0.4],
        dataset=["a", "a", "b", "a"],
        temperature=[0.0, 0.7, 0.0, np.nan],
    )
    md = lr.render_markdown(make_report(make_board(rows)))
    headings = [line for line in md.splitlines() if line.startswith("### ")]
    assert headings == ["### a · T=0", "### a · T=0.7", "### a · T=\u2013", "### b · T=0"]
    assert len(data_rows(md)) == 4  # a missing temperature does not drop a row
    assert all(r[0] == "1" for r in data_rows(md))


def test_all_metrics_undefined_and_nan_cis():
    rows = make_rows([None, None], **{"score__lo": [np.nan] * 2, "score__hi": [None] * 2})
    report = make_report(make_board(rows))
    md = lr.render_markdown(report)
    assert all(r[0] == "\u2013" and r[4] == "\u2013" for r in data_rows(md))
    assert lr.make_figures(report) == []
    html = lr.render_html(report, [])
    assert "nan" not in html.lower() and "\u2013" in html


def test_n_failed_shown():
    rows = make_rows([0.5], n_failed=[4])
    md = lr.render_markdown(make_report(make_board(rows)))
    assert md_tables(md)[0][-1] == "n_failed"
    assert data_rows(md)[0][-1] == "4"


def hostile_report():
    rows = make_rows(
        [0.3, 0.6],
        model=[XSS, "a|b\nc"],
        method=["$x$", "$\\frac{$"],  # the second is invalid TeX if parsed as math
        family=[XSS, "f"],
        dataset=[XSS, XSS],
    )
    board = make_board(rows, title=XSS)
    board.labels = {"score": XSS}
    return make_report(board, suite=XSS, description=f"line1\n{XSS}", environment={XSS: XSS})


def test_html_escapes_untrusted_text():
    report = hostile_report()
    html = lr.render_html(report, lr.make_figures(report))  # captions carry names too
    assert XSS not in html
    assert "<script" not in html
    assert XSS_ESCAPED in html
    assert '<meta charset="utf-8">' in html


def test_markdown_pipe_and_newline_do_not_break_table():
    md = lr.render_markdown(hostile_report())
    table = md_tables(md)
    assert len({len(r) for r in table}) == 1  # every row has the header's column count
    assert "| 1 | a\\|b c |" in md
    assert XSS not in md


def test_figures_are_png_and_survive_mathtext():
    figures = lr.make_figures(hostile_report())
    assert len(figures) == 1
    caption, png = figures[0]
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    assert "all 2 rows" in caption


def test_figure_caption_mentions_top_limit():
    rows = make_rows(list(np.linspace(0, 1, lr.MAX_BARS + 5)))
    [(caption, png)] = lr.make_figures(make_report(make_board(rows)))
    assert f"top {lr.MAX_BARS} of {lr.MAX_BARS + 5} rows" in caption
    assert png.startswith(b"\x89PNG")


def test_html_figures_embedded_inline():
    report = make_report(make_board(make_rows([0.1, 0.2])))
    html = lr.render_html(report, lr.make_figures(report))
    assert html.count('<img src="data:image/png;base64,iVBORw0KGgo') == 1
    assert "<figcaption>" in html
    assert "http://" not in html and "https://" not in html  # nothing fetched from outside


@pytest.mark.parametrize("rows", [pd.DataFrame(), make_rows([]), None])
def test_empty_rows_render(rows):
    report = make_report(make_board(rows))
    md = lr.render_markdown(report)
    assert "No results." in md
    assert "No results." in lr.render_html(report, lr.make_figures(report))
    assert lr.make_figures(report) == []


def test_report_without_tracks():
    report = make_report(environment={}, description="")
    assert lr.render_markdown(report).startswith("# qval leaderboard: smoke")
    assert "<h1>qval leaderboard: smoke</h1>" in lr.render_html(report, [])


def test_2000_rows_render_every_group():
    rng = np.random.default_rng(0)
    n = 2000
    scores = rng.random(n)
    scores[rng.random(n) < 0.05] = np.nan
    rows = make_rows(
        list(scores),
        model=[f"model-{i % 5}" for i in range(n)],
        method=[f"method-{i // 5 % 10}" for i in range(n)],
        dataset=[f"ds{i % 3}" for i in range(n)],
        temperature=[(0.0, 0.7)[i // 3 % 2] for i in range(n)],
        seed=[i // 50 for i in range(n)],
    )
    report = make_report(make_board(rows))
    html = lr.render_html(report, lr.make_figures(report))
    md = lr.render_markdown(report)
    # One figure per (dataset, temperature) group; speed is measured in benchmarks/bench_report.py, not here.
    assert html.count("<figure>") == 6
    assert md.count("### ") == 6
