"""learned-length: `qval train-selector` on an exported sweep, the selector file, the live policy (features computed
from the prefill inside the decode clock, held-out samples only), and the share of the per-instance oracle's gain
that adaptive policies capture live (qval/decode/captured.py). The one real-CLI run here also runs entropy-switch
beside ar (its own checks are in test_entropy_switch.py)."""

from __future__ import annotations

import json
import re

import duckdb
import numpy as np
import pandas as pd
import pytest
from conftest import run_qval, usage_error, write_suite

from qval.decode import replay
from qval.decode.captured import captured_share, share_row
from qval.decode.engine import Engine
from qval.decode.learned_length import (
    HeldOutError,
    LearnedLengthParams,
    LearnedLengthPolicy,
    load_selector,
)
from qval.decode.sweeps import METRIC_LABELS, OwnSweep, _features
from qval.decode.task import prefill_features

FEATURES = ["prefill_entropy", "prefill_top_prob", "log_prompt_tokens", "category=coding", "category=rag"]
CANDIDATES = [1, 2, 4, 8]
TRAIN_IDS = [str(i) for i in range(1000, 1040)]  # not Spec-Bench question ids


def _synthetic_sweep(root, ids=TRAIN_IDS, seed=0):
    """A speedup sweep of prompt lookup's num_draft where the best value follows the prefill entropy: what
    `qval export-sweeps` writes (B*.json, features.json, sweep.json), with no model."""
    rng = np.random.default_rng(seed)
    n = len(ids)
    entropy = rng.uniform(0.0, 4.0, n)
    cat = rng.integers(0, 2, n)
    features = pd.DataFrame(
        {
            "prefill_entropy": entropy,
            "prefill_top_prob": np.exp(-entropy / 2),
            "log_prompt_tokens": rng.uniform(3, 7, n),
            "category=coding": (cat == 0).astype(float),
            "category=rag": (cat == 1).astype(float),
        },
        index=ids,
    )
    best = 3 - np.digitize(entropy, [1.0, 2.0, 3.0])  # the index of the best candidate: low entropy, long drafts
    table = pd.DataFrame(
        {c: 1.0 + 0.5 * (best == j) + rng.uniform(0, 0.05, n) for j, c in enumerate(CANDIDATES)}, index=ids
    )
    folder = root / "smollm2" / "spec-bench" / "T0-seed0" / "prompt-lookup.num_draft-match=latest" / "speedup"
    meta = {
        "knob": "num_draft",
        "metric": METRIC_LABELS["speedup"],
        "model": "smollm2-135m-instruct",
        "dataset": "spec-bench(categories=coding+rag,limit_per_category=20,max_turns=1)",
        "temperature": 0.0,
        "seed": 0,
        "policy": "prompt-lookup",
        "fixed_params": {"max_ngram": 3, "min_ngram": 1, "match": "latest"},
        "cells": {str(c): f"cell{c}" for c in CANDIDATES},
        "features": FEATURES,
    }
    replay.write_sweep(folder, table, features, meta=meta)
    return folder, table, features, best


@pytest.fixture
def trained(tmp_path):
    folder, table, features, best = _synthetic_sweep(tmp_path / "sweeps")
    out = tmp_path / "selector.json"
    proc = run_qval("train-selector", tmp_path / "sweeps", "--sweep", "prompt-lookup.num_draft", "-o", out, "--json")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return out, json.loads(proc.stdout), folder, table, features, best


def test_train_selector_writes_a_validated_versioned_file(trained):
    out, info, folder, table, features, best = trained
    doc = load_selector(str(out))  # validates the schema and the content hash
    assert info["training_samples"] == 40 and info["sha256"] == doc.sha256
    assert doc.format == 1 and doc.policy == "prompt-lookup" and doc.knob == "num_draft"
    assert doc.fixed_params == {"max_ngram": 3, "min_ngram": 1, "match": "latest"}
    assert doc.candidates == CANDIDATES and doc.features == FEATURES
    assert doc.trained_on.dataset == "spec-bench" and doc.trained_on.sample_ids == TRAIN_IDS
    assert doc.trained_on.metric == "speedup" and len(doc.trained_on.sweep_sha256) == 64
    assert np.array(doc.weights).shape == (len(FEATURES) + 1, len(CANDIDATES))
    # The fitted model separates what it was trained on (labels follow the entropy).
    predicted = [doc.predict(row) for row in features.loc[TRAIN_IDS].to_numpy(float)]
    truth = [CANDIDATES[b] for b in best]
    assert np.mean(np.array(predicted) == np.array(truth)) >= 0.9
    # Standardisation is the training features' (selector._fit_logreg's).
    np.testing.assert_allclose(doc.mean, features.to_numpy(float).mean(axis=0))
    # Any edit breaks the hash: the file is refused.
    data = json.loads(out.read_text())
    data["fallback"] = 8.0
    out.write_text(json.dumps(data))
    with pytest.raises(ValueError, match="sha256 does not match"):
        load_selector(str(out))


