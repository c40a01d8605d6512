"""How numbers, intervals and names read in a report: one formatter per kind of value, shared by the Markdown
page, the HTML page and the figures."""

from __future__ import annotations

import math
import re

import pandas as pd

from ..stats import LOW_N

UNDEFINED = "\u2013"  # en dash, shown for any undefined number
MAX_LABEL = 60  # characters of a name shown in a figure
SHORT_LABEL = 48  # characters of a heading or filter choice on the page; the full text is its tooltip

# Control characters (NUL, escape sequences) and bidirectional overrides in untrusted text (suite names, model
# replies, plugin labels) could hide or reorder what a report shows: each becomes U+FFFD.
_INVISIBLE = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def text(value: object) -> str:
    """str() of a name, with None/NaN/NA shown as empty rather than 'None'/'nan' and control or bidi-override
    characters replaced."""
    if value is None or value is pd.NA:
        return ""
    if isinstance(value, float) and math.isnan(value):
        return ""
    return _INVISIBLE.sub("\ufffd", str(value))


def short(value: object, limit: int = SHORT_LABEL) -> str:
    """A long label (e.g. a dataset with all its parameters) shortened to `limit` characters so that headings and
    filter menus keep the page's width; the page shows the full label as a tooltip.

    Only the parameter list is cut: what follows it (a cell's ``limit=N``, a group's ``· T=0.7``) tells rows apart
    and always stays. A label without one keeps its start and its end."""
    line = text(value)
    if len(line) <= limit:
        return line
    first, last = line.find("("), line.rfind(")")
    if 0 <= first < last:
        head, params, tail = line[: first + 1], line[first + 1 : last], line[last:]
        room = limit - len(head) - len(tail) - 1
        if room >= 4:
            return head + params[:room] + "\u2026" + tail
    front = (limit - 1) * 2 // 3
    return line[:front] + "\u2026" + line[len(line) - (limit - 1 - front) :]


def one_line(value: object) -> str:
    """A name for a figure: one line and bounded, so long names cannot squeeze the plot."""
    line = " ".join(text(value).splitlines())
    return line if len(line) <= MAX_LABEL else line[: MAX_LABEL - 1] + "\u2026"


def metric(value: float, lo: float, hi: float, n: float, states: float | None = math.nan) -> tuple[str, str, str, bool]:
    """(value, CI, counts, low n) of one estimate: '[lo, hi]' and 'n=N, S states, low n', undefined parts left
    out, both empty when the value is undefined.

    "low n" marks an interval over fewer than LOW_N independent units (distinct states where n counts evaluation
    points): its coverage is checked by simulation, but it is wide and rests on few units."""
    if math.isnan(value):
        return UNDEFINED, "", "", False
    ci = "" if math.isnan(lo) or math.isnan(hi) else f"[{lo:.3f}, {hi:.3f}]"
    counts = []
    low_n = False
    if not math.isnan(n):
        counts.append(f"n={int(n)}")
        units = n
        if states is not None and not math.isnan(states):
            counts.append(f"{int(states)} states")
            units = states
        if units < LOW_N:
            counts.append("low n")
            low_n = True
    return f"{value:.3f}", ci, ", ".join(counts), low_n


def count(value: float) -> str:
    return UNDEFINED if math.isnan(value) else str(int(value))


def temperature(value: float) -> str:
    return UNDEFINED if math.isnan(value) else f"{value:g}"


def number(value: float) -> str:
    return UNDEFINED if math.isnan(value) else f"{value:.3f}"


def p_value(value: float | None) -> str:
    return UNDEFINED if value is None else ("<0.001" if value < 0.001 else f"{value:.3f}")


def percent(value: float) -> str:
    return f"{value:+.1%}"


def knob_value(v: object) -> str:
    # knob values share a float column with decimal knobs (stop thresholds); draft lengths print as integers
    return str(int(v)) if isinstance(v, (int, float)) and float(v).is_integer() else str(v)


def sort_key(value: float) -> str:
    """An HTML data-sort value: the exact number, or empty for undefined (sorted last)."""
    return "" if math.isnan(value) else repr(float(value))


def direction(higher_is_better: dict[str, bool], metric: str) -> tuple[str, str]:
    """(arrow, words) saying which way a metric improves."""
    if higher_is_better.get(metric, True):
        return "\u2191", "higher is better"
    return "\u2193", "lower is better"


def group_title(dataset: str, temp: float) -> str:
    return f"{dataset or UNDEFINED} \u00b7 T={temperature(temp)}"


def bar_labels(rows: pd.DataFrame, with_model: bool = True) -> list[str]:
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
            label += f" \u00b7 seed {count(seed)}"
        if add_cell:
            label += f" \u00b7 {cell}"
        labels.append(one_line(label))
    return labels


def pair_label(model: str, method: str, with_model: bool = True) -> str:
    return one_line(f"{model} \u00b7 {method}" if with_model else method)


def single_model(rows: pd.DataFrame) -> str | None:
    """The model when all rows share one, else None: labels then show the method only
    (text is the main cost of a figure, and the repeated name adds nothing)."""
    models = rows["model"].unique()
    return str(models[0]) if len(models) == 1 else None
