"""The `qval` command line (typer + rich): a thin layer over qval.api, qval.results and qval.report."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import typer
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from . import __version__
from .cli_common import (
    JSON_OPT,
    LIMIT_OPT,
    MODEL_OPT,
    QUIET_OPT,
    RESULTS_OPT,
    SET_OPT,
    app,
    emit_json,
    err,
    out,
    writing,
)
from .errors import PluginError, QvalError, UsageError
from .registry import KINDS, NO_DOCSTRING, REGISTRY, params_text, singular


def _version(value: bool):
    if value:
        out.print(f"qval {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
):
    pass


@app.command("list")
def list_plugins(
    kind: str | None = typer.Argument(None, help=f"One of: {', '.join(KINDS)}. Default: all."),
    params: bool = typer.Option(False, "--params", help="Also show each plugin's parameters: type, default, bounds."),
    as_json: bool = JSON_OPT,
):
    """List plugins by kind, one line each (its docstring's first sentence). A plugin that fails to import is shown
    with a warning. --json always includes each plugin's description and parameters."""
    rows = [e.listing() for e in REGISTRY.entries(kind)]
    if as_json:
        emit_json(rows)
        return
    table = Table("kind", "name", "description", "distribution", "status", *(["params"] if params else []))
    for row in rows:
        problem = row["error"]
        cells = [row["kind"], row["name"], escape(row["description"] or NO_DOCSTRING), row["distribution"]]
        cells.append(f"[yellow]warning: {escape(problem)}[/]" if problem else "ok")
        table.add_row(*cells, *([escape(params_text(row["params"]))] if params else []))
        if problem:
            err.print(f"[yellow]warning:[/] {singular(row['kind'])} '{row['name']}' fails to import: {escape(problem)}")
    out.print(table)


@app.command()
def plugins(
    check: str | None = typer.Option(
        None,
        "--check",
        metavar="[KIND:]NAME",
        help="Run qval.testing's contract check on one plugin and print each rule it passed (exit 1 on a broken one).",
    ),
    model: str = typer.Option(
        "smollm2-135m-instruct", "--model", help="With --check: the model source that model-using plugins run on."
    ),
    as_json: bool = JSON_OPT,
):
    """Show every plugin with its kind, distribution and version, importing each to check that its class's `name`
    is its entry-point name. A mismatch is an error (exit 2); a plugin that fails to import is a warning."""
    if check is not None:
        _check_plugin(check, model, as_json)
        return
    rows = []
    for e in REGISTRY.entries():
        warning = e.check()  # an import failure: `qval list` warns about it too, and using the plugin fails
        rows.append((e, warning, None if warning else REGISTRY.name_problem(e)))
    mismatched = [problem for _, _, problem in rows if problem]
    if as_json:
        emit_json(
            [
                {
                    "name": e.name,
                    "kind": e.kind,
                    "distribution": e.distribution,
                    "version": e.version,
                    "target": e.target,
                    "error": problem,
                    "warning": warning,
                }
                for e, warning, problem in rows
            ]
        )
    else:
        table = Table("name", "kind", "distribution", "version", "target", "status")
        for e, warning, problem in rows:
            status = (
                "[red]error: name mismatch[/]"
                if problem
                else (f"[yellow]warning: {escape(warning)}[/]" if warning else "ok")
            )
            table.add_row(e.name, e.kind, e.distribution, e.version, e.target, status)
        out.print(table)
    for problem in mismatched:
        err.print(f"[red]error:[/] {escape(problem)}", soft_wrap=True)
    if mismatched:
        raise PluginError(f"{len(mismatched)} plugin(s) declare a name other than their entry point's")


def _check_plugin(spec: str, model: str, as_json: bool) -> None:
    from .testing import check_registered

    report, problem = check_registered(spec, model)
    if as_json:
        emit_json({"plugin": spec, "passed": report.passed if report else [], "ok": problem is None, "error": problem})
    elif report is not None:
        out.print(escape(str(report)), soft_wrap=True)
    if problem is not None:
        raise QvalError(f"{spec} breaks its contract: {escape(problem)}")


@app.command()
def plan(
    suite: Path = typer.Argument(..., help="Suite YAML file."),
    results: Path = RESULTS_OPT,
    emit_manifest: bool = typer.Option(
        False, "--emit-manifest", help="Write RESULTS/plans/<plan_id>.json for an external scheduler."
    ),
    limit: int | None = LIMIT_OPT,
    sets: list[str] = SET_OPT,
    models: list[str] = MODEL_OPT,
    as_json: bool = JSON_OPT,
):
    """Validate a suite and show its cells (todo/done), grouped into shards by model. Writes nothing unless
    --emit-manifest: then any scheduler can run `qval worker --plan ID --shard I` per shard and `qval ingest`."""
    from .api import cell_status, plan_suite
    from .store.parts import partial_progress

    p = plan_suite(suite, sets, models, limit)
    done = cell_status(p, results)
    # An unfinished cell a run left samples of: '12/40 samples', or '12 samples' when its size was never recorded
    # (read from its parts; nothing is written)
    partial = {}
    for cid in (c for c, d in done.items() if not d):
        if held := partial_progress(results, cid):
            partial[cid] = f"{held[0]}/{held[1]} samples" if held[1] else f"{held[0]} samples"
    if as_json:
        with writing(results):
            path = p.write(results) if emit_manifest else None
        emit_json(
            {
                "suite": p.suite,
                "plan_id": p.plan_id,
                "manifest": path,
                "shards": len(p.shards),
                "cells": [
                    {
                        "cell_id": c.cell_id,
                        "shard": s.index,
                        "track": c.track,
                        "model": c.model,
                        "method": c.method,
                        "dataset": c.dataset_label,
                        "temperature": c.temperature,
                        "seed": c.seed,
                        "done": done[c.cell_id],
                        "progress": partial.get(c.cell_id),
                    }
                    for s in p.shards
                    for c in (p.cells[i] for i in s.cell_ids)
                ],
            }
        )
        return
    if emit_manifest:
        with writing(results):
            path = p.write(results)
        out.print(
            f"wrote {path} ({len(p.shards)} shard(s)); run each with: qval worker --plan {p.plan_id} "
            f"--shard I --results {results}"
        )
    table = Table(
        "shard",
        "cell_id",
        "track",
        "model",
        "method",
        "dataset",
        "T",
        "seed",
        "status",
        title=f"suite {p.suite}: {len(p.cells)} cells, {len(p.shards)} shards, plan {p.plan_id}",
    )
    for shard in p.shards:
        for cid in shard.cell_ids:
            c = p.cells[cid]
            table.add_row(
                str(shard.index),
                cid,
                c.track,
                c.model or "–",
                c.method,
                c.dataset_label,
                f"{c.temperature:g}",
                str(c.seed),
                "[green]done[/]" if done[cid] else partial.get(cid, "todo"),
            )
    out.print(table)
    n_done, n_partial = sum(done.values()), sum(1 for v in partial.values() if v)
    out.print(
        f"{n_done} done, {len(done) - n_done} to do"
        + (f" ({n_partial} partly done: a run resumes them after their kept samples)" if n_partial else "")
    )


@app.command()
def run(
    suite: Path = typer.Argument(..., help="Suite YAML file."),
    results: Path = RESULTS_OPT,
    workers: int = typer.Option(1, "--workers", min=1, max=256, help="Worker processes for untimed shards."),
    runner: str = typer.Option("local", "--runner", help="Runner plugin (see `qval list runners`)."),
    runner_opt: list[str] = typer.Option(
        [],
        "--runner-opt",
        help="KEY=VALUE for the runner, repeatable: "
        "local: gpus=0,1; submitit: cluster=slurm|local, partition=…, "
        "gpus_per_shard=1, cpus_per_shard=8, timeout_min=240, "
        "array_parallelism=16, mem_gb=64.",
    ),
    require_idle: bool = typer.Option(
        False,
        "--require-idle",
        help="Refuse to time under load: wait for an "
        "idle machine before starting, and re-time any decode turn timed while "
        "other processes used the cores (they include other workers: use "
        "--workers 1 for timed suites).",
    ),
    allow_failures: bool = typer.Option(
        False,
        "--allow-failures",
        help="Exit 0 even when cells errored (a plugin raised or timed out) or did not finish; by default exit 4.",
    ),
    idle_timeout: float = typer.Option(
        300.0,
        "--idle-timeout",
        min=0,
        help="Seconds --require-idle waits for "
        "an idle machine before it gives up (exit 2 at the start; a failed "
        "sample, with the reason, during the run).",
    ),
    limit: int | None = LIMIT_OPT,
    sets: list[str] = SET_OPT,
    models: list[str] = MODEL_OPT,
    quiet: bool = QUIET_OPT,
    as_json: bool = JSON_OPT,
):
    """Run every cell of a suite that is not done yet, then ingest the results into DuckDB."""
    import signal

    from .api import run_suite
    from .progress import RunProgress, interrupted_message

    quiet = quiet or as_json
    bad = [o for o in runner_opt if "=" not in o]
    if bad:
        raise UsageError(f"--runner-opt takes KEY=VALUE, got {bad[0]!r}")
    options = dict(o.split("=", 1) for o in runner_opt)

    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=err,
        transient=False,
    )
    tasks = {}
    live = err.is_terminal  # a terminal keeps the live bars; a pipe or file gets plain progress lines on stdout
    tracker: dict = {}

    def on_start(p, done, shards):
        todo = sum(not d for d in done.values())
        tracker["plan"] = p
        if not quiet:
            out.print(f"suite {p.suite}: {len(p.cells)} cells, {todo} to run in {len(shards)} shard(s)")
            tracker["run"] = RunProgress(
                p,
                [c for c, d in done.items() if not d],
                lambda line: out.print(line, markup=False, highlight=False, soft_wrap=True),
                periodic=not live,
            )
            if live:
                progress.start()
        tasks["cells"] = progress.add_task("cells", total=todo)
        tasks["samples"] = progress.add_task("samples", total=0)

    def on_event(shard, event):
        kind = event.get("event")
        if "run" in tracker:
            tracker["run"].event(event)  # the per-cell line, and the counts of the periodic one
        if kind == "cell_start":
            t = progress.tasks[tasks["samples"]]
            progress.update(tasks["samples"], total=(t.total or 0) + event["total"], advance=event["done"])
        elif kind == "sample":
            progress.advance(tasks["samples"])
        elif kind in ("cell_done", "cell_failed"):
            progress.advance(tasks["cells"])
            if kind == "cell_failed" and "run" not in tracker:
                progress.console.print(f"[red]cell {event.get('cell')} failed:[/] {event.get('error')}")
        elif kind == "worker_failed":
            progress.console.print(f"[red]shard {shard} stopped:[/] {event.get('error')}")

    with writing(results):
        try:
            summary = run_suite(
                suite,
                results,
                workers=workers,
                runner=runner,
                on_event=on_event,
                on_start=on_start,
                runner_options=options,
                require_idle=idle_timeout if require_idle else None,
                sets=sets,
                models=models,
                limit=limit,
            )
        except (KeyboardInterrupt, SystemExit) as exc:
            # The runner has stopped the workers by now: what is on disk is what the run kept.
            _stop_progress(progress, tracker)
            sigterm = isinstance(exc, SystemExit) and exc.code == 128 + signal.SIGTERM
            if "plan" in tracker and (sigterm or isinstance(exc, KeyboardInterrupt)):
                how = "terminated (SIGTERM)" if sigterm else "interrupted"
                counts = tracker["run"].reported() if "run" in tracker else None
                err.print(interrupted_message(tracker["plan"], results, how, counts), markup=False, soft_wrap=True)
            if isinstance(exc, KeyboardInterrupt):
                raise typer.Exit(130) from None
            raise
        finally:
            _stop_progress(progress, tracker)
    ing = summary.ingest
    if as_json:
        emit_json(
            {
                "suite": summary.plan.suite,
                "plan_id": summary.plan.plan_id,
                "run_id": summary.run_id,
                "cells": summary.cells_total,
                "cells_run": summary.cells_todo,
                "failed_shards": summary.failed_shards,
                "failed_cells": summary.failed_cells,
                "quarantined": [str(q) for q in summary.quarantined + ing.quarantined],
                "ingested_cells": ing.cells_ingested,
                "ingested_rows": ing.rows,
                "problem_cells": summary.problems,
            }
        )
        raise typer.Exit(1 if summary.failed_shards else (4 if summary.problems and not allow_failures else 0))
    for q in summary.quarantined:
        err.print(f"[yellow]quarantined unreadable part[/] {q}; its cell was recomputed")
    if summary.run_id is None:
        out.print(f"nothing to run: all {summary.cells_total} cells of suite {summary.plan.suite} are done")
    if not quiet:
        out.print(
            f"ingested {ing.cells_ingested} cell(s), {ing.rows} rows, {ing.metrics_computed} metric value(s) "
            f"into {results / 'qval.duckdb'}"
        )
    for q in ing.quarantined:
        err.print(f"[yellow]quarantined corrupt part[/] {q}; its cell will be recomputed on the next run")
    for problem in summary.problems:
        err.print(
            f"[red]cell {problem['cell']}[/] "
            + escape(f"({problem['method']} on {problem['dataset']}): {problem['problem']}"),
            highlight=False,
        )
        for reason in problem["reasons"]:
            err.print(f"    {reason}", markup=False, highlight=False)
    if summary.failed_shards:
        err.print(
            f"[red]{len(summary.failed_shards)} shard(s) failed[/]; logs in {results / 'logs' / summary.run_id}; "
            "re-run the same command to resume"
        )
        raise typer.Exit(1)
    if summary.problems and not allow_failures:
        err.print(
            f"{len(summary.problems)} cell(s) with errors: exit 4 (--allow-failures keeps 0). Finished samples "
            "are kept; re-running retries unfinished cells only"
        )
        raise typer.Exit(4)


