"""Each metric is the statistic its label names: cross-checked against an independent computation of the published
definition (scipy; vLLM's and Spec-Bench's formulas written out here) on rows stored by real runs."""

import json
import os
import subprocess
import sys
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pytest
from conftest import run_qval, write_suite
from scipy import stats as sps

from qval.decode.metrics import (
    LoadWhileTimed,
    MeanAcceptedTokens,
    MeasuredSpeedup,
    PerSampleAcceptanceLength,
    SpecBenchSpeedup,
    VllmAcceptanceLength,
)
from qval.qalign.metrics import (
    MIN_POOLED_PAIRS,
    PerStateSpearman,
    PooledKendall,
    PooledPearson,
    PooledSpearman,
    PooledSpearmanAll,
)


def _steps_frame(per_sample_steps: list[list[tuple[int, int]]]) -> pd.DataFrame:
    """(drafted, accepted) per verify step, per sample, in the columns ingest gives metrics."""
    rows = []
    for i, steps in enumerate(per_sample_steps):
        rows.append(
            {
                "sample_id": str(i),
                "turn": 0,
                "target_steps": len(steps),
                "accepted_total": sum(a for _, a in steps),
                "drafts": sum(d >= 1 for d, _ in steps),
            }
        )
    return pd.DataFrame(rows)


def test_vllm_and_specbench_acceptance_lengths_differ_as_published():
    # Prompt lookup drafting on 40% of steps and accepting 2 tokens each time (the example).
    steps = [(4, 2) if i % 5 < 2 else (0, 0) for i in range(50)]
    frame = _steps_frame([steps])
    assert VllmAcceptanceLength().compute(frame).value == pytest.approx(3.0)  # 1 + 40 / 20
    assert MeanAcceptedTokens().compute(frame).value == pytest.approx(1.8)  # mean of (accepted + 1) over 50 steps
    assert PerSampleAcceptanceLength().compute(frame).value == pytest.approx(1.8)
    # AR never drafts: vLLM reports no acceptance length; Spec-Bench's mean is 1.
    ar = _steps_frame([[(0, 0)] * 10])
    assert VllmAcceptanceLength().compute(ar).value is None
    assert MeanAcceptedTokens().compute(ar).value == 1.0


def test_cells_without_a_decode_step_have_no_speedup_or_tau():
    # max_new_tokens: 1 — the only token comes from the prefill; decode time is a few microseconds of nothing.
    one = pd.DataFrame(
        {
            "sample_id": ["0", "1"],
            "turn": 0,
            "new_tokens": 1,
            "target_steps": 0,
            "decode_s": 1e-5,
            "prefill_s": 0.2,
            "accepted_total": 0,
            "drafts": 0,
            "output_sha": "a",
        }
    )
    ar = one.assign(decode_s=1.5e-5)
    assert MeasuredSpeedup().compute(one, ar).value is None
    assert SpecBenchSpeedup().compute(one, ar).value is None
    assert VllmAcceptanceLength().compute(one).value is None
    assert MeanAcceptedTokens().compute(one).value is None
    assert PerSampleAcceptanceLength().compute(one).value is None


def test_specbench_speedup_is_a_ratio_of_mean_rates_not_of_sums():
    # Two questions: speedup depends on length, so the estimands differ.
    pol = pd.DataFrame(
        {
            "sample_id": ["a", "a", "b"],
            "turn": [0, 1, 0],
            "new_tokens": [10, 30, 100],
            "prefill_s": [0.5, 0.5, 0.5],
            "decode_s": [1.5, 2.5, 4.5],
            "target_steps": 5,
        }
    )
    base = pol.assign(decode_s=[2.5, 5.5, 19.5])
    # Spec-Bench: per question Σ tokens / Σ wall (prefill included), mean over questions, ratio of the means.
    own = np.mean([40 / 5.0, 100 / 5.0])
    ar = np.mean([40 / 9.0, 100 / 20.0])
    value = SpecBenchSpeedup().compute(pol, base).value
    assert value == pytest.approx(own / ar)
    decode_only = MeasuredSpeedup().compute(pol.assign(output_sha="x"), base.assign(output_sha="x")).value
    assert decode_only == pytest.approx((140 / 8.5) / (140 / 27.5))
    assert abs(value - decode_only) > 0.1


