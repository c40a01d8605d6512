"""Tests of the QVal summary import prototype."""

from __future__ import annotations

import copy
import functools
import json
import math
from pathlib import Path

import numpy as np
import pytest
from scipy import stats as sps

import qval.qalign.qval_import as qi

# A bethgelab/qval evaluation summary, copied with its source noted in SCHEMA.md next to it.
SUMMARY = Path(__file__).parent / "data" / "qval_reference" / "terminal_bench_codex-55_q35-122_text.json"


@pytest.fixture(scope="module")
def raw():
    return json.loads(SUMMARY.read_text())


@pytest.fixture(scope="module")
def summary():
    return qi.read_summary(SUMMARY)


@pytest.fixture
def fast_bootstrap(monkeypatch):
    """qval's metrics bootstrap 1000 resamples; point values do not depend on it, so tests use 30."""
    import qval.qalign.metrics as qm

    monkeypatch.setattr(qm, "bootstrap_clusters", functools.partial(qm.bootstrap_clusters, n_boot=30))


# ----------------------------------------------------------------------------------------------------------------
# The reference file: every stored number reproduced


def test_every_stored_number_is_reproduced(summary):
    rep = qi.check_summary(summary)
    print(f"\nreproduced {rep.total()} stored numbers: {rep.counts}")
    assert rep.ok(), rep.mismatches[:10]
    # 2 point estimators x (8 pointwise + 16 code programs) x 4 metrics; 2 x 4 metrics x 7 aggregate stats;
    # 2 ranking estimators x 3 methods x 5 stats.
    assert rep.counts["pointwise_correlations"] == 192
    assert rep.counts["pointwise_p_values"] == 192
    assert rep.counts["pointwise_num_points"] == 192
    assert rep.counts["sample_aggregates"] == 56
    assert rep.counts["ranking_stats"] == 30
    assert rep.total() == 712


def test_scipy_cross_check_from_the_raw_json(raw, summary):
    """Independent of the import: scipy on the raw lists, prefix-aligned, against the stored numbers and against
    what the import recomputes from its rows."""
    ours = {(e.estimator, e.method): qi.recompute_pointwise(e.rows) for e in summary.pointwise}
    n = 0
    for est, block in raw["estimations"].items():
        if block["granularity"] != "point":
            continue
        gt = block["ground_truth_values"]
        for name, entry in block["methods"].items():
            entries = (
                [(name, entry)]
                if "predicted_values" in entry
                else [(f"{name}#{i:02d}", s) for i, s in enumerate(entry["per_sample"])]
            )
            for method, e in entries:
                k = min(len(gt), len(e["predicted_values"]))
                g, p = np.array(gt[:k], float), np.array(e["predicted_values"][:k], float)
                sc = {
                    "pearson": sps.pearsonr(g, p),
                    "spearman": sps.spearmanr(g, p),
                    "kendall_tau": sps.kendalltau(g, p),
                }
                for metric, res in sc.items():
                    stored = e["correlations"][metric]
                    assert res.statistic == pytest.approx(stored["correlation"], abs=1e-12)
                    assert res.pvalue == pytest.approx(stored["p_value"], rel=1e-9)
                    assert ours[(est, method)][metric].correlation == pytest.approx(res.statistic, abs=1e-12)
                    n += 1
                # QVal's code uses np.sign equality; SCHEMA.md words it as (pred > 0) == (gt > 0). They differ only
                # on pairs with pred < 0 and gt == 0, which this file does not have.
                for rule in (np.sign(p) == np.sign(g), (p > 0) == (g > 0)):
                    assert rule.mean() == pytest.approx(e["correlations"]["sign_agreement"]["correlation"], abs=1e-12)
                k_ok = int((np.sign(p) == np.sign(g)).sum())
                assert sps.binomtest(k_ok, k, 0.5).pvalue == pytest.approx(
                    e["correlations"]["sign_agreement"]["p_value"], rel=1e-9
                )
    assert n == 144


