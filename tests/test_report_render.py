import base64
import hashlib
import re
import subprocess

import numpy as np
import pandas as pd
import pytest

from qval.report import html as lr_html
from qval.report import render as lr

XSS = "<script>alert(1)</script>"
XSS_ESCAPED = "&lt;script&gt;alert(1)&lt;/script&gt;"
SCRIPT_RE = re.compile(r"<script>(.*?)</script>", re.S)
CSP_RE = re.compile(r'<meta http-equiv="Content-Security-Policy" content="([^"]*)">')


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
    # The fixed script and its hash are not data (a base64 hash may spell "nan").
    data = CSP_RE.sub("", SCRIPT_RE.sub("", html))
    assert "nan" not in data.lower() and "\u2013" in data


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
    assert html.count("<script") == 1  # the page's own, hash-pinned script
    assert XSS_ESCAPED in html
    assert '<meta charset="utf-8">' in html


def test_markdown_pipe_and_newline_do_not_break_table():
    md = lr.render_markdown(hostile_report())
    table = md_tables(md)
    assert len({len(r) for r in table}) == 1  # every row has the header's column count
    assert "| 1 | a\\|b c |" in md
    assert XSS not in md


def test_figures_are_png_and_survive_mathtext():
    figures = lr.make_figures(hostile_report(), kinds=["ranking"])
    assert len(figures) == 1
    caption, png = figures[0]
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    assert "all 2 rows" in caption
    # Every other kind drawn from the same hostile names survives too.
    for _caption, png in lr.make_figures(hostile_report()):
        assert png.startswith(b"\x89PNG\r\n\x1a\n")


def test_figure_caption_mentions_top_limit():
    rows = make_rows(list(np.linspace(0, 1, lr.MAX_BARS + 5)))
    [(caption, png)] = lr.make_figures(make_report(make_board(rows)), kinds=["ranking"])
    assert f"top {lr.MAX_BARS} of {lr.MAX_BARS + 5} rows" in caption
    assert png.startswith(b"\x89PNG")


def test_html_figures_embedded_inline():
    report = make_report(make_board(make_rows([0.1, 0.2])))
    html = lr.render_html(report, lr.make_figures(report, kinds=["ranking"]))
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
    figures = lr.make_figures(report)
    html = lr.render_html(report, figures)
    md = lr.render_markdown(report)
    # One ranking figure per (dataset, temperature) group, plus the qalign family and
    # heatmap figures per temperature; speed is measured in benchmarks/bench_report.py, not here.
    assert len(lr.make_figures(report, kinds=["ranking"])) == 6
    assert len(lr.make_figures(report, kinds=["family", "heatmap"])) == 4
    assert html.count("<figure>") == len(figures) == 10
    assert md.count("### ") == 6


# ---------------------------------------------------------------- interactive HTML


def page_script(html):
    scripts = SCRIPT_RE.findall(html)
    assert len(scripts) == 1
    return scripts[0]


def test_cells_carry_numeric_sort_keys():
    rows = make_rows([0.734, None, 0.5], n_failed=[0, 3, 1])
    rows.loc[0, "score"] = 0.7341234567
    html = lr.render_html(make_report(make_board(rows)), [])
    keys = re.findall(r'<td class="num[^"]*" data-sort="([^"]*)"', html)
    # rank, score and n_failed per row: 3 rows x 3 numeric cells
    assert len(keys) == 9
    for key in keys:
        assert key == "" or np.isfinite(float(key))
    # The exact value, not the 3-decimal text, and "" (sorted last) for undefined.
    assert 'data-sort="0.7341234567">0.734' in html
    assert '<td class="num undef" data-sort="">\u2013</td>' in html
    assert re.search(r'<td class="num" data-sort="">\u2013</td>', html)  # undefined rank
    assert 'data-first="desc"' in html  # higher is better: first click puts the best on top


def test_lower_is_better_header_sorts_ascending_first():
    html = lr.render_html(make_report(make_board(make_rows([0.2, 0.4]), higher=False)), [])
    assert re.search(r'<th class="num main" data-first="asc"', html)


