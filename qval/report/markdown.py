"""The report as GitHub-flavoured Markdown: a writer over the document model (document.py)."""

from __future__ import annotations

import re

from . import format as fmt
from .document import CI_NOTE, LOAD_FLAG, LOAD_NOTE, PAIRED_NOTE, Document, Track
from .table import Cell, Column, Table

# Characters that could end a table cell or open inline HTML, an autolink, a
# link, a code span, emphasis or (on GitHub) math. Escaping the backslash too
# keeps a name ending in '\' from escaping the escape that follows it.
_MD_SPECIAL = re.compile(r"([\\|<>\[\]`*$])")


def escape(value: object) -> str:
    """Untrusted text made safe for one line of Markdown (table cell, heading, bullet)."""
    one_line = " ".join(fmt.text(value).splitlines())
    return _MD_SPECIAL.sub(r"\\\1", one_line)


def _row(cells: list[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def _cell(cell: Cell, column: Column) -> str:
    # Numbers are made by qval.report.format and read as they are; names are untrusted text.
    text = cell.text if column.kind == "number" else escape(cell.text)
    return text + (f" {cell.detail}" if cell.detail else "") + (f" {cell.flag}" if cell.flag else "")


def table(t: Table) -> list[str]:
    lines = [
        _row([escape(c.label) for c in t.columns]),
        _row(["---:" if c.kind == "number" else "---" for c in t.columns]),
    ]
    lines += [_row([_cell(cell, column) for cell, column in zip(row.cells, t.columns)]) for row in t.rows]
    return lines


def track(view: Track) -> list[str]:
    lines = [f"## {escape(view.title)}", ""]
    lines += [f"Ranked by **{escape(view.main_metric)}** ({view.ranked_by}).", ""]
    lines += [f"- **{escape(metric)}** {arrow}: {escape(label)}" for metric, arrow, label in view.legend]
    lines += ["", CI_NOTE, ""]
    if view.flagged_under_load:
        lines += [f"**{view.flagged_under_load} cell(s) {LOAD_FLAG}.** {escape(LOAD_NOTE)}", ""]
    if not view.groups:
        return [*lines, "No results.", ""]
    if view.paired:
        lines += [escape(PAIRED_NOTE), ""]
    for group in view.groups:
        lines += [f"### {escape(group.title)}", "", *table(group), ""]
    for extra in view.tables:
        lines += [f"### {escape(extra.title)}", "", escape(extra.note), "", *table(extra), ""]
    return lines


def write(doc: Document) -> str:
    lines = [f"# {escape(doc.title)}", ""]
    if doc.description:
        # A fixed prefix keeps the description from starting a heading or list.
        lines += [f"Description: {escape(doc.description)}", ""]
    if doc.environment:
        lines += [f"- **{escape(k)}**: {escape(v)}" for k, v in doc.environment]
        lines.append("")
    for view in doc.tracks:
        lines += track(view)
    return "\n".join(lines)