def test_qval_metrics_reproduce_the_pooled_numbers(summary, fast_bootstrap):
    """qval's own metric classes, fed the rows ingest would give them (error IS NULL; columns cell_id, sample_id,
    candidate, score, ref_q), give QVal's pooled correlations."""
    from qval.qalign.metrics import (
        PerStateSpearman,
        PooledKendall,
        PooledPearson,
        PooledSignAgreement,
        PooledSpearman,
    )

    metrics = {
        "spearman": PooledSpearman(),
        "kendall_tau": PooledKendall(),
        "pearson": PooledPearson(),
        "sign_agreement": PooledSignAgreement(),
    }
    compared = 0
    for e in summary.pointwise:
        frame = qi.metric_frame(e.rows)
        assert list(frame.columns) == [
            "cell_id",
            "sample_id",
            "state_key",
            "candidate",
            "score",
            "ref_q",
            "is_behaviour",
        ]
        for key, metric in metrics.items():
            value = metric.compute(frame)
            expected = qi.recompute_pointwise(e.rows)[key] if e.stored is None else e.stored[key]
            assert value.n == expected.num_points
            assert value.value == pytest.approx(expected.correlation, abs=1e-9)
            compared += e.stored is not None
        assert PerStateSpearman().compute(frame).value is None  # one candidate per state: nothing to rank
    assert compared == 192  # 48 cells x 4 statistics, each against the number QVal's own pipeline stored


def test_ranking_entries_keep_per_state_values(summary):
    assert len(summary.ranking) == 6
    for e in summary.ranking:
        assert list(e.states.columns) == qi.STATE_COLUMNS
        assert len(e.states) == e.stored["num_points"] == 100
        skipped = e.states["value"].isna()
        assert int(skipped.sum()) == e.stored["num_skipped"]
        assert e.states["error"].isna().all()  # skipped is QVal's outcome (value NULL), not a failure
        assert set(e.states["n_candidates"]) == {4}


def test_code_programs_become_variants_and_the_mean_is_reused(summary):
    for est in ("qv_mc_max", "qv_mc_mean"):
        variants = [e for e in summary.pointwise if e.estimator == est and e.group == "llm_codegen_qv_optimal"]
        assert [v.method for v in variants] == [f"llm_codegen_qv_optimal#{i:02d}" for i in range(16)]
        assert [v.alias for v in variants] == [f"codegen-s{i}_qv" for i in range(16)]
        group = next(g for g in summary.groups if g.estimator == est)
        assert group.averaged == "codegen-mean_qv" and not group.averaged_is_derived


def test_a_missing_mean_entry_gets_a_derived_averaged_variant(raw):
    data = copy.deepcopy(raw)
    for est in ("qv_mc_max", "qv_mc_mean"):
        del data["estimations"][est]["methods"]["codegen-mean_qv"]
    s = qi.parse_summary(data, source="x_q35-122_text.json")
    derived = [e for e in s.pointwise if e.method == "llm_codegen_qv_optimal#mean"]
    assert len(derived) == 2 and all(e.stored is None for e in derived)
    want = np.mean(
        [
            p["predicted_values"]
            for p in raw["estimations"]["qv_mc_max"]["methods"]["llm_codegen_qv_optimal"]["per_sample"]
        ],
        axis=0,
    )
    assert np.allclose(derived[0].rows["score"], want)
    # the derived variant equals QVal's own codegen-mean numbers
    stored = raw["estimations"]["qv_mc_max"]["methods"]["codegen-mean_qv"]["correlations"]["spearman"]
    assert qi.recompute_pointwise(derived[0].rows)["spearman"].correlation == pytest.approx(
        stored["correlation"], abs=1e-12
    )
    assert qi.check_summary(s).ok()


# ----------------------------------------------------------------------------------------------------------------
# QVal's rules on synthetic summaries (stored numbers computed here with scipy, independently)


