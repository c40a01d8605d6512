"""Render qval leaderboards as Markdown and as a self-contained static HTML page.

Metrics arrive already computed (value, 95% bootstrap CI bounds, n per cell);
this module only ranks, formats and plots them. Every string that can come from
a model, suite or plugin is untrusted: it is HTML-escaped in the page,
markup-escaped in Markdown and kept out of mathtext in figures.
"""

from __future__ import annotations

import base64
import html
import io
import math
import re
from dataclasses import dataclass

import matplotlib
import numpy as np
import pandas as pd

# Agg is used directly through the object-oriented API rather than pyplot:
# importing this module never switches the host process's backend, and no
# figure is registered globally, so none can leak or needs closing.
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.font_manager import FontProperties

UNDEFINED = "\u2013"  # en dash, shown for any undefined number
MAX_BARS = 30  # bars per figure; keeps figure rendering cheap and readable

_TEXT_COLUMNS = ("cell_id", "model", "method", "family", "dataset")
_NUMBER_COLUMNS = ("temperature", "seed", "n_samples", "n_failed")
_CI_SUFFIXES = ("", "__lo", "__hi", "__n")


@dataclass
class TrackBoard:
    track: str
    title: str
    main_metric: str
    metrics: list[str]
    higher_is_better: dict[str, bool]
    labels: dict[str, str]
    rows: pd.DataFrame


@dataclass
class SuiteReport:
    suite: str
    description: str
    environment: dict[str, str]
    tracks: list[TrackBoard]


@dataclass
class _Group:
    """Rows of one (dataset, temperature) table, ranked, with a `rank` column."""

    dataset: str
    temperature: float
    rows: pd.DataFrame


# ---------------------------------------------------------------- normalising


def _text(value: object) -> str:
    """str() of a name, with None/NaN/NA shown as empty rather than 'None'/'nan'."""
    if value is None or value is pd.NA:
        return ""
    if isinstance(value, float) and math.isnan(value):
        return ""
    return str(value)


def _numbers(rows: pd.DataFrame, column: str) -> np.ndarray:
    """Column as float64 with missing, non-numeric and infinite entries as NaN.

    Plugins may hand over None, pd.NA, strings or a missing column; all of them
    mean "undefined" here, and infinities would otherwise print as 'inf'.
    """
    if column not in rows:
        return np.full(len(rows), np.nan)
    values = pd.to_numeric(rows[column], errors="coerce")
    # A copy: under copy-on-write, to_numpy() may return a read-only view.
    values = np.array(values.to_numpy(dtype=float, na_value=np.nan), dtype=float)
    values[~np.isfinite(values)] = np.nan
    return values


def _metric_columns(board: TrackBoard) -> list[str]:
    """Every numeric column the renderer reads for this board's metrics."""
    metrics = list(dict.fromkeys([*board.metrics, board.main_metric]))
    return [f"{m}{suffix}" for m in metrics for suffix in _CI_SUFFIXES]


def _prepared_rows(board: TrackBoard) -> pd.DataFrame:
    """A normalised copy of board.rows with every column the renderer reads."""
    source = board.rows if board.rows is not None else pd.DataFrame()
    columns = {}
    for column in _TEXT_COLUMNS:
        columns[column] = (
            source[column].map(_text).tolist() if column in source else [""] * len(source)
        )
    for column in (*_NUMBER_COLUMNS, *_metric_columns(board)):
        columns[column] = _numbers(source, column)
    return pd.DataFrame(columns)


def _ranked_groups(board: TrackBoard) -> list[_Group]:
    """One ranked frame per (dataset, temperature), best first, undefined last."""
    rows = _prepared_rows(board)
    if rows.empty:
        return []
    main = board.main_metric
    # model/method/cell_id only break ties, so that output is deterministic.
    rows = rows.sort_values(
        [main, "model", "method", "cell_id"],
        ascending=[not board.higher_is_better.get(main, True), True, True, True],
        na_position="last",
        kind="stable",
    )
    groups = []
    # dropna=False: a missing temperature must not silently drop rows.
    for (dataset, temperature), group in rows.groupby(
        ["dataset", "temperature"], dropna=False, sort=True
    ):
        group = group.reset_index(drop=True)
        defined = group[main].notna().to_numpy()
        # Sorting put every defined value first, so positions are ranks.
        group["rank"] = [str(i + 1) if ok else UNDEFINED for i, ok in enumerate(defined)]
        groups.append(_Group(dataset, float(temperature), group))
    return groups


# ---------------------------------------------------------------- formatting