def test_script_uses_no_markup_apis():
    report = make_report(make_board(make_rows([0.1, 0.2])))
    script = page_script(lr.render_html(report, []))
    for banned in (
        "innerHTML",
        "outerHTML",
        "insertAdjacentHTML",
        "document.write",
        "eval",
        "Function(",
        "setTimeout",
        "setInterval",
        "createContextualFragment",
        "DOMParser",
        "srcdoc",
    ):
        assert banned not in script
    assert "appendChild" in script and "textContent" in script and ".hidden" in script
    assert script == lr._SCRIPT  # fixed text: nothing from the data gets into it


def test_no_inline_event_handlers():
    report = hostile_report()
    html = lr.render_html(report, lr.make_figures(report))
    assert not re.search(r"<[^>]*\son[a-z]+\s*=", html)


def test_csp_pins_the_script_by_hash():
    report = make_report(make_board(make_rows([0.1, 0.2])))
    html = lr.render_html(report, [])
    script = page_script(html)
    csp = CSP_RE.search(html).group(1)
    digest = base64.b64encode(hashlib.sha256(script.encode("utf-8")).digest()).decode("ascii")
    directives = {d.split()[0]: d.split()[1:] for d in csp.split(";")}
    assert directives["default-src"] == ["'none'"]
    assert directives["script-src"] == [f"'sha256-{digest}'"]
    assert directives["img-src"] == ["data:"]
    assert directives["style-src"] == [f"'sha256-{sha256(lr_html.CSS)}'", f"'sha256-{sha256(lr_html.CELL_CSS)}'"]
    assert "unsafe" not in csp  # neither 'unsafe-inline' nor 'unsafe-eval' nor 'unsafe-hashes'


def sha256(text):
    return base64.b64encode(hashlib.sha256(text.encode("utf-8")).digest()).decode("ascii")


def test_csp_pins_the_stylesheet_by_hash_and_no_element_has_a_style_attribute():
    """The page's one <style> is the fixed stylesheet, allowed by its hash; with no 'unsafe-inline', a style=""
    attribute would be refused by the browser (test_browser.py fails on any CSP violation), so there is none, in
    the hostile report's markup or in its figures (PNG data: URIs, not inline SVG)."""
    report = hostile_report()
    html = lr.render_html(report, lr.make_figures(report))
    styles = re.findall(r"<style>(.*?)</style>", html, re.S)
    assert styles == [lr_html.CSS]
    directives = {d.split()[0]: d.split()[1:] for d in CSP_RE.search(html).group(1).split(";")}
    assert f"'sha256-{sha256(styles[0])}'" in directives["style-src"]
    assert not re.search(r"<[^>]*\sstyle\s*=", html, re.I)
    assert "<svg" not in html.replace('<svg class="wh"', "")  # inline SVG: only the whiskers, styled by class


def test_script_is_valid_javascript(tmp_path):
    path = tmp_path / "page.js"
    path.write_text(lr._SCRIPT, encoding="utf-8")
    subprocess.run(["node", "--check", str(path)], check=True, capture_output=True)


def test_filter_controls_and_group_attributes():
    rows = make_rows([0.1, 0.2, 0.3], dataset=["a", "b", XSS], temperature=[0.0, 0.7, np.nan], family=["x", "y", XSS])
    html = lr.render_html(make_report(make_board(rows)), [])
    assert html.count('<div class="controls" hidden>') == 1  # shown by the script only
    assert 'class="f-text"' in html and 'class="f-family"' in html
    assert f'<option value="{XSS_ESCAPED}">{XSS_ESCAPED}</option>' in html
    assert '<option value="0">0</option><option value="0.7">0.7</option><option value="\u2013">' in html
    assert re.findall(r'<div class="grp" data-dataset="([^"]*)" data-temperature="([^"]*)">', html) == [
        (XSS_ESCAPED, "\u2013"),
        ("a", "0"),
        ("b", "0.7"),
    ]
    assert f'data-family="{XSS_ESCAPED}"' in html
    assert html.count('<td class="name">') == 9  # model, method, family: the filter's text


