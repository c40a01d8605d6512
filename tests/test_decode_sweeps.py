"""qval's own knob sweeps: found in the database, written in the release format, replayed, and shown as headroom."""

import json

import numpy as np
import pytest
from conftest import run_qval, write_suite

import qval.results as R
from qval.decode import replay
from qval.decode.sweeps import headroom_rows, own_sweeps

SWEEP_SUITE = """\
name: knobs
models: [smollm2-135m-instruct]
decode:
  datasets: [{name: spec-bench, params: {categories: [summarization, coding], limit_per_category: 3, max_turns: 1}}]
  policies:
    - ar
    - {name: prompt-lookup, params: {num_draft: 1}}
    - {name: prompt-lookup, params: {num_draft: 4}}
    - {name: jacobi, params: {num_draft: 3}}
  max_new_tokens: 16
  metrics: [speedup, modelled_speedup, acceptance_length]
"""


@pytest.fixture(scope="module")
def knob_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("knobs")
    suite = write_suite(root / "knobs.yaml", SWEEP_SUITE)
    results = root / "results"
    proc = run_qval("run", suite, "--results", results)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return root, results


def test_a_knob_sweep_is_found_and_its_tables_match_the_samples(knob_run):
    _, results = knob_run
    sweeps = own_sweeps(results, "knobs")
    assert [(s.policy, s.knob) for s in sweeps] == [("prompt-lookup", "num_draft")]  # jacobi has one value
    sweep = sweeps[0]
    assert sweep.fixed_params == {"max_ngram": 3, "min_ngram": 1, "match": "latest"} and sorted(sweep.cells) == [1, 4]
    samples = R.samples(results, "decode", "knobs")
    for value, cell_id in sweep.cells.items():
        rows = samples[samples["cell_id"] == cell_id].set_index("sample_id")
        tau = 1 + rows["accepted"].map(sum) / rows["target_steps"]
        np.testing.assert_allclose(sweep.tables["tau"][value].loc[tau.index].to_numpy(float), tau.to_numpy(float))
    assert sweep.tables["speedup"].shape == (6, 2) and (sweep.tables["speedup"] > 0).all().all()
    assert sweep.feature_names[:3] == ["prefill_entropy", "prefill_top_prob", "log_prompt_tokens"]
    assert sweep.features.shape == (6, 5)  # + one-hot of the two categories


def test_export_writes_the_release_format_and_the_cli_replays_it(knob_run, tmp_path):
    _, results = knob_run
    proc = run_qval("export-sweeps", "--results", results, "--suite", "knobs", "--out", tmp_path / "sweeps")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    folders = sorted(p.parent for p in (tmp_path / "sweeps").rglob("sweep.json"))
    assert [f.name for f in folders] == ["speedup", "tau"]
    tau_dir = folders[1]
    assert sorted(p.name for p in tau_dir.iterdir()) == ["B1.json", "B4.json", "features.json", "sweep.json"]
    meta = json.loads((tau_dir / "sweep.json").read_text())
    assert meta["knob"] == "num_draft" and meta["policy"] == "prompt-lookup" and meta["temperature"] == 0.0
    proc = run_qval("replay", tau_dir, "--json", "--folds", "3")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = json.loads(proc.stdout)
    assert out["knob"] == "num_draft" and out["n_samples"] == 6
    kinds = {r["kind"] for r in out["rows"]}
    assert {"fixed", "best-fixed", "oracle", "selector"} <= kinds
    oracle = next(r for r in out["rows"] if r["kind"] == "oracle")
    best = next(r for r in out["rows"] if r["kind"] == "best-fixed")
    assert oracle["value"] >= best["value"] and oracle["n"] == 6
    # every sample is scored by a model trained without it
    folds = out["selector"]["fold_of_sample"]
    assert sorted(folds) == sorted(replay.load_sweep(tau_dir).table.index)


def test_report_has_a_headroom_row_per_knob_and_metric_with_ci_and_n(knob_run):
    root, results = knob_run
    table = headroom_rows(own_sweeps(results, "knobs"), folds=3)
    assert sorted(table["metric"]) == ["speedup", "tau"]
    for record in table.to_dict("records"):
        assert record["n"] == 6 and record["oracle"] >= record["best_fixed"]
        assert record["oracle_ci"][0] <= record["oracle"] <= record["oracle_ci"][1]
    proc = run_qval("report", "--results", results, "--out", root / "reports")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    md = (root / "reports" / "knobs" / "leaderboard.md").read_text()
    assert "### Headroom per knob" in md and "prompt-lookup.num_draft" in md
    assert "modelled_speedup" in md and "MODELLED" in md