def test_pooled_statistics_use_behaviour_rows_only():
    rng = np.random.default_rng(5)
    rows = []
    for p in range(60):
        q = rng.random(4)
        score = q + rng.normal(0, 0.3, 4)
        taken = int(rng.integers(4))
        rows += [
            {
                "sample_id": f"p{p:02d}",
                "state_key": f"s{p % 17}",
                "candidate": c,
                "score": score[c],
                "ref_q": q[c],
                "is_behaviour": c == taken,
            }
            for c in range(4)
        ]
    frame = pd.DataFrame(rows)
    behaviour = frame[frame["is_behaviour"]]
    for metric, reference in (
        (PooledSpearman(), sps.spearmanr),
        (PooledKendall(), sps.kendalltau),
        (PooledPearson(), sps.pearsonr),
    ):
        v = metric.compute(frame)
        assert v.value == pytest.approx(reference(behaviour["score"], behaviour["ref_q"]).statistic, abs=1e-12)
        assert v.n == 60 and v.n_states == 17
    every = PooledSpearmanAll().compute(frame)
    assert every.value == pytest.approx(sps.spearmanr(frame["score"], frame["ref_q"]).statistic, abs=1e-12)
    assert every.n == 240
    # QVal's rule: 49 usable pairs give no correlation, 50 give one.
    assert PooledSpearman().compute(frame[frame["sample_id"] < "p49"]).value is None
    assert PooledSpearman().compute(frame[frame["sample_id"] < "p50"]).n == MIN_POOLED_PAIRS
    # Rows from before qval stored is_behaviour cannot be told apart: no QVal statistic for them.
    assert PooledSpearman().compute(frame.assign(is_behaviour=None)).value is None


def test_per_state_metrics_count_points_and_distinct_states():
    rng = np.random.default_rng(2)
    rows = []
    for p in range(40):  # 40 evaluation points over 8 distinct states (the behaviour policy revisits states)
        q = np.array([0.9, 0.95, 0.857, 0.9025])
        score = q + rng.normal(0, 0.05, 4)
        rows += [
            {"sample_id": f"p{p:02d}", "state_key": f"s{p % 8}", "candidate": c, "score": score[c], "ref_q": q[c]}
            for c in range(4)
        ]
    v = PerStateSpearman().compute(pd.DataFrame(rows))
    assert v.n == 40 and v.n_states == 8
    assert v.ci_low <= v.value <= v.ci_high


def test_load_while_timed_is_the_time_weighted_mean_of_other_cores():
    frame = pd.DataFrame(
        {
            "load_other_cores": [0.0, 0.1, 1.2, np.nan],
            "prefill_s": [0.5, 0.0, np.nan, 1.0],
            "decode_s": [1.5, 1.0, 2.0, 1.0],
        }
    )
    v = LoadWhileTimed().compute(frame)
    assert v.value == pytest.approx((0.0 * 2.0 + 0.1 * 1.0 + 1.2 * 2.0) / 5.0) and v.n == 3
    assert LoadWhileTimed().compute(frame.iloc[3:]).value is None


QALIGN_SUITE = """\
name: behaviour
seeds: [0]
models: [smollm2-135m-instruct]  # the methods need no model: none is loaded
qalign:
  envs: [{name: frozenlake, params: {map: 8x8}}]
  methods: [oracle-q, random, heuristic]
  points: {episodes: 30, epsilon: 0.3, max_points_per_episode: 5, discard_early: 1, discard_late: 1}
  metrics: [pooled_spearman, pooled_kendall, pooled_pearson, pooled_spearman_all, per_state_spearman]
  main_metric: per_state_spearman
"""