def test_ci_whiskers_share_one_axis_per_table():
    rows = make_rows([0.2, 0.5, None, 0.9])  # CIs are value +- 0.1: axis 0.1 .. 1.0
    rows.loc[1, "score__lo"] = np.nan  # no CI: a dot only
    html = lr.render_html(make_report(make_board(rows)), [])
    svgs = re.findall(r'<svg class="wh".*?</svg>', html)
    assert len(svgs) == 3  # none for the undefined value
    assert all('width="120" height="14"' in s for s in svgs)
    dots = [float(x) for x in re.findall(r'<circle cx="([0-9.]+)"', html)]
    # Ranked 0.9, 0.5, 0.2; x = 4 + (v - 0.1) / 0.9 * 112
    assert dots == pytest.approx([4 + 0.8 / 0.9 * 112, 4 + 0.4 / 0.9 * 112, 4 + 0.1 / 0.9 * 112], abs=0.06)
    assert ["<path" in s for s in svgs] == [True, False, True]
    assert "CI whiskers on a shared axis from 0.100 to 1.000" in html


def test_whisker_svg_titles_hold_numbers_only():
    report = hostile_report()
    html = lr.render_html(report, [])
    titles = re.findall(r"<title>(.*?)</title>", html)[1:]  # [0] is the page title
    assert titles and all(re.fullmatch(r"[-0-9.,\[\] %CI]+", t) for t in titles)


# ---------------------------------------------------------------- decode data


def decode_rows(
    n_temps=2,
    accept=True,
    pairs=(("m", "ar", "baseline"), ("m", "pl", "n-gram"), ("m", "draft", "draft-model"), ("m", "ada", "adaptive")),
):
    records = []
    for t in range(n_temps):
        for k, (model, method, family) in enumerate(pairs):
            records.append(
                {
                    "cell_id": f"{method}-{t}",
                    "model": model,
                    "method": method,
                    "family": family,
                    "dataset": "spec",
                    "temperature": t * 0.7,
                    "seed": 0,
                    "n_samples": 3,
                    "n_failed": 0,
                    "speedup": 1.0 + k * 0.3,
                    "speedup__lo": 0.9 + k * 0.3,
                    "speedup__hi": 1.1 + k * 0.3,
                    "speedup__n": 3,
                    "acceptance_length": 1.0 + k,
                    "acceptance_length__lo": 0.8 + k,
                    "acceptance_length__hi": 1.2 + k,
                    "acceptance_length__n": 3,
                }
            )
    rows = pd.DataFrame(records)
    if accept:
        for i in range(1, 5):
            rates = [np.nan if r["family"] == "baseline" else 0.9**i for r in records]
            rows[f"accept_rate@{i}"] = rates
            rows[f"accept_rate@{i}__lo"] = [r - 0.05 for r in rates]
            rows[f"accept_rate@{i}__hi"] = [r + 0.05 for r in rates]
            rows[f"accept_rate@{i}__n"] = 3
    return rows


# tau per (method, sample) at T=0: s4 is missing from all cells but "pl", so it does not count.
TAUS = {
    "ar": {"s1": 1.0, "s2": 1.0, "s3": 1.0},
    "pl": {"s1": 2.0, "s2": 4.0, "s3": 3.0, "s4": 10.0},
    "draft": {"s1": 4.0, "s2": 1.0, "s3": 2.5},
    "ada": {"s1": 3.0, "s2": 3.0, "s3": 3.5},
}


def decode_samples(temperatures=(0,)):
    records = [
        {"cell_id": f"{method}-{t}", "sample_id": sample, "tau": tau, "decode_s": 0.1, "new_tokens": 10}
        for t in temperatures
        for method, taus in TAUS.items()
        for sample, tau in taus.items()
    ]
    records.append({"cell_id": "draft-0", "sample_id": "s9", "tau": np.nan, "decode_s": 0.1, "new_tokens": 0})
    return pd.DataFrame(records)


def decode_board(rows=None, samples=None, title="Decoding"):
    metrics = ["speedup", "acceptance_length"]
    return lr.TrackBoard(
        track="decode",
        title=title,
        main_metric="speedup",
        metrics=metrics,
        higher_is_better={m: True for m in metrics},
        labels={m: m.replace("_", " ") for m in metrics},
        rows=decode_rows() if rows is None else rows,
        samples=samples,
    )