def _stop_progress(progress: Progress, tracker: dict) -> None:
    if progress.live.is_started:  # stopping bars never drawn (no terminal) would print an empty line
        progress.stop()
    if "run" in tracker:
        tracker["run"].stop()


@app.command()
def worker(
    plan_id: str = typer.Option(..., "--plan", help="Plan id (or path of a plan manifest)."),
    shard: int = typer.Option(..., "--shard", min=0, help="Shard index in the plan."),
    results: Path = RESULTS_OPT,
    run_id: str = typer.Option("external", "--run-id", help="Label stored with the cells this worker runs."),
):
    """Run one shard of an emitted plan (for SLURM arrays or any scheduler). Writes parts only, never the
    database: run `qval ingest` once the shards are done. Re-running resumes where the shard stopped."""
    from .api import read_plan_file
    from .stopping import install_worker_handlers
    from .worker import run_shard

    if not plan_id.endswith(".json") and not plan_id.isalnum():  # an id names a file under RESULTS/plans, nothing else
        raise UsageError(f"--plan {plan_id!r} is neither a plan id (letters and digits) nor a .json manifest path")
    path = Path(plan_id) if plan_id.endswith(".json") else results / "plans" / f"{plan_id}.json"
    p = read_plan_file(path)
    if shard >= len(p.shards):
        raise UsageError(f"--shard {shard} is out of range: plan {p.plan_id} has {len(p.shards)} shard(s)")
    # A scheduler's SIGTERM (or a Ctrl-C) unwinds so the running cell writes its finished samples; a second one
    # during that write is ignored (qval.stopping), the scheduler's SIGKILL still ends it.
    install_worker_handlers()
    with writing(results):
        code = run_shard(p, shard, results, run_id)
    raise typer.Exit(code)


