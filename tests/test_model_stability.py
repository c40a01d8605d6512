"""The report's "Method ranking across models" table and `qval model-stability` (qval/qalign/model_stability.py).

The statistic is checked from constructed board rows and per-point values against an independent computation with
scipy (τ-b, and the bootstrap interval recomputed resample by resample), on a constructed case of flipped pairs, and
on what makes a pair incomparable; then through the real CLI on two model sources that load the same SmolLM2 weights
(`smollm2-135m-instruct` and `hf` pointed at its cached folder), where the two orders must agree exactly.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from conftest import model_free_suite, run_qval, usage_error, write_suite
from scipy import stats as sps

from qval.qalign.model_stability import NO_MODEL, model_stability
from qval.qalign.report_tables import model_stability_table
from qval.report import markdown
from qval.stats import N_BOOT

METHODS = ["m1", "m2", "m3", "m4"]


def _board(values: dict[str, dict[str, list[float]]], states: list[str], points: list[str] | None = None):
    """Board rows and per-point units: ``values[model][method]`` per point; model NO_MODEL for a model-free cell."""
    points = points or [f"p{i}" for i in range(len(states))]
    rows, units = [], []
    for model, methods in values.items():
        for method, per_point in methods.items():
            cell = f"{model}/{method}"
            rows.append(
                {"cell_id": cell, "model": model, "method": method, "dataset": "lake", "temperature": 0.0, "seed": 0}
            )
            units += [
                {"cell_id": cell, "unit": p, "cluster": s, "value": v} for p, s, v in zip(points, states, per_point)
            ]
    return pd.DataFrame(rows), pd.DataFrame(units)


def test_tau_ci_and_flips_match_an_independent_scipy_computation():
    rng = np.random.default_rng(7)
    n = 15
    states = [f"s{i // 3}" for i in range(n)]  # three points per state: the bootstrap resamples 5 states
    mu = {"gemma": [0.6, 0.4, 0.3, 0.1], "smol": [0.2, 0.5, 0.35, 0.0]}
    values = {m: {k: list(x + rng.uniform(-0.6, 0.6, n)) for k, x in zip(METHODS, means)} for m, means in mu.items()}
    values["smol"]["m3"][4] = np.nan  # an undefined ρ drops that point for every method, under both models
    values[NO_MODEL] = {"oracle-q": [1.0] * n}
    rows, units = _board(values, states)
    [pair] = model_stability(rows, units)

    assert (pair.model_a, pair.model_b) == ("gemma", "smol")
    a = pd.DataFrame(values["gemma"]).drop(index=4)
    b = pd.DataFrame(values["smol"]).drop(index=4)
    st = pd.Series(states).drop(index=4)
    got = pair.agreement
    assert (got.n, got.n_states) == (14, 5)
    assert got.tau == pytest.approx(sps.kendalltau(a.mean(), b.mean(), variant="b").statistic, abs=1e-12)
    assert pair.left_out == ["oracle-q (uses no model)"]  # one cell for every model: not in τ
    # m1 leads under gemma and falls below m2 and m3 under smol: the pairs that flip, named in gemma's order.
    assert got.flips == [("m1", "m2"), ("m1", "m3")]
    assert got.methods == ["m1", "m2", "m3", "m4"]
    # The same resamples as stats.bootstrap_clusters draws (rng seed 0, one row of state indices per resample),
    # recomputed point by point with pandas and scipy.
    codes, _ = pd.factorize(st)
    draws = np.random.default_rng(0).integers(0, codes.max() + 1, (N_BOOT, codes.max() + 1))
    taus = []
    for draw in draws:
        idx = np.concatenate([np.flatnonzero(codes == s) for s in draw])
        taus.append(sps.kendalltau(a.iloc[idx].mean(), b.iloc[idx].mean(), variant="b").statistic)
    taus = np.asarray(taus)
    lo, hi = np.quantile(taus[np.isfinite(taus)], [0.025, 0.975])
    assert (got.ci_low, got.ci_high) == (pytest.approx(lo, abs=1e-12), pytest.approx(hi, abs=1e-12))
    assert got.ci_low < got.tau < got.ci_high  # a real interval here, not a degenerate one

    table = model_stability_table([pair])
    assert table.title == "Method ranking across models" and table.note.startswith("qval's own statistic")
    [row] = markdown.table(table)[2:]
    assert "| gemma | smol | 0.333 [" in row and "(n=14, 5 states, low n)" in row
    assert "m1 \\> m2 → reversed; m1 \\> m3 → reversed" in row and "oracle-q (uses no model)" in row


def test_only_the_points_and_methods_both_models_have_are_compared():
    states = ["s0", "s1", "s2", "s3"]
    a_vals = {"m1": [0.9, 0.8, 0.7, 0.6], "m2": [0.1, 0.2, 0.3, 0.4], "only-a": [0.5] * 4}
    b_vals = {"m1": [0.2, 0.1, 0.3, 0.2], "m2": [0.5, 0.6, 0.4, 0.5]}
    rows_a, units_a = _board({"a": a_vals}, states)
    rows_b, units_b = _board({"b": b_vals}, states[1:] + ["s9"], ["p1", "p2", "p3", "p9"])  # p0 unscored by b
    # A row of m1 under a without per-point values (a guided cell on a row of its own) does not hide its points cell.
    guided = rows_a.iloc[[0]].assign(cell_id="a/m1-guided")
    rows, units = pd.concat([guided, rows_a, rows_b]), pd.concat([units_a, units_b])
    [pair] = model_stability(rows.reset_index(drop=True), units)
    assert pair.agreement.n == 3 and pair.agreement.tau == -1.0  # p1-p3 only; m1 and m2 swap
    assert pair.agreement.flips == [("m1", "m2")]
    assert pair.left_out == ["only-a (ran under a only)"]


def test_different_states_under_one_point_id_make_a_pair_incomparable():
    """Points played by the model (points.behaviour: llm) reuse ids like 'ep0-t1' for other states."""
    rows_a, units_a = _board({"a": {"m1": [0.5, 0.2], "m2": [0.1, 0.3]}}, ["s0", "s1"])
    rows_b, units_b = _board({"b": {"m1": [0.5, 0.2], "m2": [0.1, 0.3]}}, ["s0", "s7"])
    [pair] = model_stability(pd.concat([rows_a, rows_b], ignore_index=True), pd.concat([units_a, units_b]))
    assert pair.agreement.tau is None and "name different states under the two models" in pair.agreement.undefined
    one, units = _board({"a": {"m1": [0.5], "m2": [0.1]}, NO_MODEL: {"random": [0.0]}}, ["s0"])
    assert model_stability(one, units) == []  # one model: nothing to compare, no table


SUITE = """\
name: twomodels
seeds: [0]
models:
  - smollm2-135m-instruct
  - {{source: hf, name: smollm2-copy, params: {{path: "{path}"}}}}
