"""The report as one self-contained HTML page: a writer over the document model (document.py), laid out by the
Jinja2 templates in templates/ with autoescaping, its stylesheet and script read from static/ and inlined.

Every string that can come from a model, suite or plugin is untrusted and is escaped by the template engine.
The page carries one script (sortable, filterable tables and grouping by family). It is fixed text, never built
from data, and the page's Content-Security-Policy allows exactly that script by its SHA-256 hash, computed here
from the text inlined; it only reads text and attributes and moves existing rows, so data can never become
markup through it. The stylesheet is pinned the same way, so a style injected into the page would not apply.
"""

from __future__ import annotations

import base64
import hashlib
import html
import math
from dataclasses import dataclass
from pathlib import Path

from jinja2 import Environment, FileSystemLoader, StrictUndefined
from markupsafe import Markup

from . import format as fmt
from .document import CI_NOTE, LOAD_FLAG, LOAD_NOTE, Document
from .table import Whisker

_HERE = Path(__file__).parent


def _sha256(text: str) -> str:
    """The CSP source that allows an inline element with exactly this text."""
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode("utf-8")).digest()).decode("ascii") + "'"


# Inlined as the element's text: a newline, then the file.
CSS = "\n" + (_HERE / "static" / "report.css").read_text(encoding="utf-8")
# The drill-down pages' stylesheet (drilldown.py inlines this same text: the leaderboard's, then cell.css).
CELL_CSS = CSS + (_HERE / "static" / "cell.css").read_text(encoding="utf-8")
SCRIPT = "\n" + (_HERE / "static" / "report.js").read_text(encoding="utf-8")
# Defence in depth: the page loads nothing from outside (images are data: URIs) and runs no script and applies no
# stylesheet but the ones above, each pinned by its hash (the leaderboard and the drill-down pages share this
# policy). No element carries a style="" attribute (the whiskers' SVG uses presentation attributes, which CSP does
# not govern), so none needs 'unsafe-inline' or 'unsafe-hashes'.
CSP = f"default-src 'none'; script-src {_sha256(SCRIPT)}; img-src data:; style-src {_sha256(CSS)} {_sha256(CELL_CSS)}"

_WHISKER_WIDTH, _WHISKER_HEIGHT, _WHISKER_PAD = 120, 14, 4
# CSS classes of each kind of table, and the tables whose note reads as a side note.
_TABLE_CLASS = {
    "board": "board",
    "families": "board",
    "failures": "board failures",
    "headroom": "headroom",
    "knobs": "board knobs",
    "usefulness": "board",
    "label_noise": "board",
    "model_stability": "board",
    "captured": "board knobs",
}
_NOTED = ("headroom", "knobs", "usefulness", "label_noise", "model_stability", "captured")


def _escape(value: object) -> Markup:
    """Every {{ value }} of the templates: markup passes, anything else is normalised (format.text) and escaped
    with the stdlib's entities (so pages keep the bytes they had before templates)."""
    if hasattr(value, "__html__"):
        return Markup(value)
    return Markup(html.escape(fmt.text(value), quote=True))


@dataclass(frozen=True)
class _WhiskerGeometry:
    title: str
    path: str  # the CI line and its caps; empty without a CI
    cx: str
    mid: float = _WHISKER_HEIGHT / 2
    width: int = _WHISKER_WIDTH
    height: int = _WHISKER_HEIGHT


def _whisker_geometry(w: Whisker) -> _WhiskerGeometry:
    """A dot at the value and a line from CI low to CI high, on the column's shared axis."""
    low, high = w.axis
    usable = _WHISKER_WIDTH - 2 * _WHISKER_PAD

    def x(v: float) -> float:
        if high <= low:
            return _WHISKER_WIDTH / 2
        return _WHISKER_PAD + min(max((v - low) / (high - low), 0.0), 1.0) * usable

    mid = _WHISKER_HEIGHT / 2
    title = f"{w.value:.3f}"
    path = ""
    if not (math.isnan(w.ci_low) or math.isnan(w.ci_high)):
        title += f", 95% CI [{w.ci_low:.3f}, {w.ci_high:.3f}]"
        x1, x2 = x(w.ci_low), x(w.ci_high)
        path = f"M{x1:.1f} {mid}H{x2:.1f}M{x1:.1f} {mid - 3}V{mid + 3}M{x2:.1f} {mid - 3}V{mid + 3}"
    return _WhiskerGeometry(title, path, f"{x(w.value):.1f}")


_ENV = Environment(
    loader=FileSystemLoader(_HERE / "templates"),
    autoescape=True,
    finalize=_escape,
    undefined=StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
    keep_trailing_newline=True,
)
_ENV.filters["short"] = fmt.short


def _breakable(value: object) -> Markup:
    """A column label that may wrap after each underscore (metric names are long single words), escaped."""
    return Markup(html.escape(fmt.text(value), quote=True).replace("_", "_<wbr>"))


_ENV.filters["breakable"] = _breakable
_ENV.globals.update(
    short_label=fmt.SHORT_LABEL,
    ci_note=CI_NOTE,
    load_flag=LOAD_FLAG,
    load_note=LOAD_NOTE,
    dash=fmt.UNDEFINED,
    table_class=_TABLE_CLASS,
    noted=_NOTED,
    whisker_geometry=_whisker_geometry,
)


def write(doc: Document, figures: list[tuple[str, bytes]]) -> str:
    """The page, with every figure embedded as a PNG data: URI."""
    return _ENV.get_template("report.html.j2").render(
        doc=doc,
        figures=[(caption, base64.b64encode(png).decode("ascii")) for caption, png in figures],
        css=Markup(CSS),
        script=Markup(SCRIPT),
        csp=Markup(CSP),
    )
