"""Tests for replay.py: reproduce the BlockPilot gsm8k facts, and guard the held-out selector against leakage."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from qval.decode import replay, selector

GSM8K = Path(__file__).parent / "data" / "blockpilot_gsm8k_T0.0"
SIZES = [8, 12, 16, 20, 24]


@pytest.fixture(scope="module")
def gsm8k():
    return replay.load_sweep(GSM8K)


# ------------------------------------------------------------------------------------------ real data facts


def test_gsm8k_reference_numbers(gsm8k):
    """The three numbers published with the BlockPilot release."""
    narrow = replay.evaluate(gsm8k, replay.parse_candidates("14-18"))
    wide = replay.evaluate(gsm8k)
    assert round(narrow.fixed(16).value.value, 3) == 6.509
    assert round(narrow.row("oracle").value.value, 3) == 6.735
    assert round(wide.row("oracle").value.value, 3) == 6.740
    assert narrow.n_samples == 32 and narrow.dropped == []


def test_gsm8k_winner_counts_ties_to_smaller(gsm8k):
    result = replay.evaluate(gsm8k, [14, 15, 16, 17, 18])
    assert result.oracle_choice.value_counts().sort_index().to_dict() == {14: 2, 15: 3, 16: 11, 17: 9, 18: 7}


def test_gsm8k_rows_and_flags(gsm8k):
    result = replay.evaluate(gsm8k, [14, 15, 16, 17, 18])
    fixed = [r for r in result.rows if r.kind == "fixed"]
    assert [r.size for r in fixed] == gsm8k.sizes  # every swept size, not only candidates
    assert {r.size for r in fixed if r.in_candidates} == {14, 15, 16, 17, 18}
    best = result.row("best-fixed")
    assert best.size == 17 and best.gain_vs_best_fixed == pytest.approx(0.0)
    ins = result.row("in-sample-selector")
    assert "in-sample" in ins.note.lower()
    # the released selector scores exactly the oracle: that is what in-sample fitting looks like
    assert ins.value.value == pytest.approx(result.row("oracle").value.value)
    assert gsm8k.ignored == []  # selector_predicted_block.json is recognised, not ignored


def test_gsm8k_headroom(gsm8k):
    result = replay.evaluate(gsm8k, [14, 15, 16, 17, 18])
    h = replay.headroom(result)
    assert h["best_fixed_size"] == 17
    assert h["absolute_gain"] == pytest.approx(h["oracle"] - h["best_fixed"])
    assert h["relative_gain"] == pytest.approx(h["oracle"] / h["best_fixed"] - 1)
    lo, hi = h["absolute_gain_ci"]
    assert 0 < lo <= h["absolute_gain"] <= hi
    assert 0 < h["share_of_samples_where_best_fixed_is_not_argmax"] < 1


def test_gsm8k_json_and_markdown(gsm8k):
    result = replay.evaluate(gsm8k, [14, 15, 16, 17, 18])
    text = json.dumps(replay.to_json(result), allow_nan=False)
    assert "NaN" not in text
    md = replay.to_markdown(result)
    assert "| policy | kind | τ [CI] (n) | block_size | gain vs best fixed |" in md
    assert "6.509" in md and "6.735" in md


def test_ignored_files_are_reported(tmp_path, gsm8k):
    folder = tmp_path / "sweep"
    shutil.copytree(GSM8K, folder)
    for name in ("1.json", "notes.txt"):
        (folder / name).write_text("{}")
    sweep = replay.load_sweep(folder)
    assert sweep.ignored == ["1.json", "notes.txt"]
    result = replay.evaluate(sweep, [16])
    assert any("1.json" in n for n in result.notes)


# ------------------------------------------------------------------------------------------ synthetic sweeps


def _informative_sweep(n=300, seed=1):
    """Each sample's best size is set by feature f0; f1 is noise.  A good selector should recover it."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(-1, 1, size=(n, 2))
    best_idx = np.clip(((x[:, 0] + 1) / 2 * len(SIZES)).astype(int), 0, len(SIZES) - 1)
    dist = np.abs(np.arange(len(SIZES))[None, :] - best_idx[:, None])
    tau = 6.0 - 0.8 * dist + rng.normal(0, 0.1, size=(n, len(SIZES)))
    ids = [str(i) for i in range(n)]
    return pd.DataFrame(tau, index=ids, columns=SIZES), pd.DataFrame(x, index=ids)


def _noise_sweep(n=150, d=60, seed=2):
    """τ independent of the features; more features than samples/5 so an in-sample fit memorises winners."""
    rng = np.random.default_rng(seed)
    tau = 6.0 + rng.normal(0, 1.0, size=(n, len(SIZES)))
    tau[:, 2] += 0.1
    ids = [str(i) for i in range(n)]
    return pd.DataFrame(tau, index=ids, columns=SIZES), pd.DataFrame(rng.normal(size=(n, d)), index=ids)


