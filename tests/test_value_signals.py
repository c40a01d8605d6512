"""State-value and advantage signals: v_spearman and advantage_spearman against an independent scipy computation,
Q metrics undefined for other signals, the oracles' ρ = 1 and the suite check, through the real CLI."""

from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd
import pytest
from conftest import ROOT, run_qval, usage_error, write_suite
from path_plugins import expose_package
from scipy import stats as sps

from qval.qalign.metrics import PairwiseAccuracy, PerStateSpearman, PooledSignAgreement, PooledSpearman
from qval.qalign.scorers.value import DirectValueScorer
from qval.qalign.task import _one_value
from qval.qalign.value_metrics import AdvantageSpearman, VSpearman


def _cell(signal: str | None, **points) -> dict:
    settings = {"points": points, **({"signal": signal} if signal else {})}
    return {"identity": json.dumps({"settings": settings})}


def _rows(seed: int = 0, n_points: int = 80, n_states: int = 15, n_actions: int = 4) -> pd.DataFrame:
    """Evaluation points over revisited states: each state has its own Q row, each point all its actions."""
    rng = np.random.default_rng(seed)
    q = rng.random((n_states, n_actions)).round(2)  # rounded: ties in Q, as real labels have
    visits = rng.integers(0, n_states, n_points)
    out = []
    for p, s in enumerate(visits):
        value = float(rng.normal(q[s].max(), 0.2))  # a noisy V signal, the same on every row of the point
        for a in range(n_actions):
            out.append(
                {
                    "sample_id": f"p{p:03d}",
                    "state_key": str(s),
                    "candidate": a,
                    "ref_q": q[s, a],
                    "v_score": value,
                    "a_score": float(q[s, a] - q[s].max() + rng.normal(0, 0.1)),
                    "is_behaviour": a == 0,
                }
            )
    return pd.DataFrame(out)


def test_v_spearman_is_scipys_over_points_against_the_best_label():
    rows = _rows()
    got = VSpearman().compute(rows.assign(score=rows["v_score"]), cell=_cell("v"))
    points = rows.groupby("sample_id").agg(v=("v_score", "first"), v_star=("ref_q", "max"))
    assert got.value == pytest.approx(sps.spearmanr(points["v"], points["v_star"]).statistic, abs=1e-12)
    assert (got.n, got.n_states) == (80, rows["state_key"].nunique())
    assert got.ci_low < got.value < got.ci_high  # resampling 15 states of a ρ well inside (-1, 1)


def test_advantage_spearman_is_scipys_over_pairs_against_q_minus_v_star():
    rows = _rows(seed=1)
    got = AdvantageSpearman().compute(rows.assign(score=rows["a_score"]), cell=_cell("advantage"))
    a_star = rows["ref_q"] - rows.groupby("sample_id")["ref_q"].transform("max")
    assert got.value == pytest.approx(sps.spearmanr(rows["a_score"], a_star).statistic, abs=1e-12)
    assert (got.n, got.n_states) == (320, rows["state_key"].nunique())
    assert got.ci_low < got.value < got.ci_high


def test_a_failed_point_is_left_out_and_its_labels_still_define_v_star():
    rows = _rows(seed=2)
    rows.loc[rows["candidate"] == 3, "a_score"] = np.nan  # failed candidates: the best label may sit on them
    got = AdvantageSpearman().compute(rows.assign(score=rows["a_score"]), cell=_cell("advantage"))
    kept = rows[rows["a_score"].notna()]
    a_star = (rows["ref_q"] - rows.groupby("sample_id")["ref_q"].transform("max"))[kept.index]
    assert got.value == pytest.approx(sps.spearmanr(kept["a_score"], a_star).statistic, abs=1e-12)
    assert got.n == len(kept)