def test_trackboard_optional_parts_come_last():
    board = lr.TrackBoard("decode", "t", "speedup", ["speedup"], {}, {}, pd.DataFrame())
    assert board.samples is None and board.by_state is None and board.families is None and board.failures is None
    assert list(lr.TrackBoard.__dataclass_fields__)[-10:] == [
        "samples",
        "failures",
        "by_state",
        "families",
        "knob_headroom",
        "references",
        "figures",
        "report_metrics",
        "extras",
        "deferred",
    ]
    assert board.extras == {}
    assert board.figures == (  # the track's
        "ranking",
        "temperature",
        "acceptance",
        "tau_histogram",
        "headroom",
        "speed_quality",
    )
    assert board.knob_headroom is None


def test_headroom_table_exact_numbers():
    table = lr.headroom_table(decode_board(samples=decode_samples()))
    assert list(table.columns) == list(lr.HEADROOM_COLUMNS)
    # T=0.7 has no samples, so only T=0 has a row.
    assert len(table) == 1
    row = table.iloc[0]
    assert row["dataset"] == "spec" and row["temperature"] == 0.0
    # Means over s1..s3: pl 3.0, draft 2.5 (baseline ar and adaptive ada are not "fixed").
    assert row["best_fixed_method"] == "pl"
    assert row["best_fixed_tau"] == 3.0
    # Oracle: max per sample over all four cells = 4, 4, 3.5.
    assert row["oracle_tau"] == (4.0 + 4.0 + 3.5) / 3
    assert row["gain"] == (4.0 + 4.0 + 3.5) / 3 - 3.0


def test_headroom_is_per_model_when_a_table_group_holds_several():
    # The same policies on a second target model: an oracle over both models' cells would compare different models'
    # outputs, so each model gets its own row, and the table names the model.
    pairs = (("m", "ar", "baseline"), ("m", "pl", "n-gram"), ("m", "draft", "draft-model"), ("m", "ada", "adaptive"))
    big = tuple(("big", method + "-big", family) for _, method, family in pairs)
    rows = decode_rows(n_temps=1, pairs=pairs + big)
    samples = decode_samples()
    shifted = samples.assign(cell_id=samples["cell_id"].str.replace("-0", "-big-0"), tau=samples["tau"] - 0.5)
    table = lr.headroom_table(decode_board(rows, pd.concat([samples, shifted], ignore_index=True)))
    assert list(table.columns) == [*lr.HEADROOM_COLUMNS, "model"]
    by_model = table.set_index("model")
    assert by_model.loc["m", "best_fixed_method"] == "pl" and by_model.loc["m", "best_fixed_tau"] == 3.0
    assert by_model.loc["m", "oracle_tau"] == (4.0 + 4.0 + 3.5) / 3  # as with one model: the other is left out
    assert by_model.loc["big", "best_fixed_method"] == "pl-big" and by_model.loc["big", "best_fixed_tau"] == 2.5
    assert by_model.loc["big", "oracle_tau"] == (4.0 + 4.0 + 3.5) / 3 - 0.5
    md = lr.render_markdown(make_report(decode_board(rows, pd.concat([samples, shifted], ignore_index=True))))
    assert "| spec | big | 0 | pl-big | 2.500 | 3.333 | 0.833 |" in md


def test_headroom_table_without_fixed_policy_or_samples_is_empty():
    only_baseline = decode_rows(n_temps=1, pairs=(("m", "ar", "baseline"), ("m", "ada", "adaptive")))
    samples = decode_samples()
    assert lr.headroom_table(decode_board(only_baseline, samples)).empty
    for empty in (None, pd.DataFrame(), samples.assign(tau=np.nan), samples.drop(columns="tau")):
        table = lr.headroom_table(decode_board(samples=empty))
        assert table.empty and list(table.columns) == list(lr.HEADROOM_COLUMNS)


