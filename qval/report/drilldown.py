"""Drill-down pages: one static page per leaderboard row listing that cell's samples (qval.samples_view), linked
from the row's method name. Q-alignment: each state with its candidates, reference Q, scores and the model's
requests (those of a batch of points on its first point; those made while preparing the cell at the top), sortable
by rank disagreement. Decoding: each turn's text with the accepted draft tokens highlighted
(where the per-step spans were stored) and its acceptance per target step.

Same design as the leaderboard (html.py): offline, its stylesheet and its one hash-pinned script (whose table
sorting these pages reuse) inlined, the same Content-Security-Policy, and every value escaped, by Jinja2's autoescape
or, in the decoding table's rows (built in Python for speed), by ``_escaped``: a model reply is text, never markup.
"""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

from jinja2 import Environment, FileSystemLoader, StrictUndefined
from markupsafe import Markup

from .. import results as R
from .. import samples_view
from ..cell import TRAITS
from ..store.parts import write_json_atomic
from . import background, cache
from .html import CELL_CSS, CSP, SCRIPT
from .links import FOLDER, page_file

MAX_PAGE_SAMPLES = 500  # a page lists the first ones and says so; `qval samples CELL --json` has them all
_HERE = Path(__file__).parent


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


def _escaped(text: str) -> str:
    """``markupsafe.escape(text)`` as a plain string, character for character (tests/test_samples.py checks): without
    building a Markup object per piece, which cost more than the escaping over a report's million pieces."""
    return (
        text.replace("&", "&amp;").replace(">", "&gt;").replace("<", "&lt;").replace("'", "&#39;").replace('"', "&#34;")
    )


def _text(value) -> str:
    """A value as the template writes ``{{ value }}``: None as "–" (the environment's finalize), anything else as
    its string, escaped (an int's needs none)."""
    if type(value) is int:
        return str(value)
    return "–" if value is None else _escaped(str(value))


# Stand-ins for a mark's tags while a turn's text is escaped in one pass; a text that holds one is escaped piece by
# piece instead.
_OPEN, _CLOSE = "\x00", "\x01"


def _highlight(segments: list[tuple[str, bool]]) -> str:
    """A turn's text with its accepted draft tokens marked, every piece escaped. The whole text is escaped at once,
    the marks standing in as characters escaping leaves alone: per piece, the escaping was a third of a page."""
    marked = _escaped("".join([_OPEN + piece + _CLOSE if accepted else piece for piece, accepted in segments]))
    marks = sum(1 for _, accepted in segments if accepted)
    if marked.count(_OPEN) == marks and marked.count(_CLOSE) == marks:  # no stand-in came from the text itself
        return marked.replace(_OPEN, '<mark class="acc">').replace(_CLOSE, "</mark>")
    return "".join(
        f'<mark class="acc">{_escaped(piece)}</mark>' if accepted else _escaped(piece) for piece, accepted in segments
    )


def _turn_row(i: int, t: samples_view.Turn) -> str:
    """One turn's row of the table, every value escaped: the bytes the template's loop wrote (tests/test_samples.py
    compares the two). ``turn``, ``accepted`` and ``drafted`` are ints (samples_view.turns): no escaping needed."""
    steps = t.steps_text  # empty where no step is listed
    if t.error:
        output = f'<span class="err">{_text(t.error)}</span>'
    else:
        output = (
            f'<pre class="out">{_highlight(t.segments)}</pre>'
            + ('<p class="note">text capped at its stored length</p>' if t.capped else "")
            + ("" if t.highlighted else '<p class="note">no per-step spans stored: not highlighted</p>')
            + (
                f'<details><summary>per step</summary><div class="steps">{_escaped(steps)}</div></details>'
                if steps
                else ""
            )
        )
    tau = t.tau
    tau_key = "" if tau is None else f"{tau:.6f}"
    return (
        f'<tr data-i="{i}"><td class="name">{_text(t.sample_id)}</td>'
        f'<td class="num" data-sort="{t.turn}">{t.turn}</td><td class="name">{_text(t.category)}</td>'
        f'<td class="num" data-sort="{_sort_key(t.new_tokens)}">{_text(t.new_tokens)}</td>'
        f'<td class="num" data-sort="{_sort_key(t.target_steps)}">{_text(t.target_steps)}</td>'
        f'<td class="num" data-sort="{tau_key}">{_num(tau)}</td>'
        f'<td class="num" data-sort="{t.accepted}">{t.accepted} / {t.drafted}</td><td>{output}</td></tr>\n'
    )