def _format_metric(record: dict, metric: str) -> tuple[str, str]:
    """(value, detail) for one cell; detail is '[lo, hi] (n=N)', undefined parts left out."""
    value = record[metric]
    if math.isnan(value):
        return UNDEFINED, ""
    lo, hi, n = (record[f"{metric}{suffix}"] for suffix in ("__lo", "__hi", "__n"))
    detail = []
    if not (math.isnan(lo) or math.isnan(hi)):
        detail.append(f"[{lo:.3f}, {hi:.3f}]")
    if not math.isnan(n):
        detail.append(f"(n={int(n)})")
    return f"{value:.3f}", " ".join(detail)


def _format_count(value: float) -> str:
    return UNDEFINED if math.isnan(value) else str(int(value))


def _format_temperature(value: float) -> str:
    return UNDEFINED if math.isnan(value) else f"{value:g}"


def _direction(board: TrackBoard, metric: str) -> tuple[str, str]:
    """(arrow, words) saying which way a metric improves."""
    if board.higher_is_better.get(metric, True):
        return "\u2191", "higher is better"
    return "\u2193", "lower is better"


def _label(board: TrackBoard, metric: str) -> str:
    return board.labels.get(metric, metric)


def _group_title(group: _Group) -> str:
    return f"{group.dataset or UNDEFINED} \u00b7 T={_format_temperature(group.temperature)}"


_CI_NOTE = (
    "Cells: value [95% bootstrap CI] (n = samples); "
    f"{UNDEFINED} = undefined; n_failed = samples that failed."
)


# ---------------------------------------------------------------- markdown

# Characters that could end a table cell or open inline HTML, an autolink, a
# link, a code span, emphasis or (on GitHub) math. Escaping the backslash too
# keeps a name ending in '\' from escaping the escape that follows it.
_MD_SPECIAL = re.compile(r"([\\|<>\[\]`*$])")


def _md(value: object) -> str:
    """Untrusted text made safe for one line of Markdown (table cell, heading, bullet)."""
    one_line = " ".join(_text(value).splitlines())
    return _MD_SPECIAL.sub(r"\\\1", one_line)


def _md_table(board: TrackBoard, group: _Group) -> list[str]:
    header = ["rank", "model", "method", "family"]
    header += [f"{_md(m)} {_direction(board, m)[0]}" for m in board.metrics]
    header.append("n_failed")
    align = ["---:", "---", "---", "---", *["---:"] * len(board.metrics), "---:"]
    lines = [_md_row(header), _md_row(align)]
    for record in group.rows.to_dict("records"):
        cells = [record["rank"], _md(record["model"]), _md(record["method"]), _md(record["family"])]
        for metric in board.metrics:
            value, detail = _format_metric(record, metric)
            cells.append(f"{value} {detail}".rstrip())
        cells.append(_format_count(record["n_failed"]))
        lines.append(_md_row(cells))
    return lines