def _stored(gt, pred, min_points=50, exclude_zero=False):
    k = min(len(gt), len(pred))
    pairs = [(g, p) for g, p in zip(gt[:k], pred[:k]) if g is not None and p is not None]
    dropped = 0
    if exclude_zero:
        dropped = sum(1 for g, p in zip(gt[:k], pred[:k]) if g == 0 or p == 0)
        pairs = [(g, p) for g, p in pairs if g != 0 and p != 0]
    n = len(pairs)
    if n < min_points:
        return {m: {"correlation": None, "p_value": None, "num_points": n} for m in qi.POINT_METRICS}, dropped
    g, p = np.array(pairs, float).T
    out = {}
    for m, fn in (("pearson", sps.pearsonr), ("spearman", sps.spearmanr), ("kendall_tau", sps.kendalltau)):
        if np.all(p == p[0]):
            out[m] = {"correlation": None, "p_value": None, "num_points": n}
        else:
            r = fn(g, p)
            out[m] = {"correlation": float(r.statistic), "p_value": float(r.pvalue), "num_points": n}
    ok = int((np.sign(g) == np.sign(p)).sum())
    out["sign_agreement"] = {"correlation": ok / n, "p_value": sps.binomtest(ok, n, 0.5).pvalue, "num_points": n}
    return out, dropped


def _synthetic(preds: dict, gt, exclude_zero=False, ranking=None):
    methods = {}
    for name, pred in preds.items():
        corr, dropped = _stored(gt, pred, exclude_zero=exclude_zero)
        methods[name] = {"correlations": corr, "predicted_values": pred, "num_dropped_zero": dropped}
    est = {
        "qv_mc_max": {"assumption": "q_value", "granularity": "point", "ground_truth_values": gt, "methods": methods}
    }
    if ranking is not None:
        est["ranking_gt_qv_mc_max"] = ranking
    return {
        "experiment_info": {
            "env_name": "frozen_lake",
            "signal_type": "q_value",
            "num_evaluation_points": len(gt),
            "min_usable_correlation_points": 50,
            "exclude_zero_points": exclude_zero,
            "eval_methods": list(preds),
        },
        "dataset_config": {},
        "dataset_metadata": {"seed": 7},
        "estimations": est,
        "gt_vs_gt_estimations": {},
    }


def test_rules_prefix_nulls_threshold_and_constants():
    rng = np.random.default_rng(0)
    gt = [float(x) for x in rng.choice([0.0, 0.9025, 0.95, 0.857], 120)]
    gt[5] = None
    good = [float(x) for x in rng.normal(size=120)]
    preds = {
        "full_qv": good,
        "prefix_qv": good[:80],  # covers the first 80 points only
        "nulls_qv": [None if i % 7 == 0 else v for i, v in enumerate(good)],
        "short_qv": good[:49],  # < 50 usable pairs → null correlations
        "constant_qv": [0.5] * 120,  # constant → null pearson/spearman/kendall, sign agreement still defined
        "longer_qv": good + [1.0, 2.0],  # longer than the ground truth: the extra values are ignored
    }
    s = qi.parse_summary(_synthetic(preds, gt), source="frozen_lake_q35-9-or_text.json")
    rep = qi.check_summary(s)
    assert rep.ok(), rep.mismatches
    assert rep.counts["pointwise_correlations"] == 24
    by = {e.method: e for e in s.pointwise}
    prefix = by["prefix_qv"].rows
    assert len(prefix) == 120
    assert (prefix["error"].iloc[80:] == qi.ERR_NOT_COVERED.format(n=80)).all()
    assert prefix.loc[5, "error"] == qi.ERR_NULL_REF
    assert by["nulls_qv"].rows.loc[7, "error"] == qi.ERR_NULL_PRED
    short = qi.recompute_pointwise(by["short_qv"].rows)
    assert all(v.correlation is None for v in short.values()) and short["spearman"].num_points == 48
    const = qi.recompute_pointwise(by["constant_qv"].rows)
    assert const["spearman"].correlation is None and const["pearson"].correlation is None
    assert const["sign_agreement"].correlation is not None
    assert len(by["longer_qv"].rows) == 120 and by["longer_qv"].n_predictions == 122
    assert s.model_token == "q35-9" and s.collection_seed == 7


