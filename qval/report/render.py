"""Render qval leaderboards as Markdown and as a self-contained interactive HTML page.

Metrics arrive already computed (value, 95% bootstrap CI bounds, n per cell);
this module only ranks, formats and plots them. Every string that can come from
a model, suite or plugin is untrusted: it is HTML-escaped in the page,
markup-escaped in Markdown and kept out of mathtext in figures.

The HTML page carries one inline script (sortable, filterable tables and
grouping by family). It is fixed text, never built from data, and the page's
Content-Security-Policy allows exactly that script by its SHA-256 hash; it
only reads text and attributes and moves existing rows, so data can never
become markup through it.
"""

from __future__ import annotations

import base64
import hashlib
import html
import io
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass

import matplotlib
import numpy as np
import pandas as pd

# Agg is used directly through the object-oriented API rather than pyplot:
# importing this module never switches the host process's backend, and no
# figure is registered globally, so none can leak or needs closing.
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.collections import LineCollection
from matplotlib.figure import Figure
from matplotlib.font_manager import FontProperties
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator
from PIL import Image

from ..loadwatch import BUSY_OTHER_CORES
from ..stats import LOW_N

UNDEFINED = "\u2013"  # en dash, shown for any undefined number
MAX_BARS = 30  # bars per figure; keeps figure rendering cheap and readable
MAX_SERIES = 30  # lines, histograms or heatmap rows/columns per figure

# Every kind of figure make_figures can draw, in the order they are returned per track.
FIGURE_KINDS = (
    "ranking",  # any track: main metric per model · method, one bar chart per table group
    "temperature",  # decode: speedup and acceptance length vs temperature, per dataset
    "acceptance",  # decode: accept_rate@i vs draft position i, per table group
    "tau_histogram",  # decode with samples: per-sample acceptance length histograms, per group
    "headroom",  # decode with samples: best fixed policy vs per-sample oracle vs adaptive
    "family",  # qalign: best method per family and environment, per temperature
    "heatmap",  # qalign: model · method x environment heatmap, per temperature
)

# Columns of TrackBoard.samples (decode only; one row per sample of a cell).
SAMPLE_COLUMNS = ("cell_id", "sample_id", "tau", "decode_s", "new_tokens")
HEADROOM_COLUMNS = (
    "dataset", "temperature", "best_fixed_method", "best_fixed_tau", "oracle_tau", "gain",
)

_TEXT_COLUMNS = ("cell_id", "model", "method", "family", "dataset")
_NUMBER_COLUMNS = ("temperature", "seed", "n_samples", "n_failed")
_CI_SUFFIXES = ("", "__lo", "__hi", "__n", "__n_states")
_ACCEPT_RATE = re.compile(r"accept_rate@(\d+)")
_TEMPERATURE_METRICS = ("speedup", "acceptance_length")  # decode figure (a)
_LOAD_METRIC = "load_other_cores"  # every decode cell has it; rows above loadwatch.BUSY_OTHER_CORES are flagged
# Families that are not a "fixed policy" when picking the best fixed one.
_NOT_FIXED = ("baseline", "adaptive")
# Q-alignment families in their usual reading order; any other follows, sorted.
_QALIGN_FAMILIES = (
    "direct", "code", "intrinsic", "ranking", "self-distillation", "embedding", "baseline",
)


@dataclass
class TrackBoard:
    track: str
    title: str
    main_metric: str
    metrics: list[str]
    higher_is_better: dict[str, bool]
    labels: dict[str, str]
    rows: pd.DataFrame
    # decode only: one row per sample with columns cell_id, sample_id,
    # tau (float, per-sample acceptance length), decode_s, new_tokens.
    samples: pd.DataFrame | None = None
    # Per cell with failed samples: columns cell_id, error, samples (the most frequent messages; they may quote
    # model output, so they are untrusted text).
    failures: pd.DataFrame | None = None
    # qalign only, when the main metric is a per-state mean: cell_id -> its value per state. It gives the paired
    # test between each row and the next one, on the states both scored.
    by_state: dict[str, pd.Series] | None = None
    # qalign only: family aggregates (build.family_aggregates).
    families: pd.DataFrame | None = None
    # decode only: one row per knob sweep and metric (qval.decode.sweeps.headroom_rows).
    knob_headroom: pd.DataFrame | None = None


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


@dataclass
class _Headroom:
    """Headroom of one (dataset, temperature) group, over the samples every cell ran."""

    group: _Group
    best_fixed_method: str
    best_fixed_label: str
    best_fixed_tau: float
    oracle_tau: float
    n_samples: int  # samples present in every cell of the group
    n_cells: int  # cells with samples, over which the oracle takes its maximum
    adaptive: list[tuple[str, float]]  # (label, mean tau) per adaptive cell

    @property
    def gain(self) -> float:
        return self.oracle_tau - self.best_fixed_tau


# ---------------------------------------------------------------- normalising


# Control characters (NUL, escape sequences) and bidirectional overrides in untrusted text (suite names, model
# replies, plugin labels) could hide or reorder what a report shows: each becomes U+FFFD.
_INVISIBLE = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def _text(value: object) -> str:
    """str() of a name, with None/NaN/NA shown as empty rather than 'None'/'nan' and control or bidi-override
    characters replaced."""
    if value is None or value is pd.NA:
        return ""
    if isinstance(value, float) and math.isnan(value):
        return ""
    return _INVISIBLE.sub("\ufffd", str(value))


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


def _source(board: TrackBoard) -> pd.DataFrame:
    return board.rows if isinstance(board.rows, pd.DataFrame) else pd.DataFrame()


def _accept_positions(board: TrackBoard) -> list[int]:
    """Draft positions i for which board.rows has an 'accept_rate@i' column, ascending."""
    positions = set()
    for column in _source(board).columns:
        match = _ACCEPT_RATE.fullmatch(str(column))
        if match:
            positions.add(int(match.group(1)))
    return sorted(positions)


def _metric_columns(board: TrackBoard) -> list[str]:
    """Every numeric column the renderer reads for this board's metrics."""
    metrics = [*board.metrics, board.main_metric]
    if board.track == "decode":
        metrics += [*_TEMPERATURE_METRICS, _LOAD_METRIC, *(f"accept_rate@{i}" for i in _accept_positions(board))]
    metrics = list(dict.fromkeys(metrics))
    return [f"{m}{suffix}" for m in metrics for suffix in _CI_SUFFIXES]


def _prepared_rows(board: TrackBoard) -> pd.DataFrame:
    """A normalised copy of board.rows with every column the renderer reads."""
    source = _source(board)
    columns = {}
    for column in _TEXT_COLUMNS:
        columns[column] = (
            source[column].map(_text).tolist() if column in source else [""] * len(source)
        )
    for column in (*_NUMBER_COLUMNS, *_metric_columns(board)):
        columns[column] = _numbers(source, column)
    return pd.DataFrame(columns)


def _rank(board: TrackBoard, rows: pd.DataFrame) -> list[_Group]:
    """One ranked frame per (dataset, temperature), best first, undefined last."""
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


def _ranked_groups(board: TrackBoard) -> list[_Group]:
    return _rank(board, _prepared_rows(board))


_MEMO: dict[tuple[str, int], tuple[object, object]] = {}


def _memo_per_board(fn):
    """Cache a per-board computation for the board object it was computed on (HTML, Markdown and figures all
    need the same prepared samples and headroom; over a million samples that work must be done once)."""

    def wrapper(board, *args):
        key = (fn.__name__, id(board))
        hit = _MEMO.get(key)
        if hit is not None and hit[0] is board:
            return hit[1]
        value = fn(board, *args)
        if len(_MEMO) > 64:
            _MEMO.clear()
        _MEMO[key] = (board, value)
        return value

    return wrapper


@_memo_per_board
def _prepared_samples(board: TrackBoard) -> pd.DataFrame:
    """cell_id, sample_id (both str) and tau (float) of every sample with a defined tau.

    Ids are compared as text, as cell ids are in the rows. Only the distinct ids
    are converted, so that 100,000s of samples cost little.
    """
    samples = board.samples
    empty = pd.DataFrame({"cell_id": pd.Series([], dtype=object), "sample_id": pd.Series([], dtype=object),
                          "tau": pd.Series([], dtype=float)})
    if not isinstance(samples, pd.DataFrame) or samples.empty:
        return empty
    if not {"cell_id", "sample_id", "tau"} <= set(samples.columns):
        return empty
    tau = _numbers(samples, "tau")
    keep = ~np.isnan(tau) & samples["cell_id"].notna().to_numpy() & samples["sample_id"].notna().to_numpy()
    if not keep.any():
        return empty
    columns = {}
    for column in ("cell_id", "sample_id"):
        codes, uniques = pd.factorize(samples[column].to_numpy()[keep])
        texts = np.array([_text(u) for u in uniques], dtype=object)
        columns[column] = texts[codes]
    return pd.DataFrame({**columns, "tau": tau[keep]})


def _tau_by_cell(samples: pd.DataFrame) -> dict[str, np.ndarray]:
    """Per-sample tau arrays keyed by cell_id (one sort, no per-cell filtering)."""
    if samples.empty:
        return {}
    codes, cells = pd.factorize(samples["cell_id"])
    order = np.argsort(codes, kind="stable")
    sorted_codes = codes[order]
    taus = samples["tau"].to_numpy()[order]
    bounds = np.flatnonzero(np.diff(sorted_codes)) + 1
    starts = np.r_[0, bounds]
    return {str(cells[sorted_codes[start]]): part for start, part in zip(starts, np.split(taus, bounds))}


def _is_family(family: str, *names: str) -> bool:
    return family.strip().lower() in names


# ---------------------------------------------------------------- headroom