def test_informative_selector_beats_best_fixed(tmp_path):
    table, feats = _informative_sweep()
    replay.write_sweep(tmp_path, table, feats)
    result = replay.evaluate(replay.load_sweep(tmp_path), folds=5, seed=0)
    sel, best, orc = result.row("selector"), result.row("best-fixed"), result.row("oracle")
    assert sel.value.n == 300
    assert sel.value.value > best.value.value
    assert sel.gain_ci.ci_low > 0  # paired CI of the relative gain excludes zero
    assert sel.value.value <= orc.value.value + 1e-12
    # every row kind the report promises appears beside the selector
    assert {r.kind for r in result.rows} >= {"fixed", "best-fixed", "oracle", "selector"}


def test_noise_selector_does_not_reach_oracle(tmp_path):
    table, feats = _noise_sweep()
    replay.write_sweep(tmp_path, table, feats)
    result = replay.evaluate(replay.load_sweep(tmp_path), folds=5, seed=0)
    sel, best, orc = result.row("selector"), result.row("best-fixed"), result.row("oracle")
    head = orc.value.value - best.value.value
    assert head > 0.5
    assert sel.value.value < best.value.value + 0.5 * head  # captures well under half of the headroom

    # Power check: the same model fit and scored in-sample (i.e. with leakage) gets much closer to the oracle,
    # so the assertion above would fail if the CV leaked.
    y = np.argmax(table.to_numpy(), axis=1)
    leaky = selector._fit_logreg(feats.to_numpy(), y, len(SIZES), l2=1e-3).predict(feats.to_numpy())
    leaky_tau = table.to_numpy()[np.arange(len(table)), leaky].mean()
    assert leaky_tau > best.value.value + 0.5 * head


def test_selector_never_trains_on_the_sample_it_scores(tmp_path, monkeypatch):
    table, feats = _noise_sweep(n=60, d=5)
    replay.write_sweep(tmp_path, table, feats)
    sweep = replay.load_sweep(tmp_path)

    seen = []  # raw training rows of each fit, in fold order
    real_fit = selector._fit_logreg
    monkeypatch.setattr(
        selector, "_fit_logreg", lambda X, y, k, l2=1.0: (seen.append(X.copy()), real_fit(X, y, k, l2))[1]
    )
    result = replay.evaluate(sweep, folds=4, seed=3)
    run = result.selector

    assert len(seen) == run.n_folds == 4
    all_ids = set(sweep.table.index)
    for f in range(run.n_folds):
        test_ids = set(run.fold.index[run.fold == f])
        train_ids = set(run.train_ids[f])
        assert test_ids and not (test_ids & train_ids)
        assert test_ids | train_ids == all_ids
        # the rows actually handed to the optimiser do not include any held-out sample's features
        train_rows = {tuple(r) for r in seen[f]}
        assert not any(tuple(sweep.features.loc[s]) in train_rows for s in test_ids)
        assert len(seen[f]) == len(train_ids)

    # fold assignment is exposed in JSON and deterministic in the seed
    js = replay.to_json(result)
    assert js["selector"]["fold_of_sample"] == run.fold.to_dict()
    again = replay.evaluate(sweep, folds=4, seed=3).selector
    assert again.fold.equals(run.fold) and again.predictions.equals(run.predictions)


def test_missing_samples_are_dropped_per_candidate_set(tmp_path):
    table, _ = _informative_sweep(n=40)
    table.loc["3", 16] = np.nan
    replay.write_sweep(tmp_path, table, None)
    sweep = replay.load_sweep(tmp_path)
    assert np.isnan(sweep.table.loc["3", 16])

    with16 = replay.evaluate(sweep, [12, 16, 20])
    assert with16.dropped == ["3"] and with16.n_samples == 39
    assert any("dropped 1" in n for n in with16.notes)

    without16 = replay.evaluate(sweep, [12, 20])
    assert without16.dropped == [] and without16.n_samples == 40
    assert without16.fixed(16).value.n == 39  # non-candidate size scored on the samples it has
    assert without16.fixed(16).in_candidates is False


def test_write_load_round_trip(tmp_path):
    table, feats = _informative_sweep(n=25)
    replay.write_sweep(tmp_path, table, feats)
    sweep = replay.load_sweep(tmp_path)
    assert sweep.sizes == SIZES and sweep.knob == "block_size" and sweep.ignored == []
    pd.testing.assert_frame_equal(sweep.table, table, check_names=False)
    np.testing.assert_array_equal(sweep.features.to_numpy(), feats.to_numpy())
    assert list(sweep.features.index) == list(feats.index)