def test_qval_metrics_follow_the_same_rules(fast_bootstrap):
    from qval.qalign.metrics import PooledKendall, PooledPearson, PooledSignAgreement, PooledSpearman

    rng = np.random.default_rng(1)
    gt = [float(x) for x in rng.choice([0.9025, 0.95, 0.857], 100)]
    gt[3] = None
    preds = {
        "nulls_qv": [None if i % 9 == 0 else float(v) for i, v in enumerate(rng.normal(size=100))],
        "constant_qv": [0.5] * 100,
        "short_qv": [float(v) for v in rng.normal(size=40)],
    }
    s = qi.parse_summary(_synthetic(preds, gt), source="x_q35-9_text.json")
    for e in s.pointwise:
        frame = qi.metric_frame(e.rows)
        for metric, key in (
            (PooledSpearman(), "spearman"),
            (PooledKendall(), "kendall_tau"),
            (PooledPearson(), "pearson"),
            (PooledSignAgreement(), "sign_agreement"),
        ):
            v = metric.compute(frame)
            assert v.n == e.stored[key].num_points
            if e.stored[key].correlation is None:
                assert v.value is None
            else:
                assert v.value == pytest.approx(e.stored[key].correlation, abs=1e-12)


def test_exclude_zero_points():
    rng = np.random.default_rng(2)
    gt = [float(x) for x in rng.choice([0.0, 0.9, 0.95], 100)]
    pred = [float(x) for x in rng.choice([0.0, 0.3, 0.6, 0.9], 100)]
    s = qi.parse_summary(_synthetic({"d_qv": pred}, gt, exclude_zero=True), source="x_q35-9_text.json")
    rep = qi.check_summary(s)
    assert rep.ok(), rep.mismatches
    assert rep.counts["num_dropped_zero"] == 1
    assert (s.pointwise[0].rows["error"] == qi.ERR_ZERO).sum() == s.pointwise[0].num_dropped_zero > 0


def test_a_tampered_number_is_reported(raw):
    data = copy.deepcopy(raw)
    data["estimations"]["qv_mc_max"]["methods"]["gvl_qv"]["correlations"]["spearman"]["correlation"] += 1e-6
    data["estimations"]["ranking_gt_qv_mc_mean"]["methods"]["sdpo_qv"]["correlations"]["ranking_spearman"][
        "num_skipped"
    ] += 1
    rep = qi.check_summary(qi.parse_summary(data, source="t_q35-122_text.json"))
    assert len(rep.mismatches) == 2
    assert "qv_mc_max/gvl_qv spearman" in rep.mismatches[0]
    assert "ranking_gt_qv_mc_mean/sdpo_qv ranking num_skipped" in rep.mismatches[1]


def test_recompute_ranking_edge_cases():
    import pandas as pd

    one = pd.DataFrame({"value": [0.5, np.nan]})
    assert qi.recompute_ranking(one) == {"mean": 0.5, "std": 0.0, "num_valid": 1, "num_skipped": 1, "num_points": 2}
    none = pd.DataFrame({"value": [np.nan]})
    assert qi.recompute_ranking(none)["mean"] is None


# ----------------------------------------------------------------------------------------------------------------
# Malformed summaries: a clear ValueError naming the key path


def _set(path):
    def mutate(d):
        *head, last = path
        for k in head:
            d = d[k]
        return d, last

    return mutate