def test_train_selector_usage_errors(tmp_path):
    _synthetic_sweep(tmp_path / "sweeps")
    proc = run_qval("train-selector", tmp_path / "sweeps", "--sweep", "jacobi.num_draft", "-o", tmp_path / "s.json")
    usage_error(proc, "no sweep named 'jacobi.num_draft'", "prompt-lookup.num_draft")
    proc = run_qval("train-selector", tmp_path / "nowhere", "--sweep", "x", "-o", tmp_path / "s.json")
    usage_error(proc, "export-sweeps")
    assert not (tmp_path / "s.json").exists()


def _suite_with(tmp_path, selector, dataset_params: str):
    return write_suite(
        tmp_path / "s.yaml",
        f"""\
        name: held-out
        models: [smollm2-135m-instruct]
        decode:
          datasets: [{{name: spec-bench, params: {dataset_params}}}]
          policies: [ar, {{name: learned-length, params: {{selector: {selector}}}}}]
          max_new_tokens: 8
        """,
    )


def test_a_training_sample_is_refused_at_planning_and_by_the_drafter(tmp_path):
    # A selector trained on Spec-Bench ids 481-482 (rag's first two): a suite whose dataset holds them is refused.
    _synthetic_sweep(tmp_path / "sweeps", ids=[str(i) for i in range(481, 521)])
    selector = tmp_path / "sel.json"
    assert (
        run_qval("train-selector", tmp_path / "sweeps", "--sweep", "prompt-lookup.num_draft", "-o", selector).returncode
        == 0
    )
    suite = _suite_with(tmp_path, selector, "{categories: [rag], limit_per_category: 2, max_turns: 1}")
    proc = run_qval("plan", suite, "--results", tmp_path / "res")
    usage_error(proc, "decode.policies[1]", "was trained on 2 of this dataset's samples (481, 482)", "held-out")
    # The next prompts of the category are held out: planned.
    suite = _suite_with(tmp_path, selector, "{categories: [summarization], limit_per_category: 2, max_turns: 1}")
    proc = run_qval("plan", suite, "--results", tmp_path / "res")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    # The drafter refuses too (what the worker records as that sample's failure, with the reason).
    from qval.decode.learned_length import LearnedLengthDrafter
    from qval.decode.policies import NgramDrafter

    doc = load_selector(str(selector))
    drafter = LearnedLengthDrafter(doc, NgramDrafter(4, 3, 1), "k")
    with pytest.raises(HeldOutError, match="sample 481 of spec-bench is in the selector's training set"):
        drafter.begin_sample("spec-bench", "481", "rag", 0)
    drafter.begin_sample("mt-bench", "481", "rag", 0)  # another dataset's 481 is another sample


def test_live_features_are_the_offline_ones(smollm, tmp_path):
    """The live policy's feature vector for a prompt equals the row the offline selector builds from the stored
    sample (sweeps._features over decode_samples), and the engine calls the policy inside decode."""
    _synthetic_sweep(tmp_path / "sweeps")
    selector = tmp_path / "sel.json"
    assert (
        run_qval("train-selector", tmp_path / "sweeps", "--sweep", "prompt-lookup.num_draft", "-o", selector).returncode
        == 0
    )
    policy = LearnedLengthPolicy(LearnedLengthParams(selector=str(selector)))
    drafter = policy.drafter(smollm)
    engine = Engine(smollm.model, smollm.eos_token_ids)
    prompts = {
        "s1": ("coding", smollm.chat_ids([{"role": "user", "content": "Write a Python function that adds two ints."}])),
        "s2": (
            "rag",
            smollm.chat_ids([{"role": "user", "content": "Given the passage 'Paris is in France', where is Paris?"}]),
        ),
    }
    rows, live = [], {}
    for sid, (category, ids) in prompts.items():
        state = engine.prefill(ids)
        rows.append(
            {
                "cell_id": "c",
                "sample_id": sid,
                "turn": 0,
                "category": category,
                "error": None,
                "prompt_tokens": len(ids),
                **prefill_features(state),
            }
        )
        drafter.begin_sample("spec-bench", sid, category, 0)
        trace = engine.decode(engine.prefill(ids), drafter, 6)
        assert len(trace.token_ids) == 6
        live[sid] = drafter.last_features.copy()
        assert drafter.inner.k == drafter.selector.predict(live[sid])  # the prediction is what drafts
    con = duckdb.connect()
    con.register("rows", pd.DataFrame(rows))
    con.execute("CREATE TABLE decode_samples AS SELECT * FROM rows")
    offline, names = _features(con, ["c"])
    assert names == FEATURES
    for sid in prompts:
        np.testing.assert_allclose(live[sid], offline.loc[sid].to_numpy(float), rtol=0, atol=1e-12)