def test_stored_rows_reproduce_the_pooled_and_per_state_numbers(tmp_path):
    suite = write_suite(tmp_path / "behaviour.yaml", QALIGN_SUITE)
    proc = run_qval("run", suite, "--results", tmp_path / "results", "--quiet")
    assert proc.returncode == 0, proc.stderr
    con = duckdb.connect(str(tmp_path / "results" / "qval.duckdb"), read_only=True)
    samples = con.execute("SELECT * FROM qalign_samples").df()
    metrics = con.execute("SELECT * FROM cell_metrics").df()
    cells = con.execute("SELECT cell_id, method FROM cells").df()
    con.close()
    assert samples["is_behaviour"].notna().all()
    assert (samples.groupby(["cell_id", "sample_id"])["is_behaviour"].sum() == 1).all()  # one per point
    checked = 0
    for cell_id, _method in cells.itertuples(index=False):
        rows = samples[(samples["cell_id"] == cell_id) & samples["error"].isna()]
        got = metrics[metrics["cell_id"] == cell_id].set_index("metric")
        behaviour = rows[rows["is_behaviour"]]
        assert got.loc["pooled_spearman", "value"] == pytest.approx(
            sps.spearmanr(behaviour["score"], behaviour["ref_q"]).statistic, abs=1e-12
        )
        assert got.loc["pooled_spearman", "n"] == len(behaviour)
        assert got.loc["pooled_spearman", "n_states"] == behaviour["state_key"].nunique()
        assert got.loc["pooled_spearman_all", "value"] == pytest.approx(
            sps.spearmanr(rows["score"], rows["ref_q"]).statistic, abs=1e-12
        )
        per_point = [
            sps.spearmanr(g["score"], g["ref_q"]).statistic if g["score"].nunique() > 1 else 0.0
            for _, g in rows.groupby("sample_id")
            if g["ref_q"].nunique() > 1
        ]
        assert got.loc["per_state_spearman", "value"] == pytest.approx(np.mean(per_point), abs=1e-12)
        assert got.loc["per_state_spearman", "n"] == len(per_point)
        checked += 1
    assert checked == 3


SPEC_SUITE = """\
name: specbench-roundtrip
seeds: [0]
models: [smollm2-135m-instruct]
decode:
  datasets: [{name: spec-bench, params: {categories: [writing, summarization], limit_per_category: 2, max_turns: 2}}]
  policies: [ar, {name: prompt-lookup, params: {num_draft: 4}}]
  max_new_tokens: 24
  metrics: [speedup, speedup_specbench, acceptance_length, mean_accepted_tokens, lossless]
"""


def _specbench_rate(lines: list[dict]) -> float:
    """Spec-Bench's speed.py arithmetic, written from its definition: mean over questions of
    Σ new_tokens / Σ wall_time (qval's token counts on both sides)."""
    return float(np.mean([sum(q["choices"][0]["new_tokens"]) / sum(q["choices"][0]["wall_time"]) for q in lines]))