def test_headroom_in_markdown_and_html():
    report = make_report(decode_board(samples=decode_samples()))
    md = lr.render_markdown(report)
    assert "### Headroom: per-sample oracle vs best fixed policy" in md
    assert "| spec | 0 | pl | 3.000 | 3.833 | 0.833 |" in md
    assert "upper bound, not a policy" in md
    html = lr.render_html(report, [])
    assert '<table class="headroom sortable">' in html
    assert 'data-sort="3.0">3.000</td>' in html
    without = make_report(decode_board())
    assert "Headroom" not in lr.render_markdown(without)
    assert "headroom" not in lr.render_html(without, [])


def test_markdown_tables_unchanged_by_decode_extras():
    report = make_report(decode_board(samples=decode_samples()))
    md = lr.render_markdown(report)
    header = "| rank | model | method | family | speedup \u2191 | acceptance_length \u2191 | n_failed |"
    assert md.count(header) == 2
    row = "| 1 | m | ada | adaptive | 1.900 [1.800, 2.000] (n=3, low n) | 4.000 [3.800, 4.200] (n=3, low n) | 0 |"
    assert row in md


def kinds_of(report, kind):
    return lr.make_figures(report, kinds=[kind])


def test_decode_figures_present_with_their_data():
    report = make_report(decode_board(samples=decode_samples(temperatures=(0, 1))))
    assert len(kinds_of(report, "ranking")) == 2
    [(caption, png)] = kinds_of(report, "temperature")  # one dataset, two temperatures
    assert png.startswith(b"\x89PNG") and "vs temperature" in caption
    acceptance = kinds_of(report, "acceptance")
    assert len(acceptance) == 2 and "accept_rate@i" in acceptance[0][0]
    assert "one line per method (model m) (all 3 series" in acceptance[0][0]  # the baseline has no rates
    assert len(kinds_of(report, "tau_histogram")) == 2
    headroom = kinds_of(report, "headroom")
    assert len(headroom) == 2
    assert "upper bound, not a policy" in headroom[0][0]
    assert "3 samples" in headroom[0][0]
    assert kinds_of(report, "family") == [] and kinds_of(report, "heatmap") == []
    assert len(lr.make_figures(report)) == 2 + 1 + 2 + 2 + 2


def test_decode_figures_skipped_without_their_data():
    one_temperature = make_report(decode_board(decode_rows(n_temps=1, accept=False)))
    for kind in ("temperature", "acceptance", "tau_histogram", "headroom"):
        assert kinds_of(one_temperature, kind) == []
    rows = decode_rows()
    for i in range(1, 5):
        rows[f"accept_rate@{i}"] = np.nan
    undefined = make_report(decode_board(rows, samples=decode_samples().assign(tau=np.nan)))
    for kind in ("acceptance", "tau_histogram", "headroom"):
        assert kinds_of(undefined, kind) == []
    rows = decode_rows()
    rows[["speedup", "acceptance_length"]] = np.nan
    assert kinds_of(make_report(decode_board(rows)), "temperature") == []


def test_line_figures_cap_series():
    pairs = tuple((f"m{k}", f"pl{k}", "n-gram") for k in range(lr.MAX_SERIES + 5))
    report = make_report(decode_board(decode_rows(pairs=pairs)))
    [(caption, _)] = kinds_of(report, "temperature")
    assert f"top {lr.MAX_SERIES} of {lr.MAX_SERIES + 5}" in caption
    assert f"capped at {lr.MAX_SERIES}" in caption


def test_unknown_figure_kind_rejected():
    with pytest.raises(ValueError):
        lr.make_figures(make_report(), kinds=["pie"])


# ---------------------------------------------------------------- qalign figures


def qalign_rows(temperatures=(0.0,)):
    records = []
    for t in temperatures:
        for e, env in enumerate(["frozenlake(map=4x4)", "taxi"]):
            for k, (method, family) in enumerate([("m1", "direct"), ("m2", "direct"), ("m3", "code")]):
                value = 0.1 * (k + 1) + 0.05 * e
                records.append(
                    {
                        "cell_id": f"{t}-{env}-{method}",
                        "model": "llm",
                        "method": method,
                        "family": family,
                        "dataset": env,
                        "temperature": t,
                        "seed": 0,
                        "n_samples": 30,
                        "n_failed": 0,
                        "score": value,
                        "score__lo": value - 0.05,
                        "score__hi": value + 0.05,
                        "score__n": 30,
                    }
                )
    return pd.DataFrame(records)