def _sort_key(value) -> str:
    """A ``data-sort`` attribute's value: empty for None, else the value's text."""
    return "" if value is None else _text(value)


def _turn_rows(turns: list[samples_view.Turn]) -> Markup:
    """The rows of a decoding cell's table. Built in Python, one string per row, not by a template loop: the loop's
    attribute lookups and an escape (and a Markup object) per value were half of a page's rendering."""
    return Markup("".join([_turn_row(i, t) for i, t in enumerate(turns)]))


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
        turn_rows=_turn_rows(samples_view.turns(frame)) if kind == "turns" else Markup(),
        columns=list(frame.columns) if kind == "rows" else [],
        rows=samples_view.records(frame) if kind == "rows" else [],
        css=Markup(CELL_CSS),  # the stylesheet whose hash the CSP names
        script=Markup(SCRIPT),
        csp=Markup(CSP),
    )


# Everything a page's bytes depend on besides its cell: the code that reads and renders it, and its template and
# static files. A change to any of them rewrites every page.
_PAGE_CODE = (
    "qval.report.drilldown",
    "qval.report.html",
    "qval.samples_view",
    "qval.results",
    str(_HERE / "templates" / "cell.html.j2"),
    str(_HERE / "static" / "cell.css"),
    str(_HERE / "static" / "report.css"),
    str(_HERE / "static" / "report.js"),
)
MANIFEST = "pages.json"  # in the report folder's cache folder: per cell id, the key and size of the page written


def _page_keys(results, cell_ids: list[str]) -> tuple[dict[str, str], dict[str, int]]:
    """Per cell, the key of its page's content (its cells-table row: ingest gives a cell whose samples it replaced a
    new part signature and ingested_at; and the page code's version), and its number of samples."""
    rows = R.cells(results)
    records = {r["cell_id"]: r for r in rows[rows["cell_id"].isin(cell_ids)].to_dict("records")}
    version = [cache.code_version(*_PAGE_CODE), *(metadata.version(m) for m in ("jinja2", "markupsafe"))]
    # Not the method's traits (no page shows them, and a migrated database fills them in later).
    keys = {
        c: cache.key("page", version, MAX_PAGE_SAMPLES, {k: v for k, v in records[c].items() if k not in TRAITS})
        for c in cell_ids
        if c in records
    }
    return keys, {c: int(n) for c, r in records.items() if isinstance(n := r.get("n_samples"), int | float) and n == n}


def write_pages(results, target: Path, cell_ids) -> list[Path]:
    """Write the page of each cell under ``target/cells/``, except a page whose content key is the one recorded when
    it was written (and which is still there, whole); remove the pages of cells not listed. Returns the paths
    written."""
    return start_pages(results, target, cell_ids).finish()


# Below this many samples to render, a worker process (its start and imports, about a second) costs more than it
# saves; above it, pages are rendered by worker processes while the report's own process computes the board.
PARALLEL_MIN_SAMPLES = background.WORKER_MIN_SAMPLES


def page_workers() -> int:
    """Worker processes for pages (background.workers: ``QVAL_REPORT_WORKERS``, else one per core but one)."""
    return background.workers()