@pytest.fixture(scope="module")
def specbench_export(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("specbench")
    suite = write_suite(tmp / "spec.yaml", SPEC_SUITE)
    proc = run_qval("run", suite, "--results", tmp / "results", "--quiet")
    assert proc.returncode == 0, proc.stderr
    out = tmp / "answers"
    proc = run_qval("export-specbench", "--results", tmp / "results", "--out", out, "--json")
    assert proc.returncode == 0, proc.stderr
    return tmp, out, json.loads(proc.stdout)["cells"]


def test_specbench_export_agrees_with_qval(specbench_export):
    tmp, out, index = specbench_export
    assert json.loads((out / "index.json").read_text()) == index
    by_policy = {e["policy"]: e for e in index}
    pl, ar = by_policy["prompt-lookup"], by_policy["ar"]
    assert pl["baseline_file"] == ar["file"] and ar["baseline_file"] is None
    assert Path(pl["tokenizer"], "tokenizer_config.json").is_file()
    read = lambda e: [json.loads(line) for line in (out / e["file"]).read_text().splitlines()]  # noqa: E731
    pl_lines, ar_lines = read(pl), read(ar)
    assert [q["question_id"] for q in pl_lines] == sorted(q["question_id"] for q in pl_lines)
    assert {len(q["choices"][0]["turns"]) for q in pl_lines if q["category"] == "writing"} == {2}
    con = duckdb.connect(str(tmp / "results" / "qval.duckdb"), read_only=True)
    metrics = con.execute("SELECT cell_id, metric, value FROM cell_metrics").df().set_index(["cell_id", "metric"])
    con.close()
    # Spec-Bench's "#Mean accepted tokens" = np.mean over every accept_lengths entry: exactly qval's metric.
    flat = [a for q in pl_lines for a in q["choices"][0]["accept_lengths"]]
    assert metrics.loc[(pl["cell_id"], "mean_accepted_tokens"), "value"] == pytest.approx(np.mean(flat), abs=1e-12)
    assert metrics.loc[(pl["cell_id"], "speedup_specbench"), "value"] == pytest.approx(
        _specbench_rate(pl_lines) / _specbench_rate(ar_lines), rel=1e-9
    )
    # Lossless at T = 0: the decoded texts are identical, line by line (what Spec-Bench's equal.py compares).
    assert [str(q["choices"][0]["turns"]) for q in pl_lines] == [str(q["choices"][0]["turns"]) for q in ar_lines]


@pytest.mark.skipif(
    not os.environ.get("QVAL_SPECBENCH_DIR"),
    reason="Spec-Bench's own scripts are not shipped with qval (they must run unchanged, not copied): "
    "set QVAL_SPECBENCH_DIR to a checkout of hemingkx/Spec-Bench to run this round trip",
)
def test_specbench_own_scripts_agree(specbench_export):
    tmp, out, index = specbench_export
    repo = Path(os.environ["QVAL_SPECBENCH_DIR"])
    by_policy = {e["policy"]: e for e in index}
    pl, ar = by_policy["prompt-lookup"], by_policy["ar"]
    # speed.py's command line ignores its path arguments (--mean-report is store_true with default True), so its
    # unchanged get_single_speedup is called with the exported files.
    code = (
        "import sys; sys.path.insert(0, 'evaluation'); from speed import get_single_speedup; "
        f"get_single_speedup({str(out / pl['file'])!r}, {str(out / ar['file'])!r}, {pl['tokenizer']!r})"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=repo, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    overall = proc.stdout.split("Task:  overall")[1]
    value = lambda key: float(overall.split(key)[1].split()[0])  # noqa: E731
    con = duckdb.connect(str(tmp / "results" / "qval.duckdb"), read_only=True)
    ours = dict(con.execute("SELECT metric, value FROM cell_metrics WHERE cell_id = ?", [pl["cell_id"]]).fetchall())
    con.close()
    assert value("#Mean accepted tokens:") == pytest.approx(ours["mean_accepted_tokens"], abs=1e-9)
    # Speed.py re-tokenises the baseline's text (length − 1 per turn) where qval counts generated tokens: redo that
    # one step with the same tokenizer and the two agree.
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(pl["tokenizer"])
    ar_lines = [json.loads(line) for line in (out / ar["file"]).read_text().splitlines()]
    pl_lines = [json.loads(line) for line in (out / pl["file"]).read_text().splitlines()]
    retok = np.mean(
        [
            sum(len(tok(t).input_ids) - 1 for t in q["choices"][0]["turns"]) / sum(q["choices"][0]["wall_time"])
            for q in ar_lines
        ]
    )
    assert value("Speedup ratio:") == pytest.approx(_specbench_rate(pl_lines) / retok, rel=1e-9)
    equal = subprocess.run(
        [sys.executable, "equal.py", "--file-path", f"{out}/", "--jsonfile1", ar["file"], "--jsonfile2", pl["file"]],
        cwd=repo / "evaluation",
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert "totally Equal" in equal.stdout, equal.stdout + equal.stderr
