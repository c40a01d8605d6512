"""Metrics cross-checked against scipy, CIs checked for coverage-like sanity."""

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from qval.decode.metrics import Lossless, MeanAcceptedTokens, MeasuredSpeedup, PerSampleAcceptanceLength
from qval.qalign.metrics import (
    MIN_POOLED_PAIRS,
    PerStateSpearman,
    PooledKendallAll,
    PooledSpearman,
    PooledSpearmanAll,
)
from qval.stats import bootstrap_mean, bootstrap_ratio


def qalign_frame(n_states=30, n_cand=4, noise=0.5, seed=0):
    rng = np.random.default_rng(seed)
    rows = []
    for s in range(n_states):
        q = rng.random(n_cand)
        score = q + noise * rng.standard_normal(n_cand)
        for c in range(n_cand):
            rows.append({"sample_id": f"p{s:03d}", "candidate": c, "score": score[c], "ref_q": q[c]})
    return pd.DataFrame(rows)


def test_pooled_correlations_match_scipy():
    df = qalign_frame()
    sp = PooledSpearmanAll().compute(df)
    kt = PooledKendallAll().compute(df)
    assert sp.value == pytest.approx(sps.spearmanr(df["score"], df["ref_q"]).statistic, abs=1e-12)
    assert kt.value == pytest.approx(sps.kendalltau(df["score"], df["ref_q"]).statistic, abs=1e-12)
    assert sp.n == len(df) and sp.ci_low < sp.value < sp.ci_high