qalign:
  envs: [{{name: frozenlake, params: {{map: 4x4}}}}]
  methods: [oracle-q, random, action-logprob, self-certainty]
  points: {{episodes: 3, max_points_per_episode: 2}}
"""


@pytest.fixture(scope="module")
def two_models(tmp_path_factory):
    """The suite run with two model sources over the same weights, then reported."""
    from qval.models.base import ModelParams
    from qval.models.packaged import SmolLM2Instruct

    tmp = tmp_path_factory.mktemp("stability")
    path = SmolLM2Instruct(ModelParams()).local_path()
    suite, results = write_suite(tmp / "s.yaml", SUITE.format(path=path)), tmp / "results"
    proc = run_qval("run", suite, "--results", results, "--quiet")
    assert proc.returncode == 0, proc.stderr
    proc = run_qval("report", "--results", results, "--out", tmp / "reports")
    assert proc.returncode == 0, proc.stderr
    return tmp, results


def test_report_has_the_table_and_identical_weights_agree_exactly(two_models):
    tmp, _ = two_models
    md = (tmp / "reports" / "twomodels" / "leaderboard.md").read_text()
    html = (tmp / "reports" / "twomodels" / "index.html").read_text()
    assert "### Method ranking across models" in md and "qval's own statistic" in md
    [line] = [ln for ln in md.splitlines() if ln.startswith("| frozenlake") and "smollm2-copy" in ln]
    cells = [c.strip() for c in line.strip("|").split("|")]
    assert cells[3:5] == ["smollm2-135m-instruct", "smollm2-copy"]  # by name: the copy is model B
    assert cells[5].startswith("1.000 [1.000, 1.000] (n=")  # the same weights order the methods the same way
    assert cells[6] == "none"
    assert "oracle-q (uses no model)" in cells[9] and "random (uses no model)" in cells[9]
    assert "Method ranking across models" in html and "qval&#x27;s own statistic" in html


def test_cli_json_and_markdown(two_models):
    _, results = two_models
    proc = run_qval("model-stability", "twomodels", "--results", results, "--json")
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    [pair] = doc["pairs"]
    assert pair["kendall_tau_b"] == 1.0 and pair["ci_low"] == pair["ci_high"] == 1.0 and pair["flipped_pairs"] == []
    assert sorted(pair["methods"]) == ["action-logprob", "self-certainty"] and pair["n"] > 0
    assert pair["mean_rho_a"] == pair["mean_rho_b"]
    assert "QVal compares no method orders across models" in doc["statistic"]
    proc = run_qval("model-stability", "twomodels", "--results", results)
    assert proc.returncode == 0 and "# Method ranking across models: suite twomodels" in proc.stdout


def test_usage_errors_exit_2_with_the_fix(two_models, tmp_path):
    _, results = two_models
    usage_error(run_qval("model-stability", "nope", "--results", results), "no suite 'nope'", "twomodels")
    one = model_free_suite(tmp_path, "onemodel", methods="[oracle-q, random]")
    assert run_qval("run", one, "--results", results, "--quiet").returncode == 0
    usage_error(run_qval("model-stability", "onemodel", "--results", results), "fewer than 2 models", "models:")
