"""The table model every report table is built as, once, and that the Markdown and HTML writers both read (after
HELM's Table/Cell, helm/benchmark/presentation/table.py).

A cell keeps its number (value, CI bounds, n) beside the text it reads as; the writers lay cells out by their
column's kind and never format numbers themselves. Text is stored raw: each writer escapes it for its format."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

# text: a name (untrusted; escaped, left-aligned; what the page's filter searches); number: right-aligned, its text
# made by qval.report.format; reason: free text quoted from a failure (untrusted; escaped, left-aligned).
Kind = Literal["text", "number", "reason"]


@dataclass(frozen=True)
class Whisker:
    """A CI drawn on an axis shared by the column: the value's dot and a line from CI low to CI high."""

    value: float
    ci_low: float
    ci_high: float
    axis: tuple[float, float]


@dataclass(frozen=True)
class Cell:
    text: str  # how the cell reads: a name, or a formatted number (format.UNDEFINED when undefined)
    value: float | None = None  # the number behind text; None when not a number or undefined
    ci_low: float | None = None
    ci_high: float | None = None
    n: int | None = None
    n_states: int | None = None  # distinct states behind a count n of evaluation points
    low_n: bool = False  # the CI rests on fewer than stats.LOW_N independent units
    ci_text: str = ""  # the CI as it reads: "[lo, hi]"
    n_text: str = ""  # the counts as they read: "n=N, S states, low n"
    sort: str | None = None  # sort key (the exact number; "" sorts last); None: sorted by its text
    flag: str = ""  # a warning shown after the text (timed under load)
    flag_title: str = ""  # what the warning means
    undefined: bool = False  # an undefined estimate (shown muted)
    whisker: Whisker | None = None
    href: str | None = None  # a relative link the text leads to (HTML only): a row's drill-down page

    @property
    def detail(self) -> str:
        """CI and counts on one line, as Markdown shows them: "[lo, hi] (n=N, S states, low n)"."""
        return " ".join(part for part in (self.ci_text, f"({self.n_text})" if self.n_text else "") if part)


@dataclass(frozen=True)
class Column:
    label: str
    kind: Kind = "text"
    title: str = ""  # what the column holds, as a tooltip
    first: Literal["asc", "desc"] | None = None  # sort direction of a first click: best first
    main: bool = False  # the ranking metric


@dataclass(frozen=True)
class Row:
    cells: list[Cell]
    family: str | None = None  # method family, for grouping rows by family


@dataclass
class Table:
    title: str
    columns: list[Column]
    rows: list[Row]
    name: str  # what kind of table: board, families, failures, headroom, knobs, or a track's (usefulness, ...)
    note: str = ""  # how to read the table, shown above it
    sortable: bool = False
    # A leaderboard table: the (dataset, temperature) group its rows belong to, for filtering.
    dataset: str | None = None
    temperature: str | None = None