MALFORMED = [
    ("top-level list", lambda d: [], "<root>: expected an object, got list"),
    ("no experiment_info", lambda d: d.pop("experiment_info") and d, "experiment_info: missing key"),
    (
        "env_name number",
        lambda d: d["experiment_info"].update(env_name=3) or d,
        "experiment_info.env_name: expected a string, got int",
    ),
    (
        "min points text",
        lambda d: d["experiment_info"].update(min_usable_correlation_points="50") or d,
        "experiment_info.min_usable_correlation_points: expected an integer",
    ),
    ("no estimations", lambda d: d.update(estimations={}) or d, "estimations: no ground-truth estimations"),
    (
        "bad granularity",
        lambda d: d["estimations"]["qv_mc_max"].update(granularity="pairs") or d,
        "estimations.qv_mc_max.granularity: expected 'point' or 'ranking', got 'pairs'",
    ),
    (
        "trajectory",
        lambda d: d["estimations"]["qv_mc_max"].update(granularity="trajectory") or d,
        "estimations.qv_mc_max.granularity: 'trajectory'",
    ),
    (
        "gt not list",
        lambda d: d["estimations"]["qv_mc_max"].update(ground_truth_values={}) or d,
        "estimations.qv_mc_max.ground_truth_values: expected a list, got dict",
    ),
    (
        "pred text",
        lambda d: d["estimations"]["qv_mc_max"]["methods"]["direct_qv"]["predicted_values"].__setitem__(3, "0.5") or d,
        "estimations.qv_mc_max.methods.direct_qv.predicted_values[3]: expected a number or null, got str",
    ),
    (
        "pred bool",
        lambda d: d["estimations"]["qv_mc_mean"]["methods"]["gvl_qv"]["predicted_values"].__setitem__(0, True) or d,
        "estimations.qv_mc_mean.methods.gvl_qv.predicted_values[0]: expected a number or null, got bool",
    ),
    (
        "no num_points",
        lambda d: (
            d["estimations"]["qv_mc_max"]["methods"]["eureka_qv"]["correlations"]["spearman"].pop("num_points") and d
        ),
        "estimations.qv_mc_max.methods.eureka_qv.correlations.spearman.num_points: missing key",
    ),
    (
        "neither kind",
        lambda d: d["estimations"]["qv_mc_max"]["methods"]["verifier_qv"].pop("predicted_values") and d,
        "estimations.qv_mc_max.methods.verifier_qv: expected 'predicted_values' (pointwise entry) or 'per_sample'",
    ),
    (
        "sample without preds",
        lambda d: (
            d["estimations"]["qv_mc_max"]["methods"]["llm_codegen_qv_optimal"]["per_sample"][2].pop("predicted_values")
            and d
        ),
        "estimations.qv_mc_max.methods.llm_codegen_qv_optimal.per_sample[2].predicted_values: missing key",
    ),
    (
        "aggregate missing stat",
        lambda d: (
            d["estimations"]["qv_mc_max"]["methods"]["llm_codegen_qv_optimal"]["aggregate_correlations"][
                "kendall_tau"
            ].pop("median")
            and d
        ),
        "estimations.qv_mc_max.methods.llm_codegen_qv_optimal.aggregate_correlations.kendall_tau.median: missing key",
    ),
    (
        "rho out of range",
        lambda d: (
            d["estimations"]["ranking_gt_qv_mc_max"]["methods"]["ranking_qv"]["per_point_correlations"].__setitem__(
                4, 1.5
            )
            or d
        ),
        "estimations.ranking_gt_qv_mc_max.methods.ranking_qv.per_point_correlations[4]: a Spearman rho must lie in",
    ),
    (
        "too many states",
        lambda d: (
            d["estimations"]["ranking_gt_qv_mc_max"]["methods"]["sdpo_qv"]["per_point_correlations"].append(0.1) or d
        ),
        "estimations.ranking_gt_qv_mc_max.methods.sdpo_qv.per_point_correlations: 101 states but candidate_counts",
    ),
    (
        "negative count",
        lambda d: d["estimations"]["ranking_gt_qv_mc_mean"]["candidate_counts"].__setitem__(0, -4) or d,
        "estimations.ranking_gt_qv_mc_mean.candidate_counts[0]: expected a non-negative integer, got -4",
    ),
    # Values that used to escape as a bare ValueError/OverflowError from int()/float().
    (
        "count NaN",
        lambda d: d["estimations"]["qv_mc_max"]["methods"]["direct_qv"].update(num_dropped_zero=math.nan) or d,
        "estimations.qv_mc_max.methods.direct_qv.num_dropped_zero: expected a non-negative integer, got nan",
    ),
    (
        "count infinite",
        lambda d: d["estimations"]["ranking_gt_qv_mc_max"]["candidate_counts"].__setitem__(1, math.inf) or d,
        "estimations.ranking_gt_qv_mc_max.candidate_counts[1]: expected a non-negative integer",
    ),
    (
        "huge integer",
        lambda d: d["estimations"]["qv_mc_mean"]["ground_truth_values"].__setitem__(2, 10**400) or d,
        "estimations.qv_mc_mean.ground_truth_values[2]: infinite value",
    ),
    (
        "no ranking_spearman",
        lambda d: d["estimations"]["ranking_gt_qv_mc_mean"]["methods"]["delta-belief_qv"]["correlations"].clear() or d,
        "estimations.ranking_gt_qv_mc_mean.methods.delta-belief_qv.correlations.ranking_spearman: missing key",
    ),
]


