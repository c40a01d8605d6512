"""A report rebuilt into the folder of the last one reuses what did not change (qval/report/cache.py): drill-down
pages of unchanged cells are not rewritten, knob headroom is computed only for changed sweeps, and the output is byte
for byte that of a fresh build. Data from the benchmarks' synthetic writer: a real plan, real Parquet parts, real
ingest, no model."""

import json
import os
import re
import sys
from pathlib import Path

import pandas as pd
import pytest
from conftest import ROOT, run_qval

sys.path.insert(0, str(ROOT / "benchmarks"))
from _synthetic import decode_suite, planned, rewrite_cell, write_decode_parts  # noqa: E402

from qval.decode import knobs  # noqa: E402
from qval.decode.sweeps import headroom_rows, own_sweeps  # noqa: E402
from qval.report import cache  # noqa: E402
from qval.report.links import FOLDER, page_file  # noqa: E402

OLD = 1_000_000_000  # an mtime no page written by these tests can have
ROWS = 30


def _report(results: Path, out: Path) -> Path:
    proc = run_qval("report", "--results", results, "--out", out)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return out / "bench"


def _ingest(results: Path) -> None:
    proc = run_qval("ingest", "--results", results)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def _age_pages(folder: Path) -> dict[str, int]:
    pages = sorted((folder / FOLDER).glob("*.html"))
    for page in pages:
        os.utime(page, (OLD, OLD))
    return {p.name: p.stat().st_mtime_ns for p in pages}


def _rewritten(folder: Path) -> list[str]:
    return sorted(p.name for p in (folder / FOLDER).glob("*.html") if p.stat().st_mtime_ns != OLD * 10**9)


def _same_report(a: Path, b: Path) -> None:
    """Both folders hold the same report, byte for byte but for the minute it was generated."""
    for name in ("leaderboard.md", "index.html"):
        stamp = re.compile(rb"\d{4}-\d\d-\d\d \d\d:\d\d UTC")
        assert stamp.sub(b"", (a / name).read_bytes()) == stamp.sub(b"", (b / name).read_bytes()), name
    pages = sorted(p.name for p in (a / FOLDER).glob("*.html"))
    assert pages == sorted(p.name for p in (b / FOLDER).glob("*.html"))
    for name in pages:
        assert (a / FOLDER / name).read_bytes() == (b / FOLDER / name).read_bytes(), name


@pytest.fixture()
def synthetic(tmp_path):
    results = tmp_path / "results"
    plan = planned(decode_suite(tmp_path / "bench.yaml", n_policies=3, n_temps=2, n_seeds=1), results)
    write_decode_parts(results, plan, ROWS)
    _ingest(results)
    return tmp_path, results, plan


def test_a_rebuild_after_no_change_rewrites_nothing_and_equals_a_fresh_build(synthetic):
    root, results, plan = synthetic
    folder = _report(results, root / "reports")
    assert len(list((folder / FOLDER).glob("*.html"))) == len(plan.cells)
    figures = sorted((folder / cache.FOLDER / "figures").iterdir())
    assert figures and len(list((folder / cache.FOLDER / "headroom").iterdir())) == 2  # a sweep per temperature
    _age_pages(folder)
    stale = folder / FOLDER / page_file("0" * 64)  # a page of a cell the report no longer shows
    stale.write_text("old")
    _report(results, root / "reports")
    assert _rewritten(folder) == [] and not stale.exists()
    assert sorted((folder / cache.FOLDER / "figures").iterdir()) == figures
    _same_report(folder, _report(results, root / "fresh"))
    # The knob-headroom table tells the sweeps of different seeds apart.
    md = (folder / "leaderboard.md").read_text()
    assert "### Headroom per knob" in md
    assert re.search(r"\| model \| dataset \| T \| seed \| knob \|", md)