def test_pooled_needs_min_pairs():
    df = qalign_frame(n_states=(MIN_POOLED_PAIRS // 4) - 1)
    assert PooledSpearmanAll().compute(df).value is None


def test_per_state_spearman_matches_scipy_and_skips_tied_reference():
    df = qalign_frame()
    expected = [sps.spearmanr(g["score"], g["ref_q"]).statistic for _, g in df.groupby("sample_id")]
    tied = pd.DataFrame({"sample_id": "zz", "candidate": range(4), "score": [1, 2, 3, 4], "ref_q": 0.5})
    result = PerStateSpearman().compute(pd.concat([df, tied]))
    assert result.value == pytest.approx(np.mean(expected), abs=1e-12)
    assert result.n == 30  # the all-tied state is skipped


def test_oracle_is_perfect_and_constant_scores_count_as_zero():
    df = qalign_frame(noise=0.0)
    assert PerStateSpearman().compute(df).value == pytest.approx(1.0)
    flat = df.assign(score=1.0)
    assert PerStateSpearman().compute(flat).value == 0.0


def test_bootstrap_mean_ci_contains_truth_and_shrinks_with_n():
    rng = np.random.default_rng(1)
    small = bootstrap_mean(rng.normal(5, 1, 50))
    large = bootstrap_mean(rng.normal(5, 1, 5000))
    assert small.ci_low < 5 < small.ci_high and large.ci_low < 5 < large.ci_high
    assert (large.ci_high - large.ci_low) < (small.ci_high - small.ci_low) / 5
    # Cross-check the percentile bootstrap against scipy's implementation of the same interval.
    data = rng.normal(0, 1, 200)
    ours = bootstrap_mean(data, n_boot=4000)
    ref = sps.bootstrap((data,), np.mean, n_resamples=4000, method="percentile", random_state=0).confidence_interval
    assert ours.ci_low == pytest.approx(ref.low, abs=0.03) and ours.ci_high == pytest.approx(ref.high, abs=0.03)


def test_undefined_is_none_never_nan():
    assert bootstrap_ratio(np.array([]), np.array([])).value is None
    assert bootstrap_ratio(np.array([1.0]), np.array([0.0])).value is None


def decode_frame(accepted, steps, decode_s, shas, tokens=None):
    n = len(steps)
    return pd.DataFrame(
        {
            "sample_id": [str(i) for i in range(n)],
            "turn": 0,
            "accepted": accepted,
            "accepted_total": [sum(a) for a in accepted],
            "target_steps": steps,
            "decode_s": decode_s,
            "output_sha": shas,
            "new_tokens": tokens or [10] * n,
        }
    )


def test_acceptance_lengths_pooled_vs_per_sample():
    df = decode_frame([[3, 3], [0, 0, 0, 0, 0, 0, 0, 0]], [2, 8], [1.0, 1.0], ["a", "b"])
    pooled = MeanAcceptedTokens().compute(df)
    per_sample = PerSampleAcceptanceLength().compute(df)
    assert pooled.value == pytest.approx(1 + 6 / 10)
    assert per_sample.value == pytest.approx(((1 + 3) + 1) / 2)


def test_speedup_is_ratio_of_sums_against_paired_baseline():
    base = decode_frame([[0]] * 3, [10] * 3, [2.0, 2.0, 2.0], ["a", "b", "c"])
    pol = decode_frame([[1]] * 3, [5] * 3, [1.0, 1.0, 4.0], ["a", "b", "x"])
    s = MeasuredSpeedup().compute(pol, base)
    assert s.n == 3
    assert s.value == pytest.approx(6.0 / 6.0)
    lossless = Lossless().compute(pol, base, {"temperature": 0.0})
    assert lossless.value == pytest.approx(2 / 3)
    assert Lossless().compute(pol, base, {"temperature": 0.7}).value is None


def test_per_position_acceptance_matches_hand_count():
    from qval.decode.metrics import PerPositionAcceptance

    # Two samples; steps drafted 4 tokens each. Accepted per step: [2, 0, 4] and [1].
    df = pd.DataFrame(
        {
            "drafts": [3, 1],
            "accepted_ge_1": [2, 1],
            "accepted_ge_2": [2, 0],
            "accepted_ge_3": [1, 0],
            "accepted_ge_4": [1, 0],
            **{f"accepted_ge_{i}": [0, 0] for i in range(5, 9)},
        }
    )
    out = PerPositionAcceptance().compute(df)
    assert out["accept_rate@1"].value == pytest.approx(3 / 4)
    assert out["accept_rate@2"].value == pytest.approx(2 / 4)
    assert out["accept_cond@2"].value == pytest.approx(2 / 3)
    assert out["accept_cond@4"].value == pytest.approx(1.0)
    # τ = 1 + Σ rates when every step drafts: (3 + 1 + 1 + ... ) → 1 + (3+2+1+1)/4 = 2.75 = 1 + 7/4 accepted/step.
    assert 1 + sum(out[f"accept_rate@{i}"].value for i in range(1, 5)) == pytest.approx(1 + 7 / 4)


def test_speedup_is_undefined_across_runs():
    base = decode_frame([[0]] * 3, [10] * 3, [2.0, 2.0, 2.0], ["a", "b", "c"])
    pol = decode_frame([[1]] * 3, [5] * 3, [1.0, 1.0, 1.0], ["a", "b", "c"])
    same = MeasuredSpeedup().compute(pol, base, {"run_id": "r1", "baseline_run_id": "r1", "temperature": 0.0})
    other = MeasuredSpeedup().compute(pol, base, {"run_id": "r2", "baseline_run_id": "r1", "temperature": 0.0})
    assert same.value == pytest.approx(2.0) and other.value is None


def test_pairwise_accuracy_and_top1_against_scipy_and_by_hand():
    """Without ties, per-state pairwise accuracy is (Kendall τ + 1) / 2 (scipy); top-1 and ties by hand."""
    import numpy as np
    import pandas as pd
    from scipy import stats as sps

    from qval.qalign.metrics import PairwiseAccuracy, Top1, pairwise_accuracy_by_state, top1_by_state

    rng = np.random.default_rng(3)
    rows, expected = [], {}
    for s in range(30):
        ref, score = rng.permutation(5).astype(float), rng.normal(size=5)
        expected[f"s{s:02d}"] = (sps.kendalltau(score, ref).statistic + 1) / 2
        rows += [{"sample_id": f"s{s:02d}", "candidate": i, "score": score[i], "ref_q": ref[i]} for i in range(5)]
    frame = pd.DataFrame(rows)
    got = pairwise_accuracy_by_state(frame)
    assert np.allclose(got.to_numpy(), pd.Series(expected).sort_index().to_numpy())
    assert PairwiseAccuracy().compute(frame).value == pytest.approx(np.mean(list(expected.values())))
    ties = pd.DataFrame(
        {
            "sample_id": ["a"] * 3 + ["b"] * 3 + ["c"] * 2,
            "candidate": [0, 1, 2, 0, 1, 2, 0, 1],
            "score": [1.0, 1.0, 0.0, 0.2, 0.9, 0.1, 5.0, 5.0],
            "ref_q": [0.9, 0.5, 0.5, 0.9, 0.9, 0.5, 0.7, 0.7],
        }
    )
    # a: pairs (0,1) tie in score -> 1/2, (0,2) right, (1,2) equal ref: skipped -> 3/4. b: (0,2) right, (1,2) right.
    # c: all reference values equal: nothing to order, skipped.
    assert pairwise_accuracy_by_state(ties).to_dict() == {"a": 0.75, "b": 1.0}
    # a: top score shared by candidates 0 (best) and 1 (not) -> 1/2; b: candidate 1 is among the best -> 1.
    assert top1_by_state(ties).to_dict() == {"a": 0.5, "b": 1.0}
    assert Top1().compute(ties).n == 2


def test_pooled_pearson_matches_scipy_and_is_undefined_for_constant_scores():
    import numpy as np
    import pandas as pd
    from scipy import stats as sps

    from qval.qalign.metrics import PooledPearson

    rng = np.random.default_rng(4)
    frame = pd.DataFrame(
        {
            "sample_id": np.repeat([f"s{i}" for i in range(20)], 4),
            "candidate": np.tile(range(4), 20),
            "score": rng.normal(size=80),
            "ref_q": rng.random(80),
        }
    )
    frame["is_behaviour"] = True  # one row per point here: QVal's statistic and the all-candidates one agree
    assert PooledPearson().compute(frame).value == pytest.approx(sps.pearsonr(frame["score"], frame["ref_q"]).statistic)
    assert PooledPearson().compute(frame.assign(score=1.0)).value is None


def test_resampled_correlations_equal_scipy_on_the_repeated_sample():
    """qalign/resampled.py: a resample given as integer weights is the sample with each pair repeated that often
    (zero drops it), ties included, for every statistic the pooled metrics bootstrap."""
    from qval.qalign import resampled

    rng = np.random.default_rng(3)
    x, y = np.round(rng.normal(size=60), 1), rng.integers(0, 5, 60).astype(float)  # ties on both sides
    weights = rng.integers(0, 4, (6, 60)).astype(float)
    for ours, theirs in (
        (resampled.spearman, lambda a, b: sps.spearmanr(a, b).statistic),
        (resampled.kendall, lambda a, b: sps.kendalltau(a, b).statistic),
        (resampled.pearson, lambda a, b: sps.pearsonr(a, b).statistic),
    ):
        got = ours(x, y, weights)
        for w, value in zip(weights.astype(int), got, strict=True):
            assert value == pytest.approx(theirs(np.repeat(x, w), np.repeat(y, w)), abs=1e-12)
    assert np.isnan(resampled.spearman(x, np.ones(60), weights)).all()  # a constant side: undefined, as in scipy


def test_pooled_ci_resamples_states_so_a_revisited_state_counts_once():
    """Every state visited twice (the same pair twice) is the same evidence as once: the same Spearman ρ and the
    same interval, as state clusters are resampled whole; n counts the points."""
    rng = np.random.default_rng(4)
    once = pd.DataFrame(
        {
            "sample_id": [f"p{i:03d}" for i in range(60)],
            "state_key": [f"s{i}" for i in range(60)],
            "score": rng.normal(size=60),
            "ref_q": rng.integers(0, 6, 60) * 0.1,
            "is_behaviour": True,
        }
    )
    twice = pd.concat([once, once.assign(sample_id=once["sample_id"] + "b")], ignore_index=True)
    a, b = PooledSpearman().compute(once), PooledSpearman().compute(twice)
    assert (b.value, b.ci_low, b.ci_high) == pytest.approx((a.value, a.ci_low, a.ci_high), abs=1e-12)
    assert (a.n, b.n, a.n_states, b.n_states) == (60, 120, 60, 60)
    points = PooledSpearman().compute(twice.assign(state_key=twice["sample_id"]))  # as if 120 distinct states
    assert points.ci_high - points.ci_low < 0.8 * (b.ci_high - b.ci_low)


def test_pair_with_baseline_equals_the_merge_whatever_the_rows():
    """Frames with the same keys in the same order are paired side by side (no merge); every other shape (a prompt
    missing on one side, another order, a repeated key, nulls) goes through the merge. Both give the same pairs."""
    from qval.decode.metrics import _same_unique_keys, pair_with_baseline

    rng = np.random.default_rng(3)
    n = 50
    base = pd.DataFrame(
        {
            "sample_id": pd.array([f"s{i:03d}" for i in range(n)], dtype="str"),
            "turn": np.zeros(n, np.int32),
            "new_tokens": rng.integers(1, 100, n).astype(np.int32),
            "decode_s": rng.random(n),
        }
    )
    own = base.assign(new_tokens=base["new_tokens"] + 1, decode_s=base["decode_s"] / 2)
    shapes = {
        "aligned": (own, base),
        "filtered rows, index kept": (own[own["new_tokens"] > 10], base[base["new_tokens"] > 9]),
        "missing on one side": (own.iloc[5:], base),
        "other order": (own.iloc[::-1], base.iloc[::-1]),
        "repeated key": (pd.concat([own.iloc[:3], own.iloc[2:3]]), pd.concat([base.iloc[:3], base.iloc[2:3]])),
        "two turns": (
            pd.concat([own.head(5), own.head(5).assign(turn=1)]).sort_values(["sample_id", "turn"]),
            pd.concat([base.head(5), base.head(5).assign(turn=1)]).sort_values(["sample_id", "turn"]),
        ),
        "null turn": (own.astype({"turn": "Int32"}), base.astype({"turn": "Int32"})),
    }
    cols = ["sample_id", "turn", "new_tokens", "decode_s"]
    for name, (a, b) in shapes.items():
        merged = a[cols].merge(b[cols], on=["sample_id", "turn"], suffixes=("", "_ar"))
        paired = pair_with_baseline(a, b, ["new_tokens", "decode_s"])
        pd.testing.assert_frame_equal(paired, merged, obj=name)
    side_by_side = {name for name, (a, b) in shapes.items() if _same_unique_keys(a, b)}
    assert {"aligned", "filtered rows, index kept", "two turns"} <= side_by_side
    assert not side_by_side & {"missing on one side", "other order", "repeated key"}
    assert len(pair_with_baseline(*shapes["repeated key"], ["new_tokens"])) == 3 + 1 + 2  # the merge's cross product