@pytest.mark.parametrize("case,mutate,message", MALFORMED, ids=[m[0] for m in MALFORMED])
def test_malformed_summaries_name_the_key_path(raw, tmp_path, case, mutate, message):
    data = mutate(copy.deepcopy(raw))
    path = tmp_path / "bad_q35-122_text.json"
    path.write_text(json.dumps(data))
    with pytest.raises(ValueError) as info:
        qi.read_summary(path)
    assert str(info.value).startswith(f"{path}: ")
    assert message in str(info.value)


def test_unreadable_files(tmp_path):
    with pytest.raises(ValueError, match="cannot read file"):
        qi.read_summary(tmp_path / "missing.json")
    bad = tmp_path / "trunc.json"
    bad.write_text('{"experiment_info": {')
    with pytest.raises(ValueError, match=r"trunc.json: <root>: not valid JSON"):
        qi.read_summary(bad)


def test_deeply_nested_json_is_a_clean_error(tmp_path):
    deep = tmp_path / "deep.json"
    deep.write_text("[" * 100_000)
    with pytest.raises(ValueError, match=r"deep.json: <root>: not valid JSON: nested too deeply"):
        qi.read_summary(deep)


def test_every_problem_is_counted(raw):
    data = copy.deepcopy(raw)
    data["experiment_info"]["env_name"] = ""
    data["estimations"]["qv_mc_max"]["ground_truth_values"][0] = "x"
    with pytest.raises(qi.SummaryError, match=r"experiment_info.env_name: empty string \(1 more problem\(s\)\)"):
        qi.parse_summary(data, source="t.json")


def test_summary_error_is_also_a_qval_usage_error(tmp_path):
    from qval.errors import UsageError

    bad = tmp_path / "x.json"
    bad.write_text("[]")
    with pytest.raises(UsageError):
        qi.read_summary(bad)


def test_a_model_is_required_when_the_name_has_none(raw, tmp_path):
    from qval.errors import UsageError

    path = tmp_path / "summary_20260507_040543.json"
    path.write_text(json.dumps(raw))
    s = qi.read_summary(path)
    assert s.model_token is None
    with pytest.raises(UsageError, match="pass model="):
        qi.import_cells(s)
    assert {c.model for c, _ in qi.import_cells(s, model="Qwen3.5-122B-A10B")} == {"Qwen3.5-122B-A10B"}


# ----------------------------------------------------------------------------------------------------------------
# Cells, parts, ingest, DuckDB


def test_cell_identity(summary):
    cells = qi.import_cells(summary)
    ids = [c.cell_id for c, _ in cells]
    assert len(ids) == len(set(ids)) == 54 and all(i.isalnum() for i in ids)
    assert ids == [c.cell_id for c, _ in qi.import_cells(qi.read_summary(SUMMARY))]  # stable
    cell = next(c for c, e in cells if e.method == "llm_codegen_qv_optimal#03" and e.estimator == "qv_mc_max")
    assert cell.track == "qalign" and cell.model == "q35-122" and cell.dataset == "tblite"
    assert cell.method == "qval-import:llm_codegen_qv_optimal#03" and cell.family == "code"
    assert cell.dataset_label == "tblite(gt=qv_mc_max)"
    assert cell.method_params["alias"] == "codegen-s3_qv"
    assert {c.track for c, e in cells if isinstance(e, qi.RankingEntry)} == {qi.STATE_TRACK}