def test_each_metric_is_undefined_for_another_signal_and_per_state_ones_accept_advantages():
    rows = _rows(seed=3)
    v_rows, a_rows = rows.assign(score=rows["v_score"]), rows.assign(score=rows["a_score"])
    for metric in (PerStateSpearman(), PairwiseAccuracy(), PooledSpearman(), PooledSignAgreement()):
        assert metric.compute(v_rows, cell=_cell("v")).value is None, metric.name  # per-state ρ of a V would be 0
    for metric in (PooledSpearman(), PooledSignAgreement()):
        assert metric.compute(a_rows, cell=_cell("advantage")).value is None, metric.name
    assert VSpearman().compute(v_rows, cell=_cell(None)).value is None  # a Q cell (no signal in its settings)
    assert AdvantageSpearman().compute(a_rows, cell=_cell("v")).value is None
    # Within a state an advantage ranks as Q does: the per-state metric is that of the same scores shifted.
    as_advantage = PerStateSpearman().compute(a_rows, cell=_cell("advantage"))
    shifted = a_rows["score"] + a_rows.groupby("sample_id")["ref_q"].transform("max")  # A + V*: a Q estimate
    as_q = PerStateSpearman().compute(a_rows.assign(score=shifted), cell=_cell(None))
    assert as_advantage.value is not None and as_advantage.value == pytest.approx(as_q.value, abs=1e-12)
    # Sampled candidates: their best label is not V*, so there is no V* to compare with.
    assert VSpearman().compute(v_rows, cell=_cell("v", max_candidates=3)).value is None


def test_a_v_scorer_whose_rows_disagree_fails_the_point():
    assert _one_value([0.5, 0.5], [None, None]) == ([0.5, 0.5], [None, None])
    assert _one_value([None, None], ["no number", "no number"]) == ([None, None], ["no number", "no number"])
    values, errors = _one_value([0.5, 0.7], [None, None])
    assert values == [None, None] and all("same value" in e for e in errors)
    values, errors = _one_value([0.5, None], [None, "no number"])
    assert values == [None, None] and errors[1] == "no number" and "same value" in errors[0]


def test_direct_value_asks_once_per_state_and_honours_the_scorer_contract(smollm):
    from qval.qalign.envs.toy_text import FrozenLakeEnv
    from qval.qalign.points import collect_points
    from qval.qalign.scorers.base import Failed, ScorerContext, build_scorer
    from qval.testing import check_scorer

    check_scorer(DirectValueScorer, smollm, n_points=2, params={"max_new_tokens": 8})
    env = FrozenLakeEnv(FrozenLakeEnv.Params())
    point = collect_points(env, env.reference_q(0.95), 1, 0.3, 1, 20, seed=0)[0]
    scorer = build_scorer(
        DirectValueScorer, DirectValueScorer.Params(max_new_tokens=8), ScorerContext(env=env, model=smollm)
    )
    scores = scorer.score(point)
    assert len(scores) == len(point.candidates) and len({repr(s) for s in scores}) == 1
    assert isinstance(scores[0], (float, Failed))


# --- the real CLI: qval's own pyproject exposed, so its new entry points are seen as `pip install -e .` would ---

SUITE = """\
name: signals
seeds: [0]
qalign:
  envs: [{name: frozenlake, params: {map: 4x4}}]
  methods: [oracle-v, oracle-advantage, oracle-q, random]
  points: {episodes: 25, max_points_per_episode: 3}
  metrics: [per_state_spearman, pooled_spearman, v_spearman, advantage_spearman]
"""


@pytest.fixture
def qval_env(tmp_path):
    return expose_package(tmp_path / "site", ROOT)


def _row(board: str, method: str) -> dict[str, str]:
    """A leaderboard row's cells by column name."""
    lines = board.splitlines()
    header = next(line for line in lines if line.startswith("| rank |"))
    names = [c.strip() for c in header.strip("|").split("|")]
    row = next(line for line in lines if f"| {method} |" in line)
    return dict(zip(names, (c.strip() for c in row.strip("|").split("|"))))