def test_a_rebuild_after_one_cell_changed_rewrites_exactly_its_page(synthetic):
    root, results, plan = synthetic
    folder = _report(results, root / "reports")
    before = (folder / "leaderboard.md").read_text()
    _age_pages(folder)
    changed = next(c for c in plan.cells.values() if c.baseline_cell_id and c.temperature)
    rewrite_cell(results, changed.cell_id, ROWS, seed=7)
    _ingest(results)
    _report(results, root / "reports")
    assert _rewritten(folder) == [page_file(changed.cell_id)]
    assert (folder / "leaderboard.md").read_text() != before
    # What was reused and what was recomputed together give exactly a fresh build of the changed results.
    _same_report(folder, _report(results, root / "fresh"))


def test_cached_knob_headroom_equals_a_fresh_computation(synthetic, tmp_path, monkeypatch):
    _, results, _ = synthetic
    fresh = knobs.knob_headroom(results, "bench")  # no report cache active: computed
    assert len(fresh) == 4 and sorted(fresh["seed"].unique()) == [0]  # 2 sweeps x (tau, speedup)
    with cache.using(tmp_path / "rep"):
        first = knobs.knob_headroom(results, "bench")
    loaded = []
    monkeypatch.setattr(knobs, "load_sweeps", lambda r, info, groups: loaded.extend(groups) or [])
    with cache.using(tmp_path / "rep"):
        stored = knobs.knob_headroom(results, "bench")
    assert loaded == []  # every sweep came from the cache: no sample was read
    pd.testing.assert_frame_equal(stored, fresh)
    pd.testing.assert_frame_equal(first, fresh)
    # The same numbers as the sweeps' own computation (the cache stores CIs as lists, NumPy scalars as numbers).
    direct = headroom_rows(own_sweeps(results, "bench"))
    assert direct.columns.tolist() == fresh.columns.tolist()
    exact = lambda frame: json.dumps(frame.to_dict("records"), default=lambda v: v.item())  # noqa: E731
    assert exact(direct) == exact(fresh)  # NaN as NaN, every float to the last bit


def test_a_damaged_cache_entry_is_computed_again(synthetic, tmp_path):
    _, results, _ = synthetic
    with cache.using(tmp_path / "rep"):
        fresh = knobs.knob_headroom(results, "bench")
    entries = sorted((tmp_path / "rep" / cache.FOLDER / "headroom").glob("*.json"))
    assert entries
    for entry in entries:
        entry.write_text('{"truncated": ')  # damaged outside qval
    with cache.using(tmp_path / "rep"):
        again = knobs.knob_headroom(results, "bench")
    pd.testing.assert_frame_equal(again, fresh)
    assert all(json.loads(entry.read_text()) for entry in entries)  # rewritten whole