def test_captured_share_against_an_independent_computation():
    rng = np.random.default_rng(3)
    n = 300
    best = rng.normal(1.2, 0.1, n)
    oracle = best + rng.uniform(0.0, 0.4, n)
    policy = best + 0.4 * (oracle - best) + rng.normal(0, 0.05, n)
    got = captured_share(policy, best, oracle, seed=0)
    expected = (policy.mean() - best.mean()) / (oracle.mean() - best.mean())
    assert got.value == pytest.approx(expected, rel=1e-12) and got.n == n
    # An independent percentile bootstrap over samples (numpy's own resampling): the same interval within noise.
    draws = np.random.default_rng(11).integers(0, n, (4000, n))
    stats = (policy[draws].mean(1) - best[draws].mean(1)) / (oracle[draws].mean(1) - best[draws].mean(1))
    lo, hi = np.quantile(stats, [0.025, 0.975])
    assert got.ci_low == pytest.approx(lo, abs=0.02) and got.ci_high == pytest.approx(hi, abs=0.02)
    assert captured_share(best, best, best).value is None  # no headroom: undefined, not 0
    # share_row: the best fixed setting and the oracle are the sweep's own, on the samples the policy shares.
    ids = [str(i) for i in range(n)]
    half = rng.integers(0, 2, n).astype(bool)  # which setting wins differs by sample: the oracle gains
    table = pd.DataFrame({1: np.where(half, oracle, best), 2: best - 0.05, 4: np.where(half, best, oracle)}, index=ids)
    table.loc[ids[:5], 4] = np.nan  # incomplete samples take no part
    sweep = OwnSweep("m", "d", 0.0, 0, "prompt-lookup", "num_draft", {}, {}, {"speedup": table}, None)
    live = pd.Series(policy, index=ids).drop(ids[5:10])
    row = share_row(sweep, "speedup", "learned-length", live)
    keep = [i for i in ids[10:]]
    sub = table.loc[keep].to_numpy()
    b = sub[:, int(np.argmax(sub.mean(0)))]
    o = sub.max(1)
    p = live.loc[keep].to_numpy()
    assert row["n"] == n - 10 and row["share"] == pytest.approx((p.mean() - b.mean()) / (o.mean() - b.mean()))


def test_cli_run_learned_length_and_entropy_switch_beside_ar(tmp_path):
    """One tiny real run: prompt lookup's num_draft swept (1, 4) beside the shipped selector's learned-length (on
    a held-out prompt: Spec-Bench's 4th coding prompt; it was trained on the first 3) and entropy-switch; the report's captured
    table names learned-length, and entropy-switch is lossy with lossless undefined."""
    suite = write_suite(
        tmp_path / "s.yaml",
        """\
        name: learned-cli
        seeds: [0]
        models: [smollm2-135m-instruct]
        decode:
          datasets:
            - {name: spec-bench, params: {categories: [coding], skip_per_category: 3, limit_per_category: 1, max_turns: 1}}
          policies:
            - ar
            - {name: prompt-lookup, params: {num_draft: 1}}
            - {name: prompt-lookup, params: {num_draft: 4}}
            - learned-length
            - {name: entropy-switch, params: {threshold: 0.5}}
          max_new_tokens: 12
          metrics: [speedup, acceptance_length, lossless]
        """,
    )
    results = tmp_path / "results"
    proc = run_qval("run", suite, "--results", results, timeout=1800)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    con = duckdb.connect(str(results / "qval.duckdb"), read_only=True)
    errors = con.execute("SELECT count(*) FROM decode_samples WHERE error IS NOT NULL").fetchone()[0]
    lossless = dict(
        con.execute(
            "SELECT c.method || ':' || c.family, m.value FROM cell_metrics m JOIN cells c USING (cell_id) "
            "WHERE m.metric = 'lossless' AND c.method IN ('learned-length', 'entropy-switch')"
        ).fetchall()
    )
    con.close()
    assert errors == 0
    assert lossless == {"learned-length:adaptive": 1.0, "entropy-switch:lossy": None}
    out = tmp_path / "report"
    rep = run_qval("report", "--results", results, "--out", out)
    assert rep.returncode == 0, rep.stdout + rep.stderr
    text = next(out.rglob("leaderboard.md")).read_text()
    assert "captured live by the adaptive policies" in text
    section = text.split("captured live by the adaptive policies", 1)[1]
    assert re.search(r"prompt-lookup\.num_draft.*learned-length", section), section[:2000]
    assert "lossy" in text