def _md_row(cells: list[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def _md_track(board: TrackBoard) -> list[str]:
    lines = [f"## {_md(board.title)}", ""]
    lines += [f"Ranked by **{_md(board.main_metric)}** ({_direction(board, board.main_metric)[1]}).", ""]
    lines += [
        f"- **{_md(m)}** {_direction(board, m)[0]}: {_md(_label(board, m))}" for m in board.metrics
    ]
    lines += ["", _CI_NOTE, ""]
    groups = _ranked_groups(board)
    if not groups:
        return [*lines, "No results.", ""]
    for group in groups:
        lines += [f"### {_md(_group_title(group))}", "", *_md_table(board, group), ""]
    return lines


def render_markdown(report: SuiteReport) -> str:
    """The leaderboard as GitHub-flavoured Markdown."""
    lines = [f"# qval leaderboard: {_md(report.suite)}", ""]
    if _text(report.description):
        # A fixed prefix keeps the description from starting a heading or list.
        lines += [f"Description: {_md(report.description)}", ""]
    if report.environment:
        lines += [f"- **{_md(k)}**: {_md(v)}" for k, v in report.environment.items()]
        lines.append("")
    for board in report.tracks:
        lines += _md_track(board)
    return "\n".join(lines)


# ---------------------------------------------------------------- html

_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;color:#222;background:#fff;
 max-width:1200px;margin:2em auto;padding:0 1em;line-height:1.4}
h1{font-size:1.6em}h2{margin-top:2em;border-bottom:1px solid #ddd}h3{font-size:1.05em}
.desc{white-space:pre-line}
.env{font-size:.9em;color:#444}
table{border-collapse:collapse;margin:.5em 0 1.5em;font-size:.9em}
th,td{border:1px solid #ddd;padding:.3em .6em;text-align:left;vertical-align:top}
th{background:#f3f4f6}
tbody tr:nth-child(even){background:#fafafa}
.num{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;text-align:right;white-space:nowrap}
th.main{background:#e3ebf6}
.ci{color:#888;font-size:.85em}
.undef{color:#999}
figure{margin:1em 0 2em}figure img{max-width:100%;height:auto;border:1px solid #eee}
figcaption{font-size:.9em;color:#444}
"""

# Defence in depth: even if some text escaped escaping, the page can run no
# script and load nothing from outside (images are data: URIs, CSS is inline).
_CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"


def _e(value: object) -> str:
    return html.escape(_text(value), quote=True)


def _html_metric_cell(record: dict, metric: str) -> str:
    value, detail = _format_metric(record, metric)
    if value == UNDEFINED:
        return f'<td class="num undef">{UNDEFINED}</td>'
    ci = f' <span class="ci">{_e(detail)}</span>' if detail else ""
    return f'<td class="num">{value}{ci}</td>'


def _html_table(board: TrackBoard, group: _Group) -> str:
    head = ['<th class="num">rank</th>', "<th>model</th>", "<th>method</th>", "<th>family</th>"]
    for metric in board.metrics:
        css = "num main" if metric == board.main_metric else "num"
        arrow, words = _direction(board, metric)
        title = f"{_label(board, metric)} ({words})"
        head.append(f'<th class="{css}" title="{_e(title)}">{_e(metric)} {arrow}</th>')
    head.append('<th class="num">n_failed</th>')
    body = []
    for record in group.rows.to_dict("records"):
        cells = [f'<td class="num">{record["rank"]}</td>']
        cells += [f"<td>{_e(record[c])}</td>" for c in ("model", "method", "family")]
        cells += [_html_metric_cell(record, m) for m in board.metrics]
        cells.append(f'<td class="num">{_format_count(record["n_failed"])}</td>')
        body.append("<tr>" + "".join(cells) + "</tr>")
    return (
        f"<h3>{_e(_group_title(group))}</h3>\n<table>\n<thead><tr>{''.join(head)}</tr></thead>\n"
        f"<tbody>\n" + "\n".join(body) + "\n</tbody>\n</table>"
    )


def _html_track(board: TrackBoard) -> str:
    words = _direction(board, board.main_metric)[1]
    legend = "".join(
        f"<li><b>{_e(m)}</b> {_direction(board, m)[0]}: {_e(_label(board, m))}</li>"
        for m in board.metrics
    )
    groups = _ranked_groups(board)
    tables = "\n".join(_html_table(board, g) for g in groups) or "<p>No results.</p>"
    return (
        f"<section>\n<h2>{_e(board.title)}</h2>\n"
        f"<p>Ranked by <b>{_e(board.main_metric)}</b> ({words}).</p>\n"
        f"<ul>{legend}</ul>\n<p>{_e(_CI_NOTE)}</p>\n{tables}\n</section>"
    )


def _html_figure(caption: str, png: bytes) -> str:
    data = base64.b64encode(png).decode("ascii")
    return (
        f'<figure><img src="data:image/png;base64,{data}" alt="{_e(caption)}">'
        f"<figcaption>{_e(caption)}</figcaption></figure>"
    )


def render_html(report: SuiteReport, figures: list[tuple[str, bytes]]) -> str:
    """The leaderboard as one self-contained HTML page (no scripts, no external files)."""
    title = f"qval leaderboard: {_text(report.suite)}"
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8">',
        f'<meta http-equiv="Content-Security-Policy" content="{_CSP}">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{_e(title)}</title>",
        f"<style>{_CSS}</style>",
        "</head>",
        "<body>",
        f"<h1>{_e(title)}</h1>",
    ]
    if _text(report.description):
        parts.append(f'<p class="desc">{_e(report.description)}</p>')
    if report.environment:
        items = "".join(f"<li><b>{_e(k)}</b>: {_e(v)}</li>" for k, v in report.environment.items())
        parts.append(f'<ul class="env">{items}</ul>')
    parts += [_html_track(board) for board in report.tracks]
    if figures:
        parts.append("<section>\n<h2>Figures</h2>")
        parts += [_html_figure(caption, png) for caption, png in figures]
        parts.append("</section>")
    parts += ["</body>", "</html>", ""]
    return "\n".join(parts)


# ---------------------------------------------------------------- figures

_FONT_SIZE = 9  # points, for the bar labels
_PLOT_WIDTH = 6.0  # inches of plot area, to the right of the bar labels
_MAX_LABEL = 60  # characters of a name shown in a figure


def _one_line(value: object) -> str:
    """A name for a figure: one line and bounded, so long names cannot squeeze the plot."""
    text = " ".join(_text(value).splitlines())
    return text if len(text) <= _MAX_LABEL else text[: _MAX_LABEL - 1] + "\u2026"


def _bar_labels(rows: pd.DataFrame) -> list[str]:
    """'model · method', plus the seed when the pair appears more than once in rows."""
    repeated = rows.duplicated(["model", "method"], keep=False).to_numpy()
    labels = []
    for model, method, seed, add_seed in zip(rows["model"], rows["method"], rows["seed"], repeated):
        label = f"{model} \u00b7 {method}"
        if add_seed:
            label += f" \u00b7 seed {_format_count(seed)}"
        labels.append(_one_line(label))
    return labels


def _label_width(fig: Figure, labels: list[str]) -> float:
    """Inches needed left of the plot for the labels.

    Only the longest label is measured, with 10% slack: shaping text is the
    slowest step in rendering these figures, so measuring every one would cost
    nearly as much as drawing it.
    """
    renderer = FigureCanvasAgg(fig).get_renderer()
    longest = max(labels, key=len)
    width, _, _ = renderer.get_text_width_height_descent(
        longest, FontProperties(size=_FONT_SIZE), ismath=False
    )
    return 1.1 * width / fig.dpi + 0.2


# Names are untrusted and a '$' would start mathtext, which raises on invalid
# TeX, so math parsing is off. Unhinted text renders about 20% faster, and
# text is most of the cost of these figures.
@matplotlib.rc_context({"text.parse_math": False, "text.hinting": "no_hinting"})
def _bar_chart_png(
    board: TrackBoard, group: _Group, shown: pd.DataFrame, labels: list[str]
) -> bytes:
    main = board.main_metric
    values = shown[main].to_numpy()
    lo, hi = shown[f"{main}__lo"].to_numpy(), shown[f"{main}__hi"].to_numpy()
    y = np.arange(len(shown))

    # Margins are set by hand: layout engines and tick labels measure every
    # text again and would double the rendering time.
    fig = Figure(dpi=100)
    left = _label_width(fig, labels)
    width, height = left + _PLOT_WIDTH + 0.3, 1.0 + 0.22 * len(shown)
    fig.set_size_inches(width, height)
    fig.subplots_adjust(left=left / width, right=1 - 0.3 / width, top=1 - 0.4 / height, bottom=0.55 / height)

    ax = fig.add_subplot()
    ax.barh(y, values, color="#4c78a8")
    has_ci = ~(np.isnan(lo) | np.isnan(hi))
    if has_ci.any():
        # Clipped at 0: matplotlib rejects negative error lengths, which a CI
        # that does not contain its own estimate (a plugin bug) would produce.
        xerr = np.clip(np.vstack([values - lo, hi - values]), 0, None)[:, has_ci]
        ax.errorbar(values[has_ci], y[has_ci], xerr=xerr, fmt="none", ecolor="#333", capsize=3, lw=1)
    ax.set_yticks([])
    ax.set_ylim(len(shown) - 0.5, -0.5)  # rank 1 on top, as in the tables
    label_at = ax.get_yaxis_transform()  # x in axes units, y in data units
    for position, label in zip(y, labels):
        ax.text(-0.01, position, label, transform=label_at, ha="right", va="center", fontsize=_FONT_SIZE)
    ax.axvline(0, color="#999", lw=0.8)
    ax.set_xlabel(_one_line(f"{_label(board, main)} ({_direction(board, main)[1]})"))
    ax.set_title(_one_line(f"{board.title}: {_group_title(group)}"))
    ax.grid(axis="x", color="#eee")
    ax.set_axisbelow(True)

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=fig.dpi)
    return buffer.getvalue()


def _caption(board: TrackBoard, group: _Group, shown: int, defined: int) -> str:
    subset = f"top {shown} of {defined} rows" if shown < defined else f"all {defined} rows"
    return (
        f"{board.title}, {_group_title(group)}: {_label(board, board.main_metric)} "
        f"per model \u00b7 method ({subset} with a defined value; "
        f"error bars are 95% bootstrap CIs where defined)."
    )


def make_figures(report: SuiteReport) -> list[tuple[str, bytes]]:
    """(caption, PNG bytes): one bar chart of the main metric per track and table group."""
    figures = []
    for board in report.tracks:
        for group in _ranked_groups(board):
            defined = group.rows[group.rows[board.main_metric].notna()]
            if defined.empty:
                continue
            shown = defined.head(MAX_BARS)  # rows are ranked, so these are the best
            # Labels come from all defined rows so that a pair's seed is shown
            # even when its other seeds fall outside the top rows.
            labels = _bar_labels(defined)[:MAX_BARS]
            caption = _caption(board, group, len(shown), len(defined))
            figures.append((caption, _bar_chart_png(board, group, shown, labels)))
    return figures