def test_work_done_by_worker_processes_equals_work_done_in_process(synthetic, tmp_path, monkeypatch):
    """A large report renders its drill-down pages and computes its knob headroom in worker processes while it
    draws its figures; the pages and the report are the same bytes as one process writes. A worker that fails
    leaves its work to the report's process. A report that fails meanwhile stops its workers and raises its own
    error."""
    from qval.report import background, build, drilldown

    _, results, plan = synthetic
    monkeypatch.setenv("QVAL_REPORT_WORKERS", "0")
    build.write_reports(results, tmp_path / "serial")
    # These few samples would not start workers.
    monkeypatch.setattr(drilldown, "PARALLEL_MIN_SAMPLES", 0)
    monkeypatch.setattr(background, "WORKER_MIN_SAMPLES", 0)
    monkeypatch.setenv("QVAL_REPORT_WORKERS", "2")
    started, workers = [], []
    real_spawn = background.spawn

    def spawn(module, *argv):
        proc = real_spawn(module, *argv)
        started.append(module)
        workers.append(proc.pid)
        return proc

    monkeypatch.setattr(background, "spawn", spawn)
    build.write_reports(results, tmp_path / "parallel")
    assert sorted(started) == ["qval.report.background"] + ["qval.report.page_worker"] * 2
    assert len(list((tmp_path / "parallel" / "bench" / FOLDER).glob("*.html"))) == len(plan.cells)
    _same_report(tmp_path / "serial" / "bench", tmp_path / "parallel" / "bench")
    headroom = sorted((tmp_path / "parallel" / "bench" / cache.FOLDER / "headroom").glob("*.json"))
    assert headroom  # the worker's rows went into the report's cache, as rows computed in process do

    # A worker that fails (here: no Python to run it) leaves its work to the report's process: the same report.
    monkeypatch.setattr(background.sys, "executable", "/bin/false")
    build.write_reports(results, tmp_path / "fallback")
    _same_report(tmp_path / "serial" / "bench", tmp_path / "fallback" / "bench")
    monkeypatch.undo()
    monkeypatch.setattr(drilldown, "PARALLEL_MIN_SAMPLES", 0)
    monkeypatch.setattr(background, "WORKER_MIN_SAMPLES", 0)
    monkeypatch.setenv("QVAL_REPORT_WORKERS", "2")
    monkeypatch.setattr(background, "spawn", spawn)

    def broken(report):
        raise RuntimeError("figure failed")

    monkeypatch.setattr(build, "render_report", broken)
    started.clear()
    with pytest.raises(RuntimeError, match="figure failed"):
        build.write_reports(results, tmp_path / "failed")
    assert "qval.report.background" in started and "qval.report.page_worker" in started
    for pid in workers:  # every worker has ended, and was waited for (no zombie left)
        with pytest.raises(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)

    # Interrupted while it waits for its page workers (Ctrl-C after the report itself was written): they are
    # stopped too.
    monkeypatch.undo()
    monkeypatch.setattr(drilldown, "PARALLEL_MIN_SAMPLES", 0)
    monkeypatch.setenv("QVAL_REPORT_WORKERS", "2")
    monkeypatch.setattr(background, "spawn", spawn)

    def interrupted(results, folder, cell_ids):  # this process's share of the pages, rendered first in finish
        raise KeyboardInterrupt

    monkeypatch.setattr(drilldown, "render_pages", interrupted)
    started.clear()
    workers.clear()
    with pytest.raises(KeyboardInterrupt):
        build.write_reports(results, tmp_path / "interrupted")
    assert started.count("qval.report.page_worker") == 2
    for pid in workers:
        with pytest.raises(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)


def test_a_report_knows_adaptive_cells_from_the_cells_table_without_importing_policy_code(synthetic, tmp_path):
    """Planning records each cell's ``adaptive`` flag (Cell.adaptive), so a report of a decoding suite imports no
    policy code (and no torch, two seconds of a report's start); a cell planned before the flag existed (NULL) is
    filled by the next ingest of its plan, and until then its policy's class decides."""
    import subprocess

    from qval import results as R
    from qval.cell import make_cell
    from qval.decode.captured import is_adaptive
    from qval.registry import REGISTRY
    from qval.store.db import connect_writer

    _, results, _ = synthetic
    code = (
        "import sys; from qval.report.build import write_reports; "
        "write_reports(sys.argv[1], sys.argv[2]); print('torch' in sys.modules)"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, str(results), str(tmp_path / "rep")], capture_output=True, text=True
    )
    assert proc.returncode == 0 and proc.stdout.strip() == "False", proc.stderr

    assert R.cells(results)["adaptive"].eq(False).all()  # prompt-lookup: recorded, not adaptive
    con = connect_writer(results)
    con.execute("UPDATE cells SET adaptive = NULL")  # as a database migrated from before the flag
    con.close()
    _ingest(results)
    assert R.cells(results)["adaptive"].eq(False).all()

    dynamic_exit, dataset = REGISTRY.get("policies", "dynamic-exit"), REGISTRY.get("datasets", "spec-bench")
    cell = make_cell("decode", "m", {}, dynamic_exit, {}, dataset, {}, 0.0, 0, {})
    assert cell.adaptive is True and cell.family == "self-speculative"  # adaptive by its class, not its family
    assert is_adaptive("dynamic-exit", "self-speculative", None)  # no flag recorded: the class decides
    assert not is_adaptive("prompt-lookup", "n-gram", None)
    assert is_adaptive("anything", "adaptive", False)  # the adaptive family always is