@app.command("ingest")
def ingest_cmd(results: Path = RESULTS_OPT, quiet: bool = QUIET_OPT, as_json: bool = JSON_OPT):
    """Ingest Parquet parts into RESULTS/qval.duckdb (idempotent; unchanged cells are skipped)."""
    from dataclasses import asdict

    from .api import ingest_results

    with writing(results):
        rep = ingest_results(results)
    if as_json:
        emit_json(asdict(rep))
        return
    if not quiet:
        out.print(
            f"ingested {rep.cells_ingested} cell(s) ({rep.rows} rows), {rep.cells_unchanged} unchanged, "
            f"{rep.metrics_computed} metric values"
        )
    for q in rep.quarantined:
        err.print(f"[yellow]quarantined corrupt part[/] {q}")


@app.command()
def report(
    results: Path = RESULTS_OPT,
    out_dir: Path = typer.Option(Path("reports"), "--out", help="Folder for the leaderboards."),
    suite: str | None = typer.Option(None, "--suite", help="Only this suite (default: all)."),
    quiet: bool = QUIET_OPT,
    as_json: bool = JSON_OPT,
):
    """Write a Markdown leaderboard and a self-contained HTML page per suite."""
    from .report.build import write_reports

    written = write_reports(results, out_dir, suite)
    if as_json:
        emit_json([str(p) for p in written])
    elif not quiet:
        for path in written:
            out.print(f"wrote {path}")


