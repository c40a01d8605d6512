"""Build per-suite leaderboards from the results database and write them as Markdown and HTML."""

from __future__ import annotations

import hashlib
import json
import re
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from .. import results as R
from ..errors import UsageError
from ..registry import REGISTRY
from ..tracks import RESERVED, all_tracks
from . import background, cache
from .drilldown import PendingPages, start_pages
from .render import SuiteReport, TrackBoard, render_report

_NOT_RECORDED = "not recorded"  # imported results carry no fingerprint of the machine that made them


def _environment(results, suite: str) -> dict[str, str]:
    runs = R.runs(results)
    runs = runs[runs["suite"] == suite]
    env = {"generated": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")}
    if runs.empty:
        return env
    last = runs.iloc[-1]
    fp = json.loads(last["fingerprint"]) if last["fingerprint"] else {}
    packages = fp.get("packages", {})
    env.update(
        {
            "hardware": str(fp.get("hardware") or _NOT_RECORDED),
            "gpu": str(fp.get("gpu") or "none"),
            "cpus allowed": str(fp.get("cpus_allowed") or _NOT_RECORDED),
            "python": str(fp.get("python") or _NOT_RECORDED),
            **{name: str(v) for name, v in packages.items() if v},
            "git_sha": f"{fp.get('git_sha') or _NOT_RECORDED}{' (dirty)' if fp.get('git_dirty') else ''}",
            "runs": ", ".join(runs["run_id"].astype(str).tolist()[-5:]),
        }
    )
    env.update(_conditions(results, suite))
    return env


def _conditions(results, suite: str) -> dict[str, str]:
    """What the suite's cells were measured under beyond the fingerprint (each track's ``conditions``: decoding's
    CPU threads and forward pass), one line per condition: its value, or, where cells differ, each value with its models and a
    warning, since timings taken under different conditions do not compare (a board ranks them side by side)."""
    per_cell: dict[str, dict[str, str]] = {}
    for track in all_tracks():
        per_cell.update(track.conditions(results, suite))
    if not per_cell:
        return {}
    cells = R.cells(results, suite)
    model_of = {
        str(c): f"{m if isinstance(m, str) else '–'} {method}"
        for c, m, method in zip(cells["cell_id"], cells["model"], cells["method"])
    }
    lines = {}
    for name in sorted({n for values in per_cell.values() for n in values}):
        models: dict[str, set[str]] = {}
        for cell_id, values in per_cell.items():
            if name in values:
                models.setdefault(values[name], set()).add(model_of.get(cell_id, "–"))
        if len(models) == 1:
            lines[name] = f"{next(iter(models))} (every cell that recorded it)"
        else:
            each = "; ".join(f"{value}: {', '.join(sorted(m))}" for value, m in sorted(models.items()))
            lines[name] = f"DIFFER between cells ({each}): timings measured with different {name} do not compare"
    return lines


def build_report(
    results, suite: str, rows_ready: Callable[[list[str]], None] | None = None, defer: bool = False
) -> SuiteReport:
    """The suite's report. ``rows_ready`` is called with the cell ids of every board's rows as soon as they are
    known, before each track computes the rest of its board (write_reports starts the rows' pages then). With
    ``defer``, boards may come with fields still being computed (TrackBoard.deferred; SuiteReport.resolve waits)."""
    suites = R.suites(results)
    row = suites[suites["suite"] == suite]
    if row.empty:
        raise UsageError(f"no suite '{suite}' in {results}; known: {', '.join(suites['suite']) or 'none'}")
    config = json.loads(row.iloc[0]["config"])
    tracks = []
    installed = {t.name for t in all_tracks()}
    for key, value in config.items():
        if value and key not in installed and key not in (*RESERVED, "limit"):  # a section of a track not here
            print(
                f"qval: suite {suite}: section '{key}' is left out of the report: no such track is installed",
                file=sys.stderr,
            )
    listed = [(track, section) for track in all_tracks() if (section := config.get(track.name))]
    sections = [(track, section, R.leaderboard(results, suite, track.name)) for track, section in listed]
    if rows_ready is not None:
        rows_ready([c for _, _, rows in sections for c in rows.get("cell_id", [])])
    for track, section, rows in sections:
        # Families of values (per-position acceptance) feed figures; the tables show single-valued metrics.
        metric_classes = {m: cls for m in section["metrics"] if not (cls := REGISTRY.get("metrics", m)).multi}
        tracks.append(
            TrackBoard(
                track=track.name,
                title=track.title or track.name,
                main_metric=section["main_metric"],
                metrics=list(metric_classes),
                higher_is_better={m: cls.higher_is_better for m, cls in metric_classes.items()},
                labels={m: cls.label for m, cls in metric_classes.items()},
                references={m: cls.reference for m, cls in metric_classes.items() if cls.reference is not None},
                rows=rows,
                failures=R.failure_reasons(results, suite, track.name),
                **track.board(results, suite, section, rows),
            )
        )
    report = SuiteReport(suite, row.iloc[0]["description"] or "", _environment(results, suite), tracks)
    if not defer:
        report.resolve()
    return report


def report_folder(name: str) -> str:
    """A suite's report folder name. Suite names are validated at load time; imported or foreign results may hold
    any name, so a name that had to change gets a hash of the original: "a/b" and "a_b" never share a folder, and
    an over-long name is cut."""
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", name).lstrip(".")[:80] or "suite"
    return safe if safe == name else f"{safe}-{hashlib.sha256(name.encode()).hexdigest()[:8]}"


def write_reports(results, out_dir, suite: str | None = None) -> list[Path]:
    results, out_dir = Path(results), Path(out_dir)
    names = [suite] if suite else R.suites(results)["suite"].tolist()
    written = []
    for name in names:
        written += _write_report(results, out_dir / report_folder(name), name)
    return written


def _write_report(results: Path, target: Path, name: str) -> list[Path]:
    # What the last report into this folder computed is reused where its inputs did not change (cache.py).
    with cache.using(target), R.reading(results):  # one read-only connection for all of the report's reads
        target.mkdir(parents=True, exist_ok=True)
        # One drill-down page per leaderboard row (the links document.py puts on the rows' method names), begun as
        # soon as the rows are known: on a large report, worker processes render them meanwhile.
        pages: list[PendingPages] = []
        try:
            # Worker processes (background.py) compute the boards' deferred fields meanwhile; beside() stops any
            # still running when the report fails.
            with background.beside():
                report = build_report(
                    results, name, lambda ids: pages.append(start_pages(results, target, ids)), defer=True
                )
                markdown, page = render_report(report)
            md, html = target / "leaderboard.md", target / "index.html"
            md.write_text(markdown, encoding="utf-8")
            html.write_text(page, encoding="utf-8")
        except BaseException:
            for pending in pages:  # the report failed or was interrupted: stop its page workers, record nothing
                pending.cancel()
            raise
        for pending in pages:
            pending.finish()
    return [md, html]