def test_qalign_family_and_heatmap_figures():
    report = make_report(make_board(qalign_rows(temperatures=(0.0, 0.7))))
    family = kinds_of(report, "family")
    heatmap = kinds_of(report, "heatmap")
    assert len(family) == 2 and len(heatmap) == 2  # one per temperature
    assert "best model \u00b7 method of that family" in family[0][0]
    assert "per method" in heatmap[0][0]  # a single model: rows are methods
    assert all(png.startswith(b"\x89PNG") for _, png in family + heatmap)
    decode_kinds = ("temperature", "acceptance", "tau_histogram", "headroom")
    assert all(kinds_of(report, k) == [] for k in decode_kinds)


def test_qalign_figures_skipped_when_undefined():
    rows = qalign_rows()
    rows["score"] = np.nan
    report = make_report(make_board(rows))
    assert kinds_of(report, "family") == [] and kinds_of(report, "heatmap") == []


def test_heatmap_caps_methods():
    rows = make_rows(list(np.linspace(0, 1, lr.MAX_SERIES + 3)), method=[f"p{i}" for i in range(lr.MAX_SERIES + 3)])
    [(caption, _)] = kinds_of(make_report(make_board(rows)), "heatmap")
    assert f"top {lr.MAX_SERIES} of {lr.MAX_SERIES + 3}" in caption


# ---------------------------------------------------------------- hostile and empty


def hostile_decode_report():
    rows = decode_rows()
    rows["model"] = XSS
    rows["method"] = rows["method"] + XSS
    rows["family"] = rows["family"].where(rows["family"] != "draft-model", XSS)
    rows["dataset"] = XSS
    samples = decode_samples(temperatures=(0, 1))
    board = decode_board(rows, samples, title=XSS)
    return make_report(board, suite=XSS, description=XSS, environment={XSS: XSS})


def test_decode_html_and_markdown_escape_untrusted_text():
    report = hostile_decode_report()
    figures = lr.make_figures(report)
    assert len(figures) >= 9
    html = lr.render_html(report, figures)
    assert XSS not in html
    assert html.count("<script") == 1
    assert html.count("alert(1)") == html.count(XSS_ESCAPED)  # every occurrence escaped
    assert f'<td class="name">pl{XSS_ESCAPED}</td>' in html  # the headroom table's method
    md = lr.render_markdown(report)
    assert XSS not in md and "Headroom" in md


@pytest.mark.parametrize("track", ["qalign", "decode"])
def test_empty_tracks_render(track):
    board = lr.TrackBoard(track, "t", "score", ["score"], {}, {}, pd.DataFrame(), samples=pd.DataFrame())
    report = make_report(board)
    assert lr.make_figures(report) == []
    html = lr.render_html(report, [])
    assert "No results." in html and 'class="controls"' not in html
    page_script(html)  # still exactly one script, which finds no tables
    assert "No results." in lr.render_markdown(report)
    assert lr.headroom_table(board).empty


def test_report_without_tracks_has_script_and_csp():
    html = lr.render_html(make_report(environment={}, description=""), [])
    assert CSP_RE.search(html) and page_script(html) == lr._SCRIPT


def test_deferred_board_fields_are_resolved_before_any_table_and_must_name_a_field():
    """A board's deferred fields (computed beside the report, TrackBoard.deferred) are waited for by whatever
    renders tables, and a deferred name that is no field of the board is an error, not a new attribute."""
    board = decode_board()
    board.deferred = {"knob_headroom": lambda: pd.DataFrame()}
    report = lr.SuiteReport("s", "", {}, [board])
    lr.render_markdown(report)
    assert board.deferred == {} and isinstance(board.knob_headroom, pd.DataFrame)
    board.deferred = {"knob_headrom": lambda: pd.DataFrame()}
    with pytest.raises(ValueError, match="knob_headrom"):
        board.resolve()