def test_write_parts_then_qval_ingest_end_to_end(summary, tmp_path, fast_bootstrap):
    import duckdb

    from qval import results as R
    from qval.api import ingest_results

    w = qi.write_import_parts(summary, tmp_path)
    assert len(w.written) == 54  # 48 pointwise cells + 6 ranking cells (per-state values only)
    rep = ingest_results(tmp_path)
    assert rep.cells_ingested == 54 and rep.rows == 4800 + 600
    con = duckdb.connect(str(tmp_path / "qval.duckdb"), read_only=True)
    try:
        assert con.execute(
            "SELECT count(*), count(*) FILTER (WHERE status = 'done'), sum(n_failed) FROM cells WHERE track = 'qalign'"
        ).fetchone() == (48, 48, 0)
        assert con.execute("SELECT count(DISTINCT cell_id), count(*) FROM qalign_samples").fetchone() == (48, 4800)
        assert con.execute("SELECT count(*), count(value) FROM qalign_state_values").fetchone() == (600, 516)
        assert con.execute("SELECT DISTINCT suite FROM suite_cells").fetchall() == [(w.suite,)]
        assert con.execute("SELECT run_id FROM cells GROUP BY 1").fetchall() == [(w.run_id,)]
        got = con.execute("SELECT cell_id, metric, value, n FROM cell_metrics").fetchall()
    finally:
        con.close()
    entries = {c.cell_id: e for c, e in qi.import_cells(summary)}
    names = {"pooled_spearman": "spearman", "pooled_kendall": "kendall_tau", "pooled_pearson": "pearson"}
    pooled = ranking = 0
    for cid, metric, value, n in got:
        e = entries[cid]
        if isinstance(e, qi.RankingEntry) and metric == "per_state_spearman":
            assert n == e.stored["num_valid"] and value == pytest.approx(e.stored["mean"], abs=1e-9), e.method
            ranking += 1
        elif isinstance(e, qi.PointwiseEntry) and metric in names and e.stored is not None:
            st = e.stored[names[metric]]
            assert n == st.num_points and value == pytest.approx(st.correlation, abs=1e-9), (e.method, metric)
            pooled += 1
    assert (pooled, ranking) == (144, 6)  # every stored pooled correlation and per-state mean, from DuckDB
    board = R.leaderboard(tmp_path, w.suite, "qalign")
    assert len(board) == 54 and set(board["model"]) == {"q35-122"}
    # idempotent: a second import writes nothing and a second ingest changes nothing
    again = qi.write_import_parts(summary, tmp_path)
    assert again.written == [] and len(again.already_done) == 54
    assert ingest_results(tmp_path).cells_ingested == 0


def test_an_interrupted_import_resumes_per_sample(summary, tmp_path):
    import pyarrow.parquet as pq

    from qval.store.parts import DONE, PartWriter, cell_dir

    cell, entry = next((c, e) for c, e in qi.import_cells(summary) if e.method == "direct_qv")
    partial = PartWriter(tmp_path, cell.cell_id, "qalign")  # a killed import left 10 samples and no DONE
    for row in entry.rows.head(10).to_dict("records"):
        partial.add_sample([{k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in row.items()}])
    partial.flush()
    qi.write_import_parts(summary, tmp_path)
    d = cell_dir(tmp_path, cell.cell_id)
    ids = [i for p in sorted(d.glob("part-*.parquet")) for i in pq.read_table(p).column("sample_id").to_pylist()]
    assert sorted(ids) == list(entry.rows["sample_id"]) and (d / DONE).exists()
    manifest = json.loads((d / DONE).read_text())
    assert manifest["qval_import"]["stored"]["spearman"]["correlation"] == entry.stored["spearman"].correlation


def test_import_qval_api(tmp_path, fast_bootstrap):
    s, rep, written, ingested = qi.import_qval(SUMMARY, tmp_path)
    assert rep.ok() and rep.total() == 712
    assert ingested.cells_ingested == len(written.written) >= 48
    bad = json.loads(SUMMARY.read_text())
    bad["estimations"]["qv_mc_max"]["methods"]["direct_qv"]["correlations"]["kendall_tau"]["correlation"] = 0.5
    path = tmp_path / "tampered_q35-122_text.json"
    path.write_text(json.dumps(bad))
    from qval.errors import UsageError

    with pytest.raises(UsageError, match="not reproduced.*direct_qv kendall_tau"):
        qi.import_qval(path, tmp_path / "other")
    assert not (tmp_path / "other").exists()