# Registered after the commands above, so that `qval --help` lists running and reporting first.
from . import cli_tools  # noqa: E402,F401


def main() -> None:
    import signal

    from .stopping import exit_on_sigterm

    # SystemExit unwinds through `finally` blocks, so the runner stops its worker processes (none are orphaned).
    signal.signal(signal.SIGTERM, exit_on_sigterm)
    try:
        # Without standalone mode click returns (not raises) the code of typer.Exit: pass it on.
        code = app(standalone_mode=False)
        sys.exit(code if isinstance(code, int) else 0)
    except QvalError as exc:
        # The message is text, not markup: a suite value or a --set value such as [0, 0.7] must show as typed.
        err.print(f"[red]error:[/] {escape(str(exc))}", markup=True, soft_wrap=True)
        sys.exit(exc.exit_code)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except (typer.Abort, KeyboardInterrupt):
        err.print("aborted")
        sys.exit(130)
    except Exception as exc:  # click usage errors and anything unexpected: a message, never a traceback
        # Typer may vendor its own copy of click, so usage errors are recognised by class, from either copy.
        if any(cls.__name__ == "ClickException" for cls in type(exc).__mro__):
            exc.show()
            sys.exit(exc.exit_code)
        if os.environ.get("QVAL_DEBUG"):
            raise
        err.print(f"[red]internal error:[/] {type(exc).__name__}: {exc} (set QVAL_DEBUG=1 for the traceback)")
        sys.exit(1)
