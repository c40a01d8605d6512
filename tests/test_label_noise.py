"""`qval label-noise`: method orders under exact Q* vs QVal-style Monte-Carlo labels.

The statistic (Kendall τ-b between the orders, state-bootstrap CI, flipped pairs) is checked against an independent
computation with scipy and on constructed cases; the command runs through the real CLI on a model-free suite
(oracle-q, random, heuristic on deterministic and slippery FrozenLake); the CI's coverage is checked by simulation.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest
from conftest import run_qval, usage_error, write_suite
from scipy import stats as sps

import qval.results as R
from qval.qalign.label_noise import LabelSet, compare_orders
from qval.stats import N_BOOT

MC1 = LabelSet(1, "max")


def _frame(rng, n_points: int, means) -> pd.DataFrame:
    return pd.DataFrame(
        {m: mu + rng.uniform(-0.4, 0.4, n_points) for m, mu in means.items()}, index=[f"p{i}" for i in range(n_points)]
    )


def test_tau_and_its_ci_match_an_independent_scipy_computation():
    rng = np.random.default_rng(3)
    exact = _frame(rng, 14, {"a": 0.7, "b": 0.5, "c": 0.45, "d": 0.1})
    mc = _frame(rng, 14, {"a": 0.3, "b": 0.35, "c": 0.4, "d": 0.0})
    exact.loc["p3", "c"] = np.nan  # an undefined ρ drops that point for every method, under both label sets
    states = pd.Series([f"s{i // 2}" for i in range(14)], index=exact.index)  # two points per state
    got = compare_orders(exact, mc, states, MC1)

    keep = exact.notna().all(axis=1) & mc.notna().all(axis=1)
    ex, mo, st = exact[keep], mc[keep], states[keep]
    assert (got.n, got.n_states) == (13, 7)
    assert got.tau == pytest.approx(sps.kendalltau(ex.mean(), mo.mean(), variant="b").statistic, abs=1e-12)
    # The same resamples as stats.bootstrap_clusters draws (rng seed 0, one row of state indices per resample,
    # states numbered in order of first appearance), recomputed here point by point with pandas and scipy.
    codes, _ = pd.factorize(st)
    draws = np.random.default_rng(0).integers(0, codes.max() + 1, (N_BOOT, codes.max() + 1))
    taus = []
    for draw in draws:
        rows = np.concatenate([np.flatnonzero(codes == s) for s in draw])
        taus.append(sps.kendalltau(ex.iloc[rows].mean(), mo.iloc[rows].mean(), variant="b").statistic)
    taus = np.asarray(taus)
    lo, hi = np.quantile(taus[np.isfinite(taus)], [0.025, 0.975])
    assert (got.ci_low, got.ci_high) == (pytest.approx(lo, abs=1e-12), pytest.approx(hi, abs=1e-12))
    assert got.ci_low < got.tau <= got.ci_high  # a real interval here, not a degenerate one


def test_flipped_pairs_and_tie_changes_on_a_constructed_case():
    index = [f"p{i}" for i in range(6)]
    exact = pd.DataFrame({"A": 0.9, "B": 0.5, "C": 0.1, "D": 0.3, "E": 0.2}, index=index)
    mc = pd.DataFrame({"A": 0.2, "B": 0.6, "C": 0.1, "D": 0.3, "E": 0.1}, index=index)
    got = compare_orders(exact, mc, pd.Series(index, index=index), MC1)
    assert got.methods == ["A", "B", "D", "E", "C"]  # best first under exact labels
    # A drops below B and D but stays above E and C; E ties C under MC only (a tie change, not a reversal).
    assert got.flips == [("A", "B"), ("A", "D")]
    assert got.tie_changes == [("E", "C")]
    x, y = [exact[m].iloc[0] for m in got.methods], [mc[m].iloc[0] for m in got.methods]
    assert got.tau == pytest.approx(sps.kendalltau(x, y, variant="b").statistic, abs=1e-12)
    assert got.ci_low == got.ci_high == got.tau  # no spread across states: the interval is the point


def test_methods_without_a_defined_rho_and_orders_without_information():
    index = ["p0", "p1", "p2"]
    states = pd.Series(["s0", "s1", "s2"], index=index)
    exact = pd.DataFrame({"a": [0.5, 0.2, 0.1], "b": [0.1, 0.3, 0.0], "c": np.nan}, index=index)
    mc = pd.DataFrame({"a": [0.4, np.nan, 0.1], "b": [0.0, 0.3, 0.2], "c": [1.0, 1.0, 1.0]}, index=index)
    got = compare_orders(exact, mc, states, MC1)
    assert got.left_out == {"c": "no evaluation point with a defined ρ under exact labels"}
    assert got.n == 2 and got.methods == ["a", "b"]  # p1 is undefined for a under MC: dropped for everyone
    one = compare_orders(exact[["a", "c"]], mc[["a", "c"]], states, MC1)
    assert one.tau is None and "an order needs 2" in one.undefined
    flat = compare_orders(exact[["a", "b"]] * 0, mc[["a", "b"]], states, MC1)
    assert flat.tau is None and "same mean ρ under exact labels" in flat.undefined


@pytest.mark.parametrize(
    "mu_exact, mu_mc",
    [
        ([0.8, 0.6, 0.45, 0.3, 0.0], [0.4, 0.45, 0.3, 0.1, -0.1]),  # one pair flips, by a small margin
        ([0.8, 0.5, 0.5, 0.3, 0.0], [0.4, 0.45, 0.45, 0.1, -0.1]),  # two methods tie in the population
    ],
)
def test_ci_coverage_by_simulation(mu_exact, mu_mc):
    """200 seeded replications of 20 states with 1-3 evaluation points each (a shared state effect, then point
    noise): the 95% interval holds the population τ-b (of the population mean ρ's) in at least 92% of them. Measured
    1.0 and 0.975 (τ takes few values and the percentile interval is conservative)."""
    mu_exact, mu_mc = np.asarray(mu_exact), np.asarray(mu_mc)
    truth = sps.kendalltau(mu_exact, mu_mc, variant="b").statistic
    rng = np.random.default_rng(15)
    hits = 0
    for _ in range(200):
        ex, mc, states = [], [], []
        for state in range(20):
            shift = rng.uniform(-0.1, 0.1)
            for _ in range(rng.integers(1, 4)):
                ex.append(mu_exact + shift + rng.uniform(-0.5, 0.5, 5))
                mc.append(mu_mc + shift + rng.uniform(-0.5, 0.5, 5))
                states.append(state)
        got = compare_orders(pd.DataFrame(ex), pd.DataFrame(mc), pd.Series(states), MC1)
        hits += got.ci_low - 1e-9 <= truth <= got.ci_high + 1e-9  # τ's values are ratios: compare with a tolerance
    assert hits / 200 >= 0.92, hits


SUITE = """\
name: noise
seeds: [0]
models: [smollm2-135m-instruct]
qalign:
  envs: [{name: frozenlake, params: {map: 4x4}}, {name: frozenlake, params: {map: 4x4, slippery: true}}]
  methods: [oracle-q, random, heuristic]
  points: {episodes: 6, max_points_per_episode: 3}
"""


@pytest.fixture(scope="module")
def noise_run(tmp_path_factory):
    """The model-free suite, run, then `qval label-noise --json` on it (rolling out and storing the labels)."""
    tmp = tmp_path_factory.mktemp("noise")
    suite, results = write_suite(tmp / "s.yaml", SUITE), tmp / "results"
    proc = run_qval("run", suite, "--results", results, "--quiet")
    assert proc.returncode == 0, proc.stderr
    proc = run_qval("label-noise", "noise", "--results", results, "--json")
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    return tmp, results, {g["group"].split(" ·")[0]: g for g in doc["groups"]}


def test_deterministic_env_mc_labels_equal_exact_ones(noise_run):
    _, results, groups = noise_run
    group = groups["frozenlake"]
    assert [c["labels"] for c in group["comparisons"]] == ["mc1-max", "mc1-mean", "mc16-max", "mc16-mean"]
    for c in group["comparisons"]:
        assert (c["kendall_tau_b"], c["ci_low"], c["ci_high"], c["flipped_pairs"]) == (1.0, 1.0, 1.0, [])
        assert c["mean_rho_mc"] == c["mean_rho_exact"] and c["n"] == group["points"]
        assert sorted(c["methods"]) == ["heuristic", "oracle-q", "random"]
    # The stored rollouts themselves: every return equals the exact label the suite's rows carry.
    cells = R.cells(results, "noise")
    rows = R.samples(results, "qalign", "noise")
    rows = rows[rows["cell_id"].isin(cells.loc[cells["dataset_label"] == "frozenlake", "cell_id"])]
    exact = {(r.sample_id, r.candidate): r.ref_q for r in rows.itertuples()}
    checked = 0
    for path in (results / "labels").glob("*.json"):
        data = json.loads(path.read_text())
        points = json.loads((results / "points" / f"{data['spec']['points']}.json").read_text())
        if points["env_params"]["slippery"]:
            continue
        for point_id, per_candidate in data["returns"].items():
            for index, returns in zip(data["candidates"][point_id], per_candidate):
                assert set(returns) == {exact[(point_id, index)]}
                checked += 1
    assert checked == group["points"] * 4 * 2  # 4 candidates per point, the 1- and the 16-rollout files


def test_stochastic_env_output_is_well_formed(noise_run):
    _, _, groups = noise_run
    group = groups["frozenlake(slippery=True)"]
    assert group["points"] > 0 and 0 < group["states"] <= group["points"]
    for c in group["comparisons"]:
        assert 0 < c["n"] <= group["points"] and 0 < c["n_states"] <= c["n"]
        if c["undefined"] is None:
            assert -1 <= c["ci_low"] <= c["kendall_tau_b"] <= c["ci_high"] <= 1
            assert set(c["mean_rho_mc"]) == set(c["mean_rho_exact"]) == set(c["methods"])
            for flip in c["flipped_pairs"]:
                a, b = flip["exact_above"], flip["mc_above"]
                assert c["mean_rho_exact"][a] > c["mean_rho_exact"][b] and c["mean_rho_mc"][a] < c["mean_rho_mc"][b]
        else:
            assert c["kendall_tau_b"] is None


def test_markdown_and_labels_stored_once(noise_run):
    _, results, _ = noise_run
    stored = {p: p.stat().st_mtime_ns for p in (results / "labels").glob("*.json")}
    assert len(stored) == 4  # per points set: one file of 1-rollout and one of 16-rollout returns (max and mean)
    proc = run_qval("label-noise", "noise", "--results", results, "--rollouts", "1,16", "--agg", "max")
    assert proc.returncode == 0, proc.stderr
    assert "# Label noise: suite noise" in proc.stdout and "QVal never published" in proc.stdout
    assert "| MC 1×max | " in proc.stdout and "| MC 16×max | " in proc.stdout and "×mean" not in proc.stdout
    assert "## frozenlake · seed 0: 3 methods" in proc.stdout
    assert {p: p.stat().st_mtime_ns for p in (results / "labels").glob("*.json")} == stored  # read, not redone


def test_usage_errors_exit_2_with_the_fix(noise_run, tmp_path):
    tmp, results, _ = noise_run
    usage_error(run_qval("label-noise", "nope", "--results", results), "no suite 'nope'", "suites there: noise")
    usage_error(run_qval("label-noise", "noise", "--results", results, "--rollouts", "0"), "--rollouts takes")
    usage_error(run_qval("label-noise", "noise", "--results", results, "--agg", "median"), "--agg takes max or mean")
    usage_error(run_qval("label-noise", "noise", "--results", tmp_path / "empty"), "no results database")

    one = write_suite(
        tmp_path / "one.yaml", SUITE.replace("name: noise", "name: one").replace(", random, heuristic", "")
    )
    proc = run_qval("run", one, "--results", results, "--quiet")
    assert proc.returncode == 0, proc.stderr
    usage_error(run_qval("label-noise", "one", "--results", results), "fewer than 2 methods", "qalign.methods")

    copy = tmp_path / "copy"
    shutil.copytree(results, copy)
    for path in (copy / "points").glob("*.json"):
        path.unlink()
    usage_error(run_qval("label-noise", "noise", "--results", copy), "are not stored under", "`qval run`")