def start_pages(results, target: Path, cell_ids, workers: int | None = None) -> PendingPages:
    """``write_pages`` begun: with enough samples to render and ``workers`` (default ``page_workers()``) above 0,
    the pages are rendered by worker processes from now on, and ``finish`` waits for them; otherwise ``finish``
    renders them. Either way the pages are the same bytes."""
    folder = Path(target) / FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    manifest_path = Path(target) / cache.FOLDER / MANIFEST
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (FileNotFoundError, ValueError):
        manifest = {}
    wanted = list(dict.fromkeys(cell_ids))
    keys, sizes = _page_keys(results, wanted)
    current, todo = {}, []
    for cell_id in wanted:
        path, seen = folder / page_file(cell_id), manifest.get(cell_id) or {}
        if cell_id in keys and seen.get("key") == keys[cell_id] and _size(path) == seen.get("size"):
            current[cell_id] = seen
        else:
            todo.append(cell_id)
    pending = PendingPages(Path(results), folder, manifest_path, wanted, keys, current, todo, leftover=list(todo))
    workers = page_workers() if workers is None else workers
    if workers > 0 and sum(min(sizes.get(c, 0), MAX_PAGE_SAMPLES) for c in todo) >= PARALLEL_MIN_SAMPLES:
        pending.start(workers)
    return pending


@dataclass
class PendingPages:
    results: Path
    folder: Path
    manifest_path: Path
    wanted: list[str]
    keys: dict[str, str]
    current: dict[str, dict]
    todo: list[str]
    leftover: list[str]  # the cells this process renders in finish: all of them, unless workers took them
    workers: list[tuple[subprocess.Popen, list[str]]] = field(default_factory=list)

    def start(self, workers: int) -> None:
        # Worker processes as background.py starts them. Cells go round-robin, so that large and small pages share
        # out evenly.
        self.leftover = []
        for i in range(workers):
            chunk = self.todo[i::workers]
            if not chunk:
                continue
            try:
                proc = background.spawn("qval.report.page_worker", str(self.results), str(self.folder))
            except OSError:  # no process to be had (a limit on processes or files): finish renders these here
                self.leftover += chunk
                continue
            self.workers.append((proc, chunk))
            assert proc.stdin is not None
            try:
                proc.stdin.write(json.dumps(chunk).encode())
                proc.stdin.close()
            except OSError:  # it ended before reading (it could not start qval): finish renders its cells here
                pass

    def cancel(self) -> None:
        """Stop the workers (pages they wrote stay, unrecorded: the next build renders them again)."""
        for proc, _ in self.workers:
            background.stop(proc)

    def finish(self) -> list[Path]:
        """Wait for (or render) the pages, then record them and remove the pages of cells no longer shown."""
        try:
            written = render_pages(self.results, self.folder, self.leftover)
            for proc, chunk in self.workers:
                assert proc.stdout is not None
                with proc.stdout:
                    out = proc.stdout.read()
                proc.wait()
                try:
                    paths = [Path(p) for p in json.loads(out)] if proc.returncode == 0 else None
                except ValueError:
                    paths = None
                # A worker that failed (or could not start qval) leaves its cells to this process, which renders
                # them again: the same pages, or the error itself where it has one.
                if paths is None:
                    paths = render_pages(self.results, self.folder, chunk)
                    background.redone(f"drill-down pages of {len(chunk)} cells", proc.returncode)
                written += paths
        except BaseException:  # an error or an interrupt while waiting: no worker outlives the report
            self.cancel()
            raise
        for cell_id in self.todo:
            if cell_id in self.keys:
                self.current[cell_id] = {"key": self.keys[cell_id], "size": _size(self.folder / page_file(cell_id))}
        # The pages of cells no longer shown (a cell left the suite, or the folder held another report's pages).
        keep = {page_file(c) for c in self.wanted}
        for path in self.folder.glob("*.html"):
            if path.name not in keep:
                path.unlink()
        self.manifest_path.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(self.manifest_path, self.current)
        order = {page_file(c): i for i, c in enumerate(self.todo)}
        return sorted(written, key=lambda path: order[path.name])  # in the cells' order, as rendered in one process


def render_pages(results: Path, folder: Path, cell_ids: list[str]) -> list[Path]:
    """Render and write the pages of these cells (in a worker process, or the report's own)."""
    written = []
    for cell_id, frame in R.cells_samples(cell_ids, results, MAX_PAGE_SAMPLES).items():
        path = folder / page_file(cell_id)
        path.write_text(render(frame), encoding="utf-8")
        written.append(path)
    return written


def _size(path: Path) -> int | None:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return None