@_memo_per_board
def _headrooms(board: TrackBoard) -> list[_Headroom]:
    """Best fixed policy vs per-sample oracle, per (dataset, temperature) group.

    Only cells with samples take part, and only samples that every such cell of
    the group ran count, so that all means are over the same samples (and the
    oracle is never below the best fixed policy). A sample repeated within a
    cell counts with its mean tau. The oracle takes the per-sample maximum over
    all of the group's cells (baselines and adaptive policies included); the
    best fixed policy is the cell with the highest mean tau whose family is
    neither baseline nor adaptive. Groups without such a cell, or without a
    sample common to all cells, have no headroom.
    """
    groups, samples = _ranked_groups(board), _prepared_samples(board)
    if samples.empty or not groups:
        return []
    # Integer codes throughout: grouping 100,000s of samples by text ids is slow.
    cells, group_of_cell = [], []
    for index, group in enumerate(groups):
        for cell in dict.fromkeys(group.rows["cell_id"]):
            cells.append(cell)
            group_of_cell.append(index)
    cells = pd.Index(cells)
    first = ~cells.duplicated()  # a cell id in two groups (a plugin bug) counts in the first
    cells, group_of_cell = cells[first], np.array(group_of_cell)[first]
    cell_code = cells.get_indexer(samples["cell_id"])
    known = cell_code >= 0
    if not known.any():
        return []
    sample_code, _ = pd.factorize(samples["sample_id"].to_numpy()[known])
    frame = pd.DataFrame({"c": cell_code[known], "s": sample_code, "tau": samples["tau"].to_numpy()[known]})
    per = frame.groupby(["c", "s"], sort=False)["tau"].mean().reset_index()
    per["g"] = group_of_cell[per["c"].to_numpy()]
    n_cells = per.groupby("g")["c"].nunique()
    in_cells = per.groupby(["g", "s"], sort=False)["c"].transform("size").to_numpy()
    per = per[in_cells == n_cells.reindex(per["g"]).to_numpy()]
    if per.empty:
        return []
    oracle = per.groupby(["g", "s"], sort=False)["tau"].max().groupby(level="g").agg(["mean", "size"])
    cell_tau = per.groupby("c")["tau"].mean()
    names = cells.tolist()
    tau_of = {
        (int(group_of_cell[code]), names[code]): float(tau)
        for code, tau in zip(cell_tau.index.tolist(), cell_tau.tolist())
    }

    result = []
    for index in sorted(oracle.index):
        group = groups[index]
        with_model = _single_model(group.rows) is None
        labels = dict(zip(group.rows["cell_id"], _bar_labels(group.rows, with_model)))
        best = None
        adaptive = []
        # Ranked rows, so that ties go to the better rank.
        rows = group.rows.drop_duplicates("cell_id")
        for cell, method, family in zip(rows["cell_id"], rows["method"], rows["family"]):
            tau = tau_of.get((index, cell))
            if tau is None:
                continue
            if _is_family(family, "adaptive"):
                adaptive.append((labels[cell], tau))
            elif not _is_family(family, *_NOT_FIXED) and (best is None or tau > best[2]):
                best = (cell, method, tau)
        if best is None:
            continue
        cell, method, tau = best
        result.append(_Headroom(
            group=group,
            best_fixed_method=method,
            best_fixed_label=labels[cell],
            best_fixed_tau=tau,
            oracle_tau=float(oracle.loc[index, "mean"]),
            n_samples=int(oracle.loc[index, "size"]),
            n_cells=int(n_cells.loc[index]),
            adaptive=adaptive,
        ))
    return result


def headroom_table(board: TrackBoard) -> pd.DataFrame:
    """Per (dataset, temperature): best fixed policy, per-sample oracle and their gap.

    Columns dataset, temperature, best_fixed_method, best_fixed_tau, oracle_tau
    and gain (= oracle_tau - best_fixed_tau), one row per group with a headroom
    (see _headrooms for which samples and cells count); empty without samples.
    """
    rooms = _headrooms(board)
    return _headroom_frame(rooms)


def _headroom_frame(rooms: list[_Headroom]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "dataset": [r.group.dataset for r in rooms],
            "temperature": np.array([r.group.temperature for r in rooms], dtype=float),
            "best_fixed_method": [r.best_fixed_method for r in rooms],
            "best_fixed_tau": np.array([r.best_fixed_tau for r in rooms], dtype=float),
            "oracle_tau": np.array([r.oracle_tau for r in rooms], dtype=float),
            "gain": np.array([r.gain for r in rooms], dtype=float),
        },
        columns=list(HEADROOM_COLUMNS),
    )


_HEADROOM_NOTE = (
    "Mean per-sample acceptance length (tau) over the samples every policy of the group ran. "
    "Best fixed = the non-baseline, non-adaptive policy with the highest mean; oracle = "
    "per-sample best over all the group's policies, an upper bound, not a policy; "
    "gain = oracle - best fixed."
)


# ---------------------------------------------------------------- formatting


def _format_metric(record: dict, metric: str) -> tuple[str, str]:
    """(value, detail) for one cell; detail is '[lo, hi] (n=N, S states, low n)', undefined parts left out.

    "low n" marks an interval over fewer than LOW_N independent units (distinct states where n counts evaluation
    points): its coverage is checked by simulation, but it is wide and rests on few units."""
    value = record[metric]
    if math.isnan(value):
        return UNDEFINED, ""
    lo, hi, n = (record[f"{metric}{suffix}"] for suffix in ("__lo", "__hi", "__n"))
    states = record.get(f"{metric}__n_states", math.nan)
    detail = []
    if not (math.isnan(lo) or math.isnan(hi)):
        detail.append(f"[{lo:.3f}, {hi:.3f}]")
    if not math.isnan(n):
        counts = [f"n={int(n)}"]
        units = n
        if states is not None and not math.isnan(states):
            counts.append(f"{int(states)} states")
            units = states
        if units < LOW_N:
            counts.append("low n")
        detail.append(f"({', '.join(counts)})")
    return f"{value:.3f}", " ".join(detail)


def _format_count(value: float) -> str:
    return UNDEFINED if math.isnan(value) else str(int(value))


def _format_temperature(value: float) -> str:
    return UNDEFINED if math.isnan(value) else f"{value:g}"


