"""Drill-down pages: one static page per leaderboard row listing that cell's samples (qval.samples_view), linked
from the row's method name. Q-alignment: each state with its candidates, reference Q, scores and the model's
requests (those of a batch of points on its first point; those made while preparing the cell at the top), sortable
by rank disagreement. Decoding: each turn's text with the accepted draft tokens highlighted
(where the per-step spans were stored) and its acceptance per target step.

Same design as the leaderboard (html.py): offline, its stylesheet and its one hash-pinned script (whose table
sorting these pages reuse) inlined, the same Content-Security-Policy, and every value escaped by Jinja2's autoescape:
a model reply is text, never markup.
"""

from __future__ import annotations

from pathlib import Path

from jinja2 import Environment, FileSystemLoader, StrictUndefined
from markupsafe import Markup

from .. import results as R
from .. import samples_view
from .html import CSP, CSS, SCRIPT
from .links import FOLDER, page_file

MAX_PAGE_SAMPLES = 500  # a page lists the first ones and says so; `qval samples CELL --json` has them all
_HERE = Path(__file__).parent
_CELL_CSS = (_HERE / "static" / "cell.css").read_text(encoding="utf-8")


def _num(value) -> str:
    return "–" if value is None else f"{value:.4g}"


_ENV = Environment(
    loader=FileSystemLoader(_HERE / "templates"),
    autoescape=True,
    undefined=StrictUndefined,
    finalize=lambda v: "–" if v is None else v,
    trim_blocks=True,
    lstrip_blocks=True,
    keep_trailing_newline=True,
)
_ENV.filters["num"] = _num


def render(frame, limit: int | None = MAX_PAGE_SAMPLES) -> str:
    """The page of one cell from its samples (results.cell_samples, read with ``limit``)."""
    info = {k: samples_view.plain(v) for k, v in frame.attrs["cell"].items()}
    kind = samples_view.shape(info["track"])
    shown = frame["sample_id"].nunique() if len(frame) else 0
    return _ENV.get_template("cell.html.j2").render(
        cell=info,
        kind=kind,
        shown=shown,
        total=info.get("n_samples") or shown,
        limit=limit,
        prepared=samples_view.prepare_requests(frame),
        states=samples_view.states(frame) if kind == "states" else [],
        turns=samples_view.turns(frame) if kind == "turns" else [],
        columns=list(frame.columns) if kind == "rows" else [],
        rows=samples_view.records(frame) if kind == "rows" else [],
        css=Markup(CSS + _CELL_CSS),
        script=Markup(SCRIPT),
        csp=Markup(CSP),
    )


def write_pages(results, target: Path, cell_ids) -> list[Path]:
    """Write the page of each cell under ``target/cells/``; returns the paths."""
    folder = Path(target) / FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for cell_id, frame in R.cells_samples(cell_ids, results, MAX_PAGE_SAMPLES).items():
        path = folder / page_file(cell_id)
        path.write_text(render(frame), encoding="utf-8")
        written.append(path)
    return written