def test_cli_leaderboard_shows_v_and_advantage_agreement_with_n_and_ci(tmp_path, qval_env):
    suite = write_suite(tmp_path / "s.yaml", SUITE)
    run = run_qval("run", suite, "--results", tmp_path / "res", env=qval_env)
    assert run.returncode == 0, run.stdout + run.stderr
    report = run_qval("report", "--results", tmp_path / "res", "--out", tmp_path / "rep", env=qval_env)
    assert report.returncode == 0, report.stdout + report.stderr
    board = (tmp_path / "rep" / "signals" / "leaderboard.md").read_text()
    assert "**v_spearman** ↑: Spearman ρ between a V scorer's value" in board
    assert "**advantage_spearman** ↑: Spearman ρ between an advantage scorer's scores and A*" in board.replace("\\", "")
    cell = re.compile(r"^(-?\d\.\d{3}) \[(-?\d\.\d{3}), (-?\d\.\d{3})\] \(n=(\d+), (\d+) states")
    oracle_v, oracle_a = _row(board, "oracle-v"), _row(board, "oracle-advantage")
    v = cell.match(oracle_v["v_spearman ↑"])
    assert v and v.group(1) == "1.000" and int(v.group(4)) == 75, oracle_v  # one pair per evaluation point
    a = cell.match(oracle_a["advantage_spearman ↑"])
    assert a and a.group(1) == "1.000" and int(a.group(4)) == 300, oracle_a  # 75 points × 4 candidates
    assert oracle_a["per_state_spearman ↑"].startswith("1.000 [")  # an advantage ranks a state's actions as Q does
    # Each metric only where its signal is: the Q metrics of oracle-v, the V and advantage ones of Q scorers, are –.
    assert oracle_v["per_state_spearman ↑"] == oracle_v["pooled_spearman ↑"] == "–"
    assert oracle_a["pooled_spearman ↑"] == oracle_a["v_spearman ↑"] == "–"
    for q_scorer in ("oracle-q", "random"):
        row = _row(board, q_scorer)
        assert row["v_spearman ↑"] == row["advantage_spearman ↑"] == "–", row
        assert cell.match(row["pooled_spearman ↑"]), row


def test_cli_refuses_a_metric_of_another_signal(tmp_path, qval_env):
    suite = write_suite(
        tmp_path / "s.yaml",
        SUITE.replace("[oracle-v, oracle-advantage, oracle-q, random]", "[oracle-q, oracle-v]").replace(
            "[per_state_spearman, pooled_spearman, v_spearman, advantage_spearman]",
            "[per_state_spearman, advantage_spearman]",
        ),
    )
    proc = run_qval("run", suite, "--results", tmp_path / "res", env=qval_env)
    usage_error(
        proc,
        "qalign.metrics[1]': metric 'advantage_spearman' applies to scorers with an advantage signal",
        "add a scorer such as oracle-advantage, or drop the metric",
        "qalign.methods[1]': scorer 'oracle-v' returns a V signal (one value per state)",
        "add v_spearman to qalign.metrics",
    )
    assert not (tmp_path / "res" / "qval.duckdb").exists()  # refused before anything ran


def test_cli_refuses_v_star_metrics_over_sampled_candidates(tmp_path, qval_env):
    suite = write_suite(
        tmp_path / "s.yaml",
        SUITE.replace("max_points_per_episode: 3}", "max_points_per_episode: 3, max_candidates: 3}"),
    )
    proc = run_qval("run", suite, "--results", tmp_path / "res", env=qval_env)
    usage_error(proc, "qalign.points.max_candidates", "metric 'v_spearman' needs V*(s)", "leave it unset")


def test_guided_episodes_only_for_scorers_that_rank_actions(tmp_path, qval_env):
    """A state value cannot choose between actions: a V scorer gets no guided cell, Q and advantage scorers do; a
    suite whose only scorers are V ones cannot list a guided metric."""
    from qval.plan import build_plan
    from qval.suite import load_suite

    metrics = "[per_state_spearman, pooled_spearman, v_spearman, advantage_spearman]"
    path = write_suite(
        tmp_path / "s.yaml",
        SUITE.replace(metrics, "[per_state_spearman, v_spearman, advantage_spearman, guided_success]")
        + "  guided: {episodes: 2}\n",
    )
    cells = build_plan(load_suite(path)).cells.values()
    guided = sorted(c.method for c in cells if c.track == "qalign_guided")
    assert guided == ["oracle-advantage", "oracle-q", "random"]
    only_v = write_suite(
        tmp_path / "v.yaml",
        SUITE.replace("[oracle-v, oracle-advantage, oracle-q, random]", "[oracle-v]").replace(
            metrics, "[v_spearman, guided_success]"
        ),
    )
    usage_error(
        run_qval("plan", only_v, env=qval_env),
        "metric 'guided_success' applies to scorers with a Q signal",
        "or an advantage signal",
    )