def test_json_never_contains_nan(tmp_path):
    """A single-sample sweep has undefined CIs: they must come out as null, not NaN."""
    replay.write_sweep(tmp_path, pd.DataFrame({4: [3.0], 8: [5.0]}, index=["0"]), None)
    js = replay.to_json(replay.evaluate(replay.load_sweep(tmp_path)))
    text = json.dumps(js, allow_nan=False)
    assert "NaN" not in text
    assert js["rows"][0]["ci_low"] is None
    assert js["headroom"]["absolute_gain_ci"] == [None, None]


# ------------------------------------------------------------------------------------------ bad inputs


@pytest.mark.parametrize("content", ['{"0": 5.0', '{"0": "abc"}', '{"0": null}', '{"0": true}', "[1, 2]", '{"0": NaN}'])
def test_malformed_size_file_names_the_file(tmp_path, content):
    (tmp_path / "B8.json").write_text('{"0": 5.0}')
    (tmp_path / "B16.json").write_text(content)
    with pytest.raises(ValueError, match="B16.json"):
        replay.load_sweep(tmp_path)


@pytest.mark.parametrize(
    "name,content",
    [
        ("features.json", '{"0": [1.0, "x"]}'),
        ("features.json", '{"0": [1.0], "1": [1.0, 2.0]}'),
        ("features.json", "not json"),
        ("selector_predicted_block.json", '{"0": "sixteen"}'),
    ],
)
def test_malformed_aux_file_names_the_file(tmp_path, name, content):
    (tmp_path / "B16.json").write_text('{"0": 5.0, "1": 6.0}')
    (tmp_path / name).write_text(content)
    with pytest.raises(ValueError, match=name):
        replay.load_sweep(tmp_path)


def test_no_size_files(tmp_path):
    (tmp_path / "1.json").write_text("{}")
    with pytest.raises(ValueError, match="no B<size>.json"):
        replay.load_sweep(tmp_path)


def test_unknown_candidates_rejected(tmp_path):
    replay.write_sweep(tmp_path, pd.DataFrame({4: [3.0, 4.0]}, index=["0", "1"]), None)
    with pytest.raises(ValueError, match="not among swept sizes"):
        replay.evaluate(replay.load_sweep(tmp_path), [4, 5])


# ------------------------------------------------------------------------------------------ candidates parsing


@pytest.mark.parametrize(
    "text,expected",
    [
        ("14-18", [14, 15, 16, 17, 18]),
        ("14,16,18", [14, 16, 18]),
        (" 18 , 14 ", [14, 18]),
        ("4,14-16", [4, 14, 15, 16]),
        ("16", [16]),
    ],
)
def test_parse_candidates(text, expected):
    assert replay.parse_candidates(text) == expected


@pytest.mark.parametrize("text", ["", "18-14", "a-b", "14..18", "14,,16", "-3", "1.5-2", ".5"])
def test_parse_candidates_rejects(text):
    with pytest.raises(ValueError):
        replay.parse_candidates(text)


def test_cli_replay_json_reproduces_release(tmp_path):
    from conftest import run_qval

    proc = run_qval("replay", GSM8K, "--candidates", "14-18", "--json")
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    rows = {r["policy"]: r for r in data["rows"]}
    assert round(rows["fixed B=16"]["value"], 3) == 6.509 and rows["fixed B=16"]["n"] == 32
    assert round(data["headroom"]["oracle"], 3) == 6.735
    bad = run_qval("replay", tmp_path)
    assert bad.returncode == 2 and "no B<size>.json files" in bad.stderr


def test_parse_candidates_accepts_decimal_knob_values():
    # stop thresholds are swept too; integral values key as ints so B16.json and 16.0 agree
    assert replay.parse_candidates("0.3,0.6, 16.0") == [0.3, 0.6, 16]


def test_decimal_knob_sweep_round_trips_with_its_metadata(tmp_path):
    table = pd.DataFrame({0.3: [1.2, 1.5, 1.1, 1.9], 0.6: [1.4, 1.3, 1.6, 1.2]}, index=["a", "b", "c", "d"])
    feats = pd.DataFrame({"x": [0.1, 0.5, 0.2, 0.9]}, index=table.index)
    meta = {"knob": "stop_threshold", "metric": "measured speedup vs same-run AR (per sample)", "features": ["x"]}
    replay.write_sweep(tmp_path, table, feats, meta=meta)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["B0.3.json", "B0.6.json", "features.json", "sweep.json"]
    sweep = replay.load_sweep(tmp_path)
    assert (sweep.knob, sweep.metric, sweep.sizes, list(sweep.features.columns)) == (
        "stop_threshold",
        meta["metric"],
        [0.3, 0.6],
        ["x"],
    )
    result = replay.evaluate(sweep, folds=2)
    assert result.row("oracle").value.value == pytest.approx(np.mean([1.4, 1.5, 1.6, 1.9]))
    assert result.best_fixed_size == 0.3  # means 1.425 vs 1.375
    md = replay.to_markdown(result)
    assert "| policy | kind | measured speedup vs same-run AR [CI] (n) | stop_threshold |" in md