def _format_number(value: float) -> str:
    return UNDEFINED if math.isnan(value) else f"{value:.3f}"


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
    "Cells: value [95% CI] (n = the unit each metric's definition names; 'S states' = distinct states behind a "
    f"count of evaluation points; 'low n' = fewer than {LOW_N} independent units); "
    f"{UNDEFINED} = undefined; n_failed = samples that failed."
)
_LOAD_FLAG = "\u26a0 timed under load"
_LOAD_NOTE = (
    "\u26a0 timed under load: while this cell was timed, other processes kept more than {cores} cores busy on "
    "average, so its timings, and the speedups computed from them, measured the competition as much as the "
    "policy. Re-run it alone, ideally with `qval run --require-idle`."
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


def _records(board: TrackBoard, group: _Group) -> list[dict]:
    """The group's rows as dicts, with only the columns tables show (decode rows carry many more)."""
    metrics = list(dict.fromkeys([*board.metrics, board.main_metric]))
    columns = ["rank", "model", "method", "family", "n_failed", "cell_id"]
    columns += [f"{m}{suffix}" for m in metrics for suffix in _CI_SUFFIXES]
    load = group.rows[_LOAD_METRIC] if _LOAD_METRIC in group.rows else pd.Series(math.nan, index=group.rows.index)
    records = group.rows[columns].to_dict("records")
    for record, following, share in zip(records, [*records[1:], None], load.tolist()):
        record["p_next"] = _paired_p(board, record, following)
        record["under_load"] = bool(share == share and share > BUSY_OTHER_CORES)  # share == share: not NaN
    return records


def _flagged_under_load(board: TrackBoard) -> int:
    # Only the one column: the whole board need not be normalised again for a count.
    return int((_numbers(_source(board), _LOAD_METRIC) > BUSY_OTHER_CORES).sum())


def _load_note() -> str:
    return _LOAD_NOTE.format(cores=BUSY_OTHER_CORES)


def _paired_p(board: TrackBoard, record: dict, following: dict | None) -> float | None:
    """Sign-flip permutation p-value of this row against the next-ranked one, paired on shared states."""
    if board.by_state is None or following is None or UNDEFINED in (record["rank"], following["rank"]):
        return None
    from ..stats import paired_permutation_test

    a, b = board.by_state.get(record["cell_id"]), board.by_state.get(following["cell_id"])
    if a is None or b is None:
        return None
    shared = a.index.intersection(b.index)
    return paired_permutation_test(a[shared].to_numpy(), b[shared].to_numpy()) if len(shared) else None


def _format_p(value: float | None) -> str:
    return UNDEFINED if value is None else ("<0.001" if value < 0.001 else f"{value:.3f}")


def _md_table(board: TrackBoard, group: _Group) -> list[str]:
    header = ["rank", "model", "method", "family"]
    header += [f"{_md(m)} {_direction(board, m)[0]}" for m in board.metrics]
    header.append("n_failed")
    paired = board.by_state is not None
    if paired:
        header.append("p vs next")
    align = ["---:", "---", "---", "---", *["---:"] * len(board.metrics), "---:", *(["---:"] if paired else [])]
    lines = [_md_row(header), _md_row(align)]
    for record in _records(board, group):
        method = _md(record["method"]) + (f" {_LOAD_FLAG}" if record["under_load"] else "")
        cells = [record["rank"], _md(record["model"]), method, _md(record["family"])]
        for metric in board.metrics:
            value, detail = _format_metric(record, metric)
            cells.append(f"{value} {detail}".rstrip())
        cells.append(_format_count(record["n_failed"]))
        if paired:
            cells.append(_format_p(record["p_next"]))
        lines.append(_md_row(cells))
    return lines


_PAIRED_NOTE = ("p vs next: two-sided sign-flip permutation test of this row against the next-ranked one, paired on "
                "the states both scored (main metric per state); a large p means the two ranks are not "
                "distinguishable on these points.")
_FAMILY_NOTE = ("Family aggregate: mean over the family's methods of the main metric, on the states all of them "
                "scored; 95% bootstrap CI resampling states; n = states.")


def _family_rows(board: TrackBoard) -> list[dict]:
    if board.families is None or board.families.empty:
        return []
    rows = board.families.sort_values(["dataset", "temperature", "value"], ascending=[True, True, False],
                                      na_position="last").to_dict("records")
    for r in rows:  # undefined parts arrive as None; the formatters read NaN
        for key in ("value", "ci_low", "ci_high", "n", "best_value"):
            r[key] = float("nan") if r[key] is None else float(r[key])
    return rows


_FAILURE_NOTE = "Failed samples are left out of every metric; the most frequent reasons per cell:"
_MAX_REASON = 200


def _failure_rows(board: TrackBoard) -> list[tuple[str, str, str, str, int]]:
    """(model, method, dataset, reason, samples) per listed reason, in leaderboard order."""
    if board.failures is None or board.failures.empty:
        return []
    rows = _prepared_rows(board).set_index("cell_id")
    out = []
    for record in board.failures.to_dict("records"):
        if record["cell_id"] not in rows.index:
            continue
        row = rows.loc[record["cell_id"]]
        reason = " ".join(str(record["error"]).split())
        reason = reason if len(reason) <= _MAX_REASON else reason[:_MAX_REASON] + "…"
        out.append((row["model"], row["method"], row["dataset"], reason, int(record["samples"])))
    return out


def _md_failures(board: TrackBoard) -> list[str]:
    rows = _failure_rows(board)
    if not rows:
        return []
    lines = ["### Failures", "", _md(_FAILURE_NOTE), ""]
    lines += [_md_row(["model", "method", "dataset", "reason", "samples"]), _md_row(["---", "---", "---", "---", "---:"])]
    lines += [_md_row([_md(m), _md(meth), _md(d), _md(r), str(n)]) for m, meth, d, r, n in rows]
    return [*lines, ""]


def _html_failures(board: TrackBoard) -> str:
    rows = _failure_rows(board)
    if not rows:
        return ""
    body = "\n".join(
        f'<tr><td class="name">{_e(m)}</td><td class="name">{_e(meth)}</td><td class="name">{_e(d)}</td>'
        f'<td class="reason">{_e(r)}</td><td class="num">{n}</td></tr>' for m, meth, d, r, n in rows)
    return (f"<h3>Failures</h3>\n<p>{_e(_FAILURE_NOTE)}</p>\n<table class=\"board failures\">\n<thead><tr><th>model</th>"
            f"<th>method</th><th>dataset</th><th>reason</th><th class=\"num\">samples</th></tr></thead>\n"
            f"<tbody>\n{body}\n</tbody>\n</table>")


def _md_families(board: TrackBoard) -> list[str]:
    rows = _family_rows(board)
    if not rows:
        return []
    lines = ["### Families", "", _md(_FAMILY_NOTE), ""]
    lines.append(_md_row(["dataset", "T", "family", "methods", f"mean {_md(board.main_metric)}", "best method",
                          "best value"]))
    lines.append(_md_row(["---", "---:", "---", "---:", "---:", "---", "---:"]))
    for r in rows:
        value, detail = _format_metric({"m": r["value"], "m__lo": r["ci_low"], "m__hi": r["ci_high"],
                                        "m__n": r["n"]}, "m")
        lines.append(_md_row([_md(r["dataset"]), _format_temperature(r["temperature"]), _md(r["family"]),
                              str(r["methods"]), f"{value} {detail}".rstrip(), _md(r["best_method"]),
                              _format_number(r["best_value"])]))
    return [*lines, ""]


def _md_row(cells: list[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def _md_headroom(rooms: list[_Headroom]) -> list[str]:
    lines = ["### Headroom: per-sample oracle vs best fixed policy", "", _md(_HEADROOM_NOTE), ""]
    lines.append(_md_row(["dataset", "T", "best fixed policy", "best fixed tau", "oracle tau", "gain", "n"]))
    lines.append(_md_row(["---", "---:", "---", "---:", "---:", "---:", "---:"]))
    for room in rooms:
        lines.append(_md_row([
            _md(room.group.dataset) or UNDEFINED,
            _format_temperature(room.group.temperature),
            _md(room.best_fixed_method),
            _format_number(room.best_fixed_tau),
            _format_number(room.oracle_tau),
            _format_number(room.gain),
            str(room.n_samples),
        ]))
    return [*lines, ""]


_KNOB_NOTE = (
    "Per knob swept with everything else fixed (qval export-sweeps writes these sweeps in the replay format). "
    "Per-sample values; best fixed = the setting with the highest mean, chosen on these samples; oracle = "
    "per-sample best setting, an upper bound; selector = logistic regression on prefill features, 5-fold "
    "cross-validated, every sample scored by a model that never saw it. Gains are relative to the best fixed "
    "setting, paired over samples; 95% bootstrap CIs in brackets."
)


def _knob_cells(record: dict) -> list[str]:
    def value(v, ci):
        if v is None or (isinstance(v, float) and np.isnan(v)):
            return UNDEFINED
        lo, hi = ci if isinstance(ci, (list, tuple)) and len(ci) == 2 else (None, None)
        return _format_number(v) + (f" [{_format_number(lo)}, {_format_number(hi)}]" if lo is not None else "")

    def gain(v, ci):
        if v is None or (isinstance(v, float) and np.isnan(v)):
            return UNDEFINED
        lo, hi = ci if isinstance(ci, (list, tuple)) and len(ci) == 2 else (None, None)
        return f"{v:+.1%}" + (f" [{lo:+.1%}, {hi:+.1%}]" if lo is not None and hi is not None else "")

    return [str(record["model"]), str(record["dataset"]), _format_temperature(record["temperature"]),
            f"{record['policy']}.{record['knob']}", str(record["values"]), str(record["metric"]),
            f"{_knob_value(record['best_fixed_value'])}: {value(record['best_fixed'], record['best_fixed_ci'])}",
            value(record["oracle"], record["oracle_ci"]), gain(record["oracle_gain"], record["oracle_gain_ci"]),
            gain(record["selector_gain"], record["selector_gain_ci"]), str(record["n"])]


def _knob_value(v) -> str:
    # knob values share a float column with decimal knobs (stop thresholds); draft lengths print as integers
    return str(int(v)) if isinstance(v, (int, float)) and float(v).is_integer() else str(v)


_KNOB_HEADER = ["model", "dataset", "T", "knob", "values", "metric", "best fixed", "oracle", "oracle gain",
                "held-out selector gain", "n"]


def _md_knob_headroom(board: TrackBoard) -> list[str]:
    if board.knob_headroom is None or board.knob_headroom.empty:
        return []
    lines = ["### Headroom per knob", "", _md(_KNOB_NOTE), "", _md_row(_KNOB_HEADER),
             _md_row(["---"] * 3 + ["---"] * 3 + ["---:"] * 5)]
    for record in board.knob_headroom.to_dict("records"):
        lines.append(_md_row([_md(c) for c in _knob_cells(record)]))
    return [*lines, ""]


def _html_knob_headroom(board: TrackBoard) -> str:
    if board.knob_headroom is None or board.knob_headroom.empty:
        return ""
    head = "".join(f"<th>{_e(h)}</th>" for h in _KNOB_HEADER)
    body = "\n".join("<tr>" + "".join(f"<td>{_e(c)}</td>" for c in _knob_cells(r)) + "</tr>"
                     for r in board.knob_headroom.to_dict("records"))
    return (f"<h3>Headroom per knob</h3>\n<p class=\"note\">{_e(_KNOB_NOTE)}</p>\n"
            f"<table class=\"board knobs\">\n<thead><tr>{head}</tr></thead>\n<tbody>\n{body}\n</tbody>\n</table>")


def _md_track(board: TrackBoard) -> list[str]:
    lines = [f"## {_md(board.title)}", ""]
    lines += [f"Ranked by **{_md(board.main_metric)}** ({_direction(board, board.main_metric)[1]}).", ""]
    lines += [
        f"- **{_md(m)}** {_direction(board, m)[0]}: {_md(_label(board, m))}" for m in board.metrics
    ]
    lines += ["", _CI_NOTE, ""]
    flagged = _flagged_under_load(board)
    if flagged:
        lines += [f"**{flagged} cell(s) {_LOAD_FLAG}.** {_md(_load_note())}", ""]
    groups = _ranked_groups(board)
    if not groups:
        return [*lines, "No results.", ""]
    if board.by_state is not None:
        lines += [_md(_PAIRED_NOTE), ""]
    for group in groups:
        lines += [f"### {_md(_group_title(group))}", "", *_md_table(board, group), ""]
    lines += _md_families(board)
    lines += _md_failures(board)
    rooms = _headrooms(board)
    if rooms:
        lines += _md_headroom(rooms)
    lines += _md_knob_headroom(board)
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
[hidden]{display:none !important}
h1{font-size:1.6em}h2{margin-top:2em;border-bottom:1px solid #ddd}h3{font-size:1.05em}
.desc{white-space:pre-line}
.env{font-size:.9em;color:#444}
.controls{display:flex;flex-wrap:wrap;gap:.4em 1.2em;align-items:center;margin:.8em 0;
 padding:.5em .7em;background:#f6f7f9;border:1px solid #e3e5e8;font-size:.9em}
.controls input[type=search]{width:16em}
.shown{color:#666}
table{border-collapse:collapse;margin:.5em 0 1.5em;font-size:.9em}
th,td{border:1px solid #ddd;padding:.3em .6em;text-align:left;vertical-align:top}
th{background:#f3f4f6}
table.sortable th{cursor:pointer;user-select:none}
th[aria-sort=ascending]::after{content:" \\25B2";font-size:.7em}
th[aria-sort=descending]::after{content:" \\25BC";font-size:.7em}
tbody tr:nth-child(even){background:#fafafa}
.num{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;text-align:right;white-space:nowrap}
th.main{background:#e3ebf6}
.ci{color:#888;font-size:.85em}
.undef{color:#999}
svg.wh{display:block;margin-left:auto}
.note{font-size:.9em;color:#444}
.warn{color:#8a4b00;font-weight:600}
figure{margin:1em 0 2em}figure img{max-width:100%;height:auto;border:1px solid #eee}
figcaption{font-size:.9em;color:#444}
"""

# The page's only script: fixed text (never built from data), allowed by the
# CSP through its hash. It reads text and attributes, sets `hidden` and moves
# existing rows with appendChild; it never parses markup.
_SCRIPT = r"""
(function () {
  "use strict";
  function each(list, fn) { Array.prototype.forEach.call(list, fn); }

  function sortValue(cell) {
    if (!cell) { return null; }
    var raw = cell.getAttribute("data-sort");
    if (raw === null) {
      var text = cell.textContent.trim().toLowerCase();
      return text === "" || text === "\u2013" ? null : text;
    }
    if (raw === "") { return null; }
    var number = parseFloat(raw);
    return Number.isFinite(number) ? number : null;
  }

  function compare(a, b) {
    if (typeof a === "number" && typeof b === "number") { return a - b; }
    if (typeof a === "number") { return -1; }
    if (typeof b === "number") { return 1; }
    return a < b ? -1 : (a > b ? 1 : 0);
  }

  function order(table) {
    var body = table.tBodies[0];
    if (!body) { return; }
    var col = parseInt(table.getAttribute("data-sort-col") || "-1", 10);
    var dir = table.getAttribute("data-sort-dir") === "desc" ? -1 : 1;
    var items = Array.prototype.map.call(body.rows, function (row, pos) {
      var first = parseInt(row.getAttribute("data-i") || "", 10);
      return {row: row, i: first >= 0 ? first : pos, v: col >= 0 ? sortValue(row.cells[col]) : null};
    });
    items.sort(function (a, b) {
      if (a.v === null && b.v !== null) { return 1; }
      if (b.v === null && a.v !== null) { return -1; }
      if (a.v !== null && b.v !== null) {
        var c = compare(a.v, b.v) * dir;
        if (c !== 0) { return c; }
      }
      return a.i - b.i;
    });
    if (table.getAttribute("data-grouped") === "family") {
      var rankOf = new Map();
      items.forEach(function (item, k) {
        var family = item.row.getAttribute("data-family") || "";
        if (!rankOf.has(family)) { rankOf.set(family, rankOf.size); }
        item.f = rankOf.get(family);
        item.k = k;
      });
      items.sort(function (a, b) { return (a.f - b.f) || (a.k - b.k); });
    }
    items.forEach(function (item) { body.appendChild(item.row); });
  }

  each(document.querySelectorAll("table.sortable"), function (table) {
    var head = table.tHead;
    if (!head || !head.rows.length) { return; }
    var headers = head.rows[0].cells;
    each(headers, function (th) {
      th.setAttribute("tabindex", "0");
      function activate() {
        var col = String(th.cellIndex);
        var dir;
        if (table.getAttribute("data-sort-col") === col) {
          dir = table.getAttribute("data-sort-dir") === "desc" ? "asc" : "desc";
        } else {
          dir = th.getAttribute("data-first") === "desc" ? "desc" : "asc";
        }
        table.setAttribute("data-sort-col", col);
        table.setAttribute("data-sort-dir", dir);
        each(headers, function (other) {
          other.setAttribute("aria-sort",
            other === th ? (dir === "asc" ? "ascending" : "descending") : "none");
        });
        order(table);
      }
      th.addEventListener("click", activate);
      th.addEventListener("keydown", function (event) {
        if (event.key === "Enter" || event.key === " ") { event.preventDefault(); activate(); }
      });
    });
  });

  each(document.querySelectorAll("section.track"), function (track) {
    var controls = track.querySelector(".controls");
    if (!controls) { return; }
    var query = controls.querySelector("input.f-text");
    var dataset = controls.querySelector("select.f-dataset");
    var temperature = controls.querySelector("select.f-temperature");
    var family = controls.querySelector("input.f-family");
    var shown = controls.querySelector(".shown");
    var groups = track.querySelectorAll(".grp");
    var texts = new Map();
    each(groups, function (group) {
      each(group.querySelectorAll("tbody tr"), function (row) {
        var parts = [];
        each(row.querySelectorAll("td.name"), function (cell) { parts.push(cell.textContent); });
        texts.set(row, parts.join("\n").toLowerCase());
      });
    });
    function chosen(select) {
      return select && select.selectedIndex > 0 ? select.value : null;
    }
    function apply() {
      var needle = query ? query.value.trim().toLowerCase() : "";
      var ds = chosen(dataset);
      var t = chosen(temperature);
      var visible = 0;
      var total = 0;
      each(groups, function (group) {
        group.hidden = (ds !== null && group.getAttribute("data-dataset") !== ds) ||
          (t !== null && group.getAttribute("data-temperature") !== t);
        each(group.querySelectorAll("tbody tr"), function (row) {
          row.hidden = needle !== "" && (texts.get(row) || "").indexOf(needle) < 0;
          if (!group.hidden) {
            total += 1;
            if (!row.hidden) { visible += 1; }
          }
        });
      });
      if (shown) { shown.textContent = visible + " of " + total + " rows shown"; }
    }
    function regroup() {
      each(track.querySelectorAll("table.board"), function (table) {
        if (family && family.checked) { table.setAttribute("data-grouped", "family"); }
        else { table.removeAttribute("data-grouped"); }
        order(table);
      });
    }
    if (query) { query.addEventListener("input", apply); }
    if (dataset) { dataset.addEventListener("change", apply); }
    if (temperature) { temperature.addEventListener("change", apply); }
    if (family) { family.addEventListener("change", regroup); }
    controls.hidden = false;
    apply();
  });
})();
"""

_SCRIPT_HASH = base64.b64encode(hashlib.sha256(_SCRIPT.encode("utf-8")).digest()).decode("ascii")

# Defence in depth: the page loads nothing from outside (images are data:
# URIs, CSS is inline) and runs no script but the one above, pinned by hash.
_CSP = (
    f"default-src 'none'; script-src 'sha256-{_SCRIPT_HASH}'; "
    "img-src data:; style-src 'unsafe-inline'"
)

_WHISKER_WIDTH, _WHISKER_HEIGHT, _WHISKER_PAD = 120, 14, 4


def _e(value: object) -> str:
    return html.escape(_text(value), quote=True)


def _sort_key(value: float) -> str:
    """data-sort value: the exact number, or empty for undefined (sorted last)."""
    return "" if math.isnan(value) else repr(float(value))


def _whisker_axis(rows: pd.DataFrame, metric: str) -> tuple[float, float] | None:
    """(low, high) shared by a table's whiskers: the span of its CI bounds (and values)."""
    defined = rows[metric].notna().to_numpy()
    if not defined.any():
        return None
    values = np.concatenate([
        rows[f"{metric}{suffix}"].to_numpy()[defined] for suffix in ("", "__lo", "__hi")
    ])
    values = values[~np.isnan(values)]
    return float(values.min()), float(values.max())


def _whisker_svg(record: dict, metric: str, axis: tuple[float, float]) -> str:
    """A dot at the value and a line from CI low to CI high, on the table's shared axis."""
    low, high = axis
    usable = _WHISKER_WIDTH - 2 * _WHISKER_PAD

    def x(v: float) -> float:
        if high <= low:
            return _WHISKER_WIDTH / 2
        return _WHISKER_PAD + min(max((v - low) / (high - low), 0.0), 1.0) * usable

    value, lo, hi = record[metric], record[f"{metric}__lo"], record[f"{metric}__hi"]
    mid = _WHISKER_HEIGHT / 2
    title = f"{value:.3f}"
    marks = []
    if not (math.isnan(lo) or math.isnan(hi)):
        title += f", 95% CI [{lo:.3f}, {hi:.3f}]"
        x1, x2 = x(lo), x(hi)
        marks.append(
            f'<path d="M{x1:.1f} {mid}H{x2:.1f}M{x1:.1f} {mid - 3}V{mid + 3}M{x2:.1f} {mid - 3}V{mid + 3}" '
            'stroke="#555" stroke-width="1.2" fill="none"/>'
        )
    marks.append(f'<circle cx="{x(value):.1f}" cy="{mid}" r="3" fill="#1f4e8c"/>')
    return (
        f'<svg class="wh" width="{_WHISKER_WIDTH}" height="{_WHISKER_HEIGHT}" '
        f'viewBox="0 0 {_WHISKER_WIDTH} {_WHISKER_HEIGHT}" role="img" aria-label="{_e(title)}">'
        f"<title>{_e(title)}</title>{''.join(marks)}</svg>"
    )


def _html_metric_cell(record: dict, metric: str, axis: tuple[float, float] | None = None) -> str:
    value, detail = _format_metric(record, metric)
    if value == UNDEFINED:
        return f'<td class="num undef" data-sort="">{UNDEFINED}</td>'
    ci = f' <span class="ci">{_e(detail)}</span>' if detail else ""
    svg = _whisker_svg(record, metric, axis) if axis is not None else ""
    return f'<td class="num" data-sort="{_sort_key(record[metric])}">{value}{ci}{svg}</td>'


def _html_table(board: TrackBoard, group: _Group) -> str:
    main = board.main_metric
    axis = _whisker_axis(group.rows, main) if main in board.metrics else None
    head = ['<th class="num">rank</th>', "<th>model</th>", "<th>method</th>", "<th>family</th>"]
    for metric in board.metrics:
        css = "num main" if metric == main else "num"
        arrow, words = _direction(board, metric)
        title = f"{_label(board, metric)} ({words})"
        if metric == main and axis is not None:
            title += f"; CI whiskers on a shared axis from {axis[0]:.3f} to {axis[1]:.3f}"
        first = "desc" if board.higher_is_better.get(metric, True) else "asc"
        head.append(
            f'<th class="{css}" data-first="{first}" title="{_e(title)}">{_e(metric)} {arrow}</th>'
        )
    head.append('<th class="num">n_failed</th>')
    paired = board.by_state is not None
    if paired:
        head.append(f'<th class="num" title="{_e(_PAIRED_NOTE)}">p vs next</th>')
    body = []
    for i, record in enumerate(_records(board, group)):
        rank = record["rank"]
        cells = [f'<td class="num" data-sort="{"" if rank == UNDEFINED else rank}">{rank}</td>']
        flag = (f' <span class="warn" title="{_e(_load_note())}">{_e(_LOAD_FLAG)}</span>'
                if record["under_load"] else "")
        cells += [f'<td class="name">{_e(record["model"])}</td>', f'<td class="name">{_e(record["method"])}{flag}</td>',
                  f'<td class="name">{_e(record["family"])}</td>']
        cells += [
            _html_metric_cell(record, m, axis if m == main else None) for m in board.metrics
        ]
        cells.append(
            f'<td class="num" data-sort="{_sort_key(record["n_failed"])}">'
            f'{_format_count(record["n_failed"])}</td>'
        )
        if paired:
            p = record["p_next"]
            cells.append(f'<td class="num" data-sort="{"" if p is None else f"{p:.6f}"}">{_e(_format_p(p))}</td>')
        body.append(f'<tr data-i="{i}" data-family="{_e(record["family"])}">' + "".join(cells) + "</tr>")
    return (
        f'<div class="grp" data-dataset="{_e(group.dataset)}" '
        f'data-temperature="{_e(_format_temperature(group.temperature))}">\n'
        f"<h3>{_e(_group_title(group))}</h3>\n<table class=\"board sortable\">\n"
        f"<thead><tr>{''.join(head)}</tr></thead>\n"
        f"<tbody>\n" + "\n".join(body) + "\n</tbody>\n</table>\n</div>"
    )


def _html_options(values: Iterable[str]) -> str:
    options = ["<option>all</option>"]
    options += [f'<option value="{_e(v)}">{_e(v or UNDEFINED)}</option>' for v in values]
    return "".join(options)


def _html_controls(groups: list[_Group]) -> str:
    """Filter and grouping controls; hidden until the script shows them (inert without it)."""
    datasets = list(dict.fromkeys(g.dataset for g in groups))
    temperatures = sorted({g.temperature for g in groups if not math.isnan(g.temperature)})
    labels = [_format_temperature(t) for t in temperatures]
    if any(math.isnan(g.temperature) for g in groups):
        labels.append(UNDEFINED)
    return (
        '<div class="controls" hidden>'
        '<label>filter <input type="search" class="f-text" placeholder="model, method or family" '
        'aria-label="filter rows by model, method or family"></label>'
        f'<label>dataset <select class="f-dataset">{_html_options(datasets)}</select></label>'
        f'<label>temperature <select class="f-temperature">{_html_options(labels)}</select></label>'
        '<label><input type="checkbox" class="f-family"> group by family</label>'
        '<span class="shown"></span>'
        "</div>"
    )


def _html_headroom(rooms: list[_Headroom]) -> str:
    head = "".join([
        "<th>dataset</th>", '<th class="num">T</th>', "<th>best fixed policy</th>",
        '<th class="num" data-first="desc">best fixed tau</th>',
        '<th class="num" data-first="desc">oracle tau</th>',
        '<th class="num" data-first="desc">gain</th>',
        '<th class="num">n</th>',
    ])
    body = []
    for i, room in enumerate(rooms):
        numbers = (room.best_fixed_tau, room.oracle_tau, room.gain)
        cells = [
            f'<td class="name">{_e(room.group.dataset) or UNDEFINED}</td>',
            f'<td class="num" data-sort="{_sort_key(room.group.temperature)}">'
            f"{_format_temperature(room.group.temperature)}</td>",
            f'<td class="name">{_e(room.best_fixed_method)}</td>',
            *(f'<td class="num" data-sort="{_sort_key(v)}">{_format_number(v)}</td>' for v in numbers),
            f'<td class="num">{room.n_samples}</td>',
        ]
        body.append(f'<tr data-i="{i}">' + "".join(cells) + "</tr>")
    return (
        "<h3>Headroom: per-sample oracle vs best fixed policy</h3>\n"
        f'<p class="note">{_e(_HEADROOM_NOTE)}</p>\n'
        f'<table class="headroom sortable">\n<thead><tr>{head}</tr></thead>\n<tbody>\n'
        + "\n".join(body) + "\n</tbody>\n</table>"
    )


def _html_track(board: TrackBoard) -> str:
    words = _direction(board, board.main_metric)[1]
    legend = "".join(
        f"<li><b>{_e(m)}</b> {_direction(board, m)[0]}: {_e(_label(board, m))}</li>"
        for m in board.metrics
    )
    groups = _ranked_groups(board)
    if groups:
        tables = _html_controls(groups) + "\n" + "\n".join(_html_table(board, g) for g in groups)
        families = _family_rows(board)
        if families:
            tables += "\n" + _html_families(board, families)
        failures = _html_failures(board)
        if failures:
            tables += "\n" + failures
        rooms = _headrooms(board)
        if rooms:
            tables += "\n" + _html_headroom(rooms)
        knobs = _html_knob_headroom(board)
        if knobs:
            tables += "\n" + knobs
    else:
        tables = "<p>No results.</p>"
    return (
        f'<section class="track" data-track="{_e(board.track)}">\n<h2>{_e(board.title)}</h2>\n'
        f"<p>Ranked by <b>{_e(board.main_metric)}</b> ({words}).</p>\n"
        f"<ul>{legend}</ul>\n<p>{_e(_CI_NOTE)}</p>\n{_html_load_warning(board)}{tables}\n</section>"
    )


def _html_load_warning(board: TrackBoard) -> str:
    flagged = _flagged_under_load(board)
    if not flagged:
        return ""
    return f'<p class="warn"><b>{flagged} cell(s) {_e(_LOAD_FLAG)}.</b> {_e(_load_note())}</p>\n'



def _html_families(board: TrackBoard, rows: list[dict]) -> str:
    body = []
    for r in rows:
        value, detail = _format_metric({"m": r["value"], "m__lo": r["ci_low"], "m__hi": r["ci_high"],
                                        "m__n": r["n"]}, "m")
        body.append("<tr>" + "".join([
            f'<td class="name">{_e(r["dataset"])}</td>', f'<td class="num">{_e(_format_temperature(r["temperature"]))}</td>',
            f'<td class="name">{_e(r["family"])}</td>', f'<td class="num">{r["methods"]}</td>',
            f'<td class="num">{_e(value)} <span class="ci">{_e(detail)}</span></td>',
            f'<td class="name">{_e(r["best_method"])}</td>', f'<td class="num">{_e(_format_number(r["best_value"]))}</td>',
        ]) + "</tr>")
    return (f"<h3>Families</h3>\n<p>{_e(_FAMILY_NOTE)}</p>\n<table class=\"board\">\n<thead><tr><th>dataset</th>"
            f"<th class=\"num\">T</th><th>family</th><th class=\"num\">methods</th>"
            f"<th class=\"num\">mean {_e(board.main_metric)}</th><th>best method</th><th class=\"num\">best value</th>"
            f"</tr></thead>\n<tbody>\n" + "\n".join(body) + "\n</tbody>\n</table>")


def _html_figure(caption: str, png: bytes) -> str:
    data = base64.b64encode(png).decode("ascii")
    return (
        f'<figure><img src="data:image/png;base64,{data}" alt="{_e(caption)}">'
        f"<figcaption>{_e(caption)}</figcaption></figure>"
    )


def render_html(report: SuiteReport, figures: list[tuple[str, bytes]]) -> str:
    """The leaderboard as one self-contained HTML page (one hash-pinned script, no external files)."""
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
    parts += [f"<script>{_SCRIPT}</script>", "</body>", "</html>", ""]
    return "\n".join(parts)


# ---------------------------------------------------------------- figures

_FONT_SIZE = 9  # points, for the bar labels
_LEGEND_SIZE = 8  # points, for legend entries
_PLOT_WIDTH = 6.0  # inches of plot area, to the right of the bar labels
_MAX_LABEL = 60  # characters of a name shown in a figure
_COLORS = (
    "#4c78a8", "#f58518", "#54a24b", "#e45756", "#72b7b2",
    "#b279a2", "#eeca3b", "#9d755d", "#ff9da6", "#79706e",
)
_LINE_STYLES = ("-", "--", ":")
# Names are untrusted and a '$' would start mathtext, which raises on invalid
# TeX, so math parsing is off. Unhinted text renders about 20% faster, and
# text is most of the cost of these figures. A fixed title height spares
# matplotlib measuring every tick label to place the title (no figure here has
# tick labels above its axes).
_RC = {"text.parse_math": False, "text.hinting": "no_hinting", "axes.titley": 1.0}


def _one_line(value: object) -> str:
    """A name for a figure: one line and bounded, so long names cannot squeeze the plot."""
    text = " ".join(_text(value).splitlines())
    return text if len(text) <= _MAX_LABEL else text[: _MAX_LABEL - 1] + "\u2026"


def _bar_labels(rows: pd.DataFrame, with_model: bool = True) -> list[str]:
    """'model · method', plus the seed when the pair appears more than once in rows,
    plus the cell id when even (model, method, seed) repeats; without the model
    when with_model is False (figures whose rows all share one model)."""
    repeated = rows.duplicated(["model", "method"], keep=False).to_numpy()
    twice = rows.duplicated(["model", "method", "seed"], keep=False).to_numpy()
    labels = []
    for model, method, seed, cell, add_seed, add_cell in zip(
        rows["model"], rows["method"], rows["seed"], rows["cell_id"], repeated, twice
    ):
        label = f"{model} \u00b7 {method}" if with_model else method
        if add_seed:
            label += f" \u00b7 seed {_format_count(seed)}"
        if add_cell:
            label += f" \u00b7 {cell}"
        labels.append(_one_line(label))
    return labels


def _text_width(fig: Figure, labels: list[str], size: float = _FONT_SIZE) -> float:
    """Inches taken by the longest (by characters) of labels, with 10% slack."""
    if not labels:
        return 0.0
    renderer = FigureCanvasAgg(fig).get_renderer()
    longest = max(labels, key=len)
    width, _, _ = renderer.get_text_width_height_descent(
        longest, FontProperties(size=size), ismath=False
    )
    return 1.1 * width / fig.dpi


def _label_width(fig: Figure, labels: list[str]) -> float:
    """Inches needed left of the plot for the labels.

    Only the longest label is measured, with 10% slack: shaping text is the
    slowest step in rendering these figures, so measuring every one would cost
    nearly as much as drawing it.
    """
    return _text_width(fig, labels) + 0.2


def _png(fig: Figure) -> bytes:
    """The figure as a 256-colour PNG.

    Charts use few colours, so an adaptive palette looks the same as RGBA while
    the file is about a quarter of the size (the page embeds every figure) and
    encoding takes half the time.
    """
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    rgb = np.ascontiguousarray(np.asarray(canvas.buffer_rgba())[..., :3])
    image = Image.fromarray(rgb).quantize(256, method=Image.Quantize.FASTOCTREE)
    buffer = io.BytesIO()
    image.save(buffer, format="png", compress_level=1)
    return buffer.getvalue()


def _dodge(i: int, n: int, step: float) -> float:
    """x offset of series i of n, so that whiskers at the same x stay apart (30% of a step)."""
    return 0.0 if n < 2 else (i - (n - 1) / 2) * 0.3 * step / (n - 1)


def _style(i: int) -> tuple[str, str]:
    """(colour, line style) of series i: 30 distinct combinations."""
    return _COLORS[i % len(_COLORS)], _LINE_STYLES[(i // len(_COLORS)) % len(_LINE_STYLES)]


def _series_note(shown: int, total: int, what: str, by: str) -> str:
    if shown < total:
        return f"top {shown} of {total} {what} by {by}; the figure is capped at {MAX_SERIES}"
    return f"all {total} {what}"


def _line_layout(
    n_panels: int, legend: list[str], panel_width: float = 4.2, panel_height: float = 3.0
) -> tuple[Figure, list, float]:
    """Figure with n_panels axes side by side and room on the right for a text legend.

    Margins are set by hand (no layout engine) and the legend is plain text:
    both would otherwise measure every label again, which is most of the cost.
    Returns (figure, axes, legend x position in figure fraction).
    """
    fig = Figure(dpi=100)
    legend_width = _text_width(fig, legend, _LEGEND_SIZE) + 0.55 if legend else 0.0
    left, gap, right, bottom, top = 0.75, 0.75, 0.15, 0.55, 0.45
    width = left + n_panels * panel_width + (n_panels - 1) * gap + right + legend_width
    height = max(panel_height + bottom + top, 0.16 * len(legend) + 0.6)
    fig.set_size_inches(width, height)
    axes = []
    for k in range(n_panels):
        x0 = left + k * (panel_width + gap)
        # Top-aligned with the legend, which may be taller than the plot.
        y0 = height - top - panel_height
        ax = fig.add_axes((x0 / width, y0 / height, panel_width / width, panel_height / height))
        # Few ticks: each tick label is a text to shape, the dominant cost of a figure.
        ax.yaxis.set_major_locator(MaxNLocator(5))
        axes.append(ax)
    return fig, axes, (width - legend_width + 0.1) / width


def _text_legend(fig: Figure, x: float, entries: list[tuple[str, str, str]]) -> None:
    """A legend of (label, colour, line style) drawn as plain lines and text at figure x."""
    width, height = fig.get_size_inches()
    top = 1 - 0.45 / height
    step = 0.16 / height
    for k, (label, color, style) in enumerate(entries):
        y = top - k * step
        fig.add_artist(Line2D([x, x + 0.3 / width], [y, y], color=color, ls=style, lw=1.5))
        fig.text(x + 0.38 / width, y, label, fontsize=_LEGEND_SIZE, va="center")


def _whiskers(ax, segments: list, colors: list) -> None:
    """Vertical CI whiskers as one collection (cheaper than errorbar), inside the data limits."""
    if segments:
        ax.add_collection(LineCollection(segments, colors=colors, linewidths=0.9), autolim=True)
        ax.autoscale_view()


# ------------------------------------------------------------ ranking (any track)


@matplotlib.rc_context(_RC)
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
    return _png(fig)


def _caption(board: TrackBoard, group: _Group, shown: int, defined: int) -> str:
    subset = f"top {shown} of {defined} rows" if shown < defined else f"all {defined} rows"
    return (
        f"{board.title}, {_group_title(group)}: {_label(board, board.main_metric)} "
        f"per model \u00b7 method ({subset} with a defined value; "
        f"error bars are 95% bootstrap CIs where defined)."
    )


def _ranking_figures(board: TrackBoard, groups: list[_Group]) -> list[tuple[str, bytes]]:
    figures = []
    for group in groups:
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


# ------------------------------------------------------------ decode (a): temperature

_POOLED_NOTE = (
    "where a series has several cells (seeds), the point is their mean and "
    "the whisker spans all their CIs"
)


def _pair_label(model: str, method: str, with_model: bool = True) -> str:
    return _one_line(f"{model} \u00b7 {method}" if with_model else method)


def _single_model(rows: pd.DataFrame) -> str | None:
    """The model when all rows share one, else None: labels then show the method only
    (text is the main cost of a figure, and the repeated name adds nothing)."""
    models = rows["model"].unique()
    return str(models[0]) if len(models) == 1 else None


def _series_what(model: str | None) -> str:
    return f"method (model {model})" if model is not None else "model \u00b7 method"


def _pooled(rows: pd.DataFrame, by: list[str], metrics: list[str]) -> tuple[pd.DataFrame, bool]:
    """Rows aggregated per `by` (in order of first appearance): mean value, lowest CI
    low and highest CI high of each metric; and whether any aggregate has several rows."""
    spec = {}
    for metric in metrics:
        spec[metric] = (metric, "mean")
        spec[f"{metric}__lo"] = (f"{metric}__lo", "min")
        spec[f"{metric}__hi"] = (f"{metric}__hi", "max")
    grouped = rows.groupby(by, sort=False)
    return grouped.agg(**spec).reset_index(), bool((grouped.size() > 1).any())


def _best_pairs(board: TrackBoard, points: pd.DataFrame) -> list[tuple[str, str]]:
    """(model, method) pairs, best mean main metric first, undefined last."""
    main = board.main_metric
    mean = points.groupby(["model", "method"], sort=False)[main].mean().reset_index()
    mean = mean.sort_values(
        [main, "model", "method"],
        ascending=[not board.higher_is_better.get(main, True), True, True],
        na_position="last",
        kind="stable",
    )
    return list(zip(mean["model"], mean["method"]))


@matplotlib.rc_context(_RC)
def _temperature_png(
    board: TrackBoard, dataset: str, metrics: list[str], series: list[tuple[str, pd.DataFrame]]
) -> bytes:
    labels = [label for label, _ in series]
    fig, axes, legend_x = _line_layout(len(metrics), labels)
    temperatures = np.unique(np.concatenate([rows["temperature"].to_numpy() for _, rows in series]))
    step = float(np.diff(temperatures).min()) if len(temperatures) > 1 else 1.0
    for ax, metric in zip(axes, metrics):
        segments, colors = [], []
        for i, (_, rows) in enumerate(series):
            color, style = _style(i)
            x = rows["temperature"].to_numpy() + _dodge(i, len(series), step)
            y, lo, hi = (rows[f"{metric}{s}"].to_numpy() for s in ("", "__lo", "__hi"))
            ax.plot(x, y, color=color, ls=style, lw=1.3, marker="o", ms=3)
            ok = ~(np.isnan(y) | np.isnan(lo) | np.isnan(hi))
            segments += [((a, b), (a, c)) for a, b, c in zip(x[ok], lo[ok], hi[ok])]
            colors += [color] * int(ok.sum())
        _whiskers(ax, segments, colors)
        if len(temperatures) <= 12:
            ax.set_xticks(temperatures)
        ax.set_xlabel("temperature")
        arrow = _direction(board, metric)[0]
        ax.set_ylabel(_one_line(f"{metric} {arrow}"))
        ax.set_title(_one_line(f"{dataset or UNDEFINED}: {metric}"), fontsize=10)
        ax.grid(color="#eee")
        ax.set_axisbelow(True)
    _text_legend(fig, legend_x, [(label, *_style(i)) for i, label in enumerate(labels)])
    return _png(fig)


def _temperature_figures(board: TrackBoard, rows: pd.DataFrame) -> list[tuple[str, bytes]]:
    if rows.empty:
        return []
    metrics = [m for m in _TEMPERATURE_METRICS if rows[m].notna().any()]
    if not metrics:
        return []
    main = board.main_metric
    rows = rows[rows["temperature"].notna() & rows[metrics].notna().any(axis=1)]
    figures = []
    for dataset, sub in rows.groupby("dataset", sort=True):
        if sub["temperature"].nunique() < 2:
            continue
        points, pooled = _pooled(
            sub, ["model", "method", "temperature"], list(dict.fromkeys([*metrics, main]))
        )
        points = points.sort_values("temperature", kind="stable")
        pairs = _best_pairs(board, points)
        by_pair = {pair: part for pair, part in points.groupby(["model", "method"], sort=False)}
        model = _single_model(points)
        series = [(_pair_label(*pair, model is None), by_pair[pair]) for pair in pairs[:MAX_SERIES]]
        note = _series_note(len(series), len(pairs), "series", f"mean {main}")
        caption = (
            f"{board.title}, {dataset or UNDEFINED}: "
            + " and ".join(_label(board, m) for m in metrics)
            + f" vs temperature, one line per {_series_what(model)} ({note}); "
            "whiskers are 95% bootstrap CIs where defined"
            + (f"; {_POOLED_NOTE}." if pooled else ".")
        )
        figures.append((caption, _temperature_png(board, dataset, metrics, series)))
    return figures


# ------------------------------------------------------------ decode (b): acceptance per position


@matplotlib.rc_context(_RC)
def _acceptance_png(group: _Group, positions: list[int], shown: pd.DataFrame, labels: list[str]) -> bytes:
    fig, (ax,), legend_x = _line_layout(1, labels, panel_width=5.0)
    x = np.array(positions, dtype=float)
    columns = [f"accept_rate@{i}" for i in positions]
    values = shown[columns].to_numpy()
    lows = shown[[f"{c}__lo" for c in columns]].to_numpy()
    highs = shown[[f"{c}__hi" for c in columns]].to_numpy()
    segments, colors = [], []
    step = float(np.diff(x).min()) if len(x) > 1 else 1.0
    for i in range(len(shown)):
        color, style = _style(i)
        xs = x + _dodge(i, len(shown), step)
        ax.plot(xs, values[i], color=color, ls=style, lw=1.3, marker="o", ms=3)
        ok = ~(np.isnan(values[i]) | np.isnan(lows[i]) | np.isnan(highs[i]))
        segments += [((a, b), (a, c)) for a, b, c in zip(xs[ok], lows[i][ok], highs[i][ok])]
        colors += [color] * int(ok.sum())
    _whiskers(ax, segments, colors)
    everything = np.concatenate([values.ravel(), lows.ravel(), highs.ravel()])
    everything = everything[~np.isnan(everything)]
    if everything.size and everything.min() >= 0 and everything.max() <= 1:
        ax.set_ylim(0, 1.03)
    if len(positions) <= 16:
        ax.set_xticks(x)
    ax.set_xlabel("draft position i")
    ax.set_ylabel("acceptance rate at position i")
    ax.set_title(_one_line(_group_title(group)), fontsize=10)
    ax.grid(color="#eee")
    ax.set_axisbelow(True)
    _text_legend(fig, legend_x, [(label, *_style(i)) for i, label in enumerate(labels)])
    return _png(fig)


def _acceptance_figures(board: TrackBoard, groups: list[_Group]) -> list[tuple[str, bytes]]:
    positions = _accept_positions(board)
    if not positions:
        return []
    columns = [f"accept_rate@{i}" for i in positions]
    figures = []
    for group in groups:
        with_rates = group.rows[group.rows[columns].notna().any(axis=1)]
        if with_rates.empty:
            continue
        # Ranked rows, grouped in order of first appearance: best pairs first.
        points, pooled = _pooled(with_rates, ["model", "method"], columns)
        shown = points.head(MAX_SERIES)
        model = _single_model(points)
        labels = [_pair_label(m, p, model is None) for m, p in zip(shown["model"], shown["method"])]
        note = _series_note(len(shown), len(points), "series with acceptance rates", "rank")
        caption = (
            f"{board.title}, {_group_title(group)}: per-position acceptance rate accept_rate@i "
            f"vs draft position i, one line per {_series_what(model)} ({note}); "
            "whiskers are 95% bootstrap CIs where defined"
            + (f"; {_POOLED_NOTE}." if pooled else ".")
        )
        figures.append((caption, _acceptance_png(group, positions, shown, labels)))
    return figures


# ------------------------------------------------------------ decode (c): tau histograms


@matplotlib.rc_context(_RC)
def _histogram_png(group: _Group, series: list[tuple[str, np.ndarray]]) -> bytes:
    labels = [label for label, _ in series]
    fig, (ax,), legend_x = _line_layout(1, labels, panel_width=5.0)
    pooled = np.concatenate([taus for _, taus in series])
    low, high = float(pooled.min()), float(pooled.max())
    if high - low < 1e-9:
        low, high = low - 0.5, high + 0.5
    edges = np.histogram_bin_edges(pooled, bins=min(40, max(5, int(np.sqrt(pooled.size)))), range=(low, high))
    for i, (_, taus) in enumerate(series):
        color, style = _style(i)
        counts, _ = np.histogram(taus, bins=edges)
        # A stepped line, not ax.stairs: patches recompute data limits slowly.
        heights = np.r_[0.0, counts / taus.size, 0.0]
        ax.plot(np.r_[edges[0], edges], heights, drawstyle="steps-post", color=color, ls=style, lw=1.3)
    ax.set_xlabel("acceptance length per sample (tau)")
    ax.set_ylabel("fraction of samples")
    ax.set_title(_one_line(_group_title(group)), fontsize=10)
    ax.grid(color="#eee")
    ax.set_axisbelow(True)
    _text_legend(fig, legend_x, [(label, *_style(i)) for i, label in enumerate(labels)])
    return _png(fig)


def _histogram_figures(
    board: TrackBoard, groups: list[_Group], taus: dict[str, np.ndarray]
) -> list[tuple[str, bytes]]:
    figures = []
    for group in groups:
        rows = group.rows.drop_duplicates("cell_id")
        rows = rows[rows["cell_id"].isin(taus.keys())]
        if rows.empty:
            continue
        # Ranked rows, so pairs come best first; a pair's cells (seeds) are pooled.
        parts: dict[tuple[str, str], list[np.ndarray]] = {}
        for model, method, cell in zip(rows["model"], rows["method"], rows["cell_id"]):
            parts.setdefault((model, method), []).append(taus[cell])
        model = _single_model(rows)
        series = [
            (_pair_label(*pair, model is None), np.concatenate(arrays)) for pair, arrays in parts.items()
        ][:MAX_SERIES]
        pooled = any(len(arrays) > 1 for arrays in parts.values())
        note = _series_note(len(series), len(parts), "series with samples", "rank")
        caption = (
            f"{board.title}, {_group_title(group)}: distribution of the per-sample acceptance "
            f"length tau, one step histogram per {_series_what(model)} ({note}); "
            "heights are fractions of each series' samples"
            + ("; the samples of several cells (seeds) of one series are pooled." if pooled else ".")
        )
        figures.append((caption, _histogram_png(group, series)))
    return figures


# ------------------------------------------------------------ decode (d): headroom


@matplotlib.rc_context(_RC)
def _headroom_png(room: _Headroom, bars: list[tuple[str, float, str]]) -> bytes:
    labels = [label for label, _, _ in bars]
    fig = Figure(dpi=100)
    left = _label_width(fig, labels)
    plot = 4.5
    width, height = left + plot + 0.9, 1.0 + 0.24 * len(bars)
    fig.set_size_inches(width, height)
    fig.subplots_adjust(left=left / width, right=1 - 0.9 / width, top=1 - 0.4 / height, bottom=0.55 / height)
    ax = fig.add_subplot()
    y = np.arange(len(bars))
    values = np.array([value for _, value, _ in bars])
    ax.barh(y, values, color=[color for _, _, color in bars], height=0.6)
    ax.set_yticks([])
    ax.set_ylim(len(bars) - 0.5, -0.5)
    label_at = ax.get_yaxis_transform()
    for position, label, value in zip(y, labels, values):
        ax.text(-0.01, position, label, transform=label_at, ha="right", va="center", fontsize=_FONT_SIZE)
        # Values printed for the two reference bars, and for all when there are few.
        if position < 2 or len(bars) <= 12:
            ax.text(value, position, f" {value:.3f}", va="center", fontsize=_LEGEND_SIZE)
    ax.set_xlim(0, values.max() * 1.15 if values.max() > 0 else 1)
    ax.xaxis.set_major_locator(MaxNLocator(5))
    ax.set_xlabel("mean acceptance length per sample (tau)")
    ax.set_title(_one_line(f"headroom: {_group_title(room.group)}"), fontsize=10)
    ax.grid(axis="x", color="#eee")
    ax.set_axisbelow(True)
    return _png(fig)


def _headroom_figures(board: TrackBoard, rooms: list[_Headroom]) -> list[tuple[str, bytes]]:
    figures = []
    for room in rooms:
        bars = [
            (_one_line(f"best fixed: {room.best_fixed_label}"), room.best_fixed_tau, "#4c78a8"),
            ("per-instance oracle over policies", room.oracle_tau, "#bab0ac"),
        ]
        # Best first; sorted() is stable, so equal means keep the table's rank order.
        adaptive = sorted(room.adaptive, key=lambda item: -item[1])[:MAX_SERIES]
        bars += [(_one_line(f"adaptive: {label}"), tau, "#f58518") for label, tau in adaptive]
        capped = (
            f" (top {len(adaptive)} of {len(room.adaptive)} adaptive cells by mean tau; "
            f"the figure is capped at {MAX_SERIES})"
            if len(adaptive) < len(room.adaptive) else ""
        )
        caption = (
            f"{board.title}, {_group_title(room.group)}: mean per-sample acceptance length over the "
            f"{room.n_samples} samples that all {room.n_cells} policies ran, for the best fixed "
            f"policy ({room.best_fixed_method}), the per-instance oracle over policies and each "
            f"adaptive policy{capped}. The oracle picks the best of the {room.n_cells} policies for "
            "every sample after the fact: it is an upper bound, not a policy."
        )
        figures.append((caption, _headroom_png(room, bars)))
    return figures


# ------------------------------------------------------------ qalign (e): families


def _ordered_families(families: Iterable[str]) -> list[str]:
    present = set(families)
    known = [f for f in _QALIGN_FAMILIES if f in present]
    return known + sorted(present - set(known))


def _rotated_label_height(fig: Figure, labels: list[str]) -> float:
    """Inches below the axes for x labels rotated by 30 degrees."""
    return 0.5 * _text_width(fig, labels) + 0.35


@matplotlib.rc_context(_RC)
def _family_png(
    board: TrackBoard, temperature: float, envs: list[str], families: list[str], best: pd.DataFrame
) -> bytes:
    main = board.main_metric
    env_labels = [_one_line(e or UNDEFINED) for e in envs]
    family_labels = [_one_line(f or UNDEFINED) for f in families]
    fig = Figure(dpi=100)
    bottom = _rotated_label_height(fig, env_labels)
    legend_width = _text_width(fig, family_labels, _LEGEND_SIZE) + 0.55
    plot = min(14.0, max(4.0, 0.18 * len(envs) * len(families) + 0.3 * len(envs)))
    left, top = 0.8, 0.45
    width = left + plot + 0.15 + legend_width
    height = max(3.0 + bottom + top, 0.16 * len(families) + 0.6)
    fig.set_size_inches(width, height)
    ax = fig.add_axes((left / width, bottom / height, plot / width, 3.0 / height))
    bar = 0.8 / len(families)
    env_at = {e: k for k, e in enumerate(envs)}
    segments, colors = [], []
    for i, family in enumerate(families):
        part = best[best["family"] == family]
        if part.empty:
            continue
        color = _COLORS[i % len(_COLORS)]
        hatch = None if i < len(_COLORS) else ("//" if i < 2 * len(_COLORS) else "..")
        x = np.array([env_at[e] for e in part["dataset"]]) - 0.4 + bar * (i + 0.5)
        values = part[main].to_numpy()
        ax.bar(x, values, width=bar, color=color, hatch=hatch, edgecolor="white" if hatch else None, lw=0)
        lo, hi = part[f"{main}__lo"].to_numpy(), part[f"{main}__hi"].to_numpy()
        ok = ~(np.isnan(lo) | np.isnan(hi))
        segments += [((a, b), (a, c)) for a, b, c in zip(x[ok], lo[ok], hi[ok])]
        colors += ["#333"] * int(ok.sum())
    _whiskers(ax, segments, colors)
    ax.autoscale_view()
    ax.axhline(0, color="#999", lw=0.8)
    ax.set_xticks(np.arange(len(envs)), labels=env_labels, rotation=30, ha="right", fontsize=_FONT_SIZE)
    ax.set_xlim(-0.5, len(envs) - 0.5)
    ax.set_ylabel(_one_line(f"{main} {_direction(board, main)[0]}"))
    ax.set_title(f"best method per family, T={_format_temperature(temperature)}", fontsize=10)
    ax.grid(axis="y", color="#eee")
    ax.set_axisbelow(True)
    _text_legend(
        fig, (width - legend_width + 0.1) / width,
        [(label, _COLORS[i % len(_COLORS)], "-") for i, label in enumerate(family_labels)],
    )
    return _png(fig)


def _family_figures(board: TrackBoard, rows: pd.DataFrame) -> list[tuple[str, bytes]]:
    main = board.main_metric
    if rows.empty:
        return []
    defined = rows[rows[main].notna()]
    higher = board.higher_is_better.get(main, True)
    # Best first within each (temperature, dataset, family); ties by model, method, cell.
    defined = defined.sort_values(
        [main, "model", "method", "cell_id"], ascending=[not higher, True, True, True], kind="stable"
    )
    figures = []
    for temperature, sub in defined.groupby("temperature", dropna=False, sort=True):
        best = sub.drop_duplicates(["dataset", "family"])
        envs = sorted(best["dataset"].unique())
        families = _ordered_families(best["family"].unique())
        notes = []
        if len(envs) > MAX_SERIES:
            notes.append(f"first {MAX_SERIES} of {len(envs)} environments by name")
            envs = envs[:MAX_SERIES]
        if len(families) > MAX_SERIES:
            notes.append(f"first {MAX_SERIES} of {len(families)} families")
            families = families[:MAX_SERIES]
        best = best[best["dataset"].isin(envs) & best["family"].isin(families)]
        capped = f" Capped at {MAX_SERIES}: {'; '.join(notes)}." if notes else ""
        caption = (
            f"{board.title}, T={_format_temperature(float(temperature))}: {_label(board, main)} "
            f"({_direction(board, main)[1]}) by environment and method family; each bar is the "
            "best model \u00b7 method of that family in that environment, whiskers are its 95% "
            f"bootstrap CI where defined.{capped}"
        )
        figures.append((caption, _family_png(board, float(temperature), envs, families, best)))
    return figures


# ------------------------------------------------------------ qalign (f): heatmap


@matplotlib.rc_context(_RC)
def _heatmap_png(board: TrackBoard, temperature: float, table: pd.DataFrame) -> bytes:
    main = board.main_metric
    row_labels = [_one_line(r) for r in table.index]
    env_labels = [_one_line(e or UNDEFINED) for e in table.columns]
    fig = Figure(dpi=100)
    left = _label_width(fig, row_labels) + 0.1
    bottom = _rotated_label_height(fig, env_labels)
    # At most 12 inches of cells either way (30 x 30 cells at most are drawn).
    cell_w, cell_h = min(0.75, 12.0 / len(env_labels)), 0.28
    plot_w, plot_h = max(2.0, cell_w * len(env_labels)), cell_h * len(row_labels)
    width, height = left + plot_w + 0.3, bottom + plot_h + 0.45
    fig.set_size_inches(width, height)
    ax = fig.add_axes((left / width, bottom / height, plot_w / width, plot_h / height))
    values = table.to_numpy(dtype=float)
    masked = np.ma.masked_invalid(values)
    cmap = matplotlib.colormaps["viridis" if board.higher_is_better.get(main, True) else "viridis_r"].with_extremes(
        bad="#e5e5e5"
    )
    defined = values[~np.isnan(values)]
    low, high = (float(defined.min()), float(defined.max())) if defined.size else (0.0, 1.0)
    if high <= low:
        low, high = low - 0.5, high + 0.5
    ax.imshow(masked, aspect="auto", cmap=cmap, vmin=low, vmax=high, interpolation="nearest")
    for (r, c), value in np.ndenumerate(values):
        if np.isnan(value):
            continue
        shade = (value - low) / (high - low)
        if not board.higher_is_better.get(main, True):
            shade = 1 - shade
        ax.text(c, r, f"{value:.2f}", ha="center", va="center", fontsize=7,
                color="black" if shade > 0.55 else "white")
    ax.set_xticks(np.arange(len(env_labels)), labels=env_labels, rotation=30, ha="right", fontsize=_FONT_SIZE)
    ax.set_yticks(np.arange(len(row_labels)), labels=row_labels, fontsize=_FONT_SIZE)
    ax.tick_params(length=0)
    ax.set_title(_one_line(f"{main}, T={_format_temperature(temperature)}"), fontsize=10)
    return _png(fig)


def _heatmap_figures(board: TrackBoard, rows: pd.DataFrame) -> list[tuple[str, bytes]]:
    main = board.main_metric
    if rows.empty:
        return []
    defined = rows[rows[main].notna()]
    higher = board.higher_is_better.get(main, True)
    figures = []
    for temperature, sub in defined.groupby("temperature", dropna=False, sort=True):
        single_model = sub["model"].nunique() == 1
        label = sub["method"] if single_model else sub["model"] + " \u00b7 " + sub["method"]
        stats = sub.groupby([label.rename("label"), "dataset"])[main].agg(["mean", "size"])
        averaged = bool((stats["size"] > 1).any())
        table = stats["mean"].unstack("dataset")
        envs = sorted(table.columns)
        notes = []
        if len(envs) > MAX_SERIES:
            notes.append(f"first {MAX_SERIES} of {len(envs)} environments by name")
            envs = envs[:MAX_SERIES]
        table = table[envs]
        score = table.mean(axis=1, skipna=True)
        order = pd.DataFrame({"label": table.index, "score": score.to_numpy()}).sort_values(
            ["score", "label"], ascending=[not higher, True], na_position="last", kind="stable"
        )
        names = order["label"].tolist()
        if len(names) > MAX_SERIES:
            notes.append(f"top {MAX_SERIES} of {len(names)} methods by mean over environments")
            names = names[:MAX_SERIES]
        table = table.loc[names]
        table = table[table.notna().any(axis=1)]
        if table.empty:
            continue
        capped = f" Capped at {MAX_SERIES}: {'; '.join(notes)}." if notes else ""
        what = "method" if single_model else "model \u00b7 method"
        caption = (
            f"{board.title}, T={_format_temperature(float(temperature))}: {_label(board, main)} "
            f"({_direction(board, main)[1]}) per {what} (rows, best mean first) and environment "
            f"(columns); grey = undefined"
            + ("; cells with several seeds show their mean" if averaged else "")
            + f".{capped}"
        )
        figures.append((caption, _heatmap_png(board, float(temperature), table)))
    return figures


# ------------------------------------------------------------ all figures


def make_figures(report: SuiteReport, kinds: Iterable[str] | None = None) -> list[tuple[str, bytes]]:
    """(caption, PNG bytes) for every figure whose data is present.

    Per track, in FIGURE_KINDS order: the main-metric bar chart per table group
    (every track); for decode, metrics vs temperature per dataset (with at least
    two temperatures), per-position acceptance per group (with accept_rate@i
    columns), and, with samples, tau histograms and headroom per group; for
    qalign, best method per family and environment, and the method x environment
    heatmap, per temperature. `kinds` restricts the output to some of FIGURE_KINDS.
    """
    wanted = set(FIGURE_KINDS if kinds is None else kinds)
    unknown = wanted - set(FIGURE_KINDS)
    if unknown:
        raise ValueError(f"unknown figure kinds: {', '.join(sorted(unknown))}")
    figures = []
    for board in report.tracks:
        rows = _prepared_rows(board)
        groups = _rank(board, rows)
        if "ranking" in wanted:
            figures += _ranking_figures(board, groups)
        if board.track == "decode":
            if "temperature" in wanted:
                figures += _temperature_figures(board, rows)
            if "acceptance" in wanted:
                figures += _acceptance_figures(board, groups)
        if wanted & {"tau_histogram", "headroom"} and groups:
            samples = _prepared_samples(board)
            if "tau_histogram" in wanted:
                figures += _histogram_figures(board, groups, _tau_by_cell(samples))
            if "headroom" in wanted:
                figures += _headroom_figures(board, _headrooms(board))
        if board.track == "qalign":
            if "family" in wanted:
                figures += _family_figures(board, rows)
            if "heatmap" in wanted:
                figures += _heatmap_figures(board, rows)
    return figures
