"""Scorer-guided agents (qval/qalign/guided.py): hand-computed episodes, the oracle's zero regret (and its
expectation on slippery ice), the metrics against an independent computation, and the real CLI: guided cells beside
the points cells, on the same leaderboard row, added to a finished suite without recomputing a point."""

from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import run_qval, usage_error, write_suite

from qval import results as R
from qval.plan import build_plan
from qval.qalign.envs.toy_text import FrozenLakeEnv, FrozenLakeParams
from qval.qalign.guided import candidate_indices, choose, run_episode
from qval.qalign.guided_metrics import GuidedRegret, GuidedReturn, GuidedSuccess
from qval.results import _share_rows
from qval.stats import bounded_mean
from qval.suite import load_suite

LAKE = ["SFFF", "FHFH", "FFFH", "HFFG"]  # gymnasium's 4x4 map
MOVES = {0: (0, -1), 1: (1, 0), 2: (0, 1), 3: (-1, 0)}  # left, down, right, up


def lake(desc, slippery=False):
    return FrozenLakeEnv(FrozenLakeParams(map="custom", desc=desc, slippery=slippery))


def oracle(point):
    return [c.ref_q for c in point.candidates], [None] * len(point.candidates), []


def frame(rows_by_episode):
    """The metric view's rows (the last step of each episode) as the metric stage hands them over."""
    return pd.DataFrame([rows[-1] for rows in rows_by_episode])


# --- hand-computed episodes ------------------------------------------------------------------------------------------


def test_oracle_walks_the_corridor_in_two_steps():
    env, gamma = lake(["SFG"]), 0.9
    q = env.reference_q(gamma)
    # From S: right reaches F (then G one step later): γ·1; every other move stays on S: γ·0.9.
    assert np.allclose(q[0], [0.81, 0.81, 0.9, 0.81])
    rows = run_episode(env, q, gamma, seed=0, episode=0, max_steps=10, best_of_n=None, score=oracle)
    assert [r["action"] for r in rows] == ["right", "right"]
    assert [r["reward"] for r in rows] == [0.0, 1.0]
    last = rows[-1]
    assert last["last"] and not rows[0]["last"]
    assert last["steps"] == 2 and last["success"] and last["failed_steps"] == 0
    assert last["episode_return"] == pytest.approx(0.9) and last["v_star"] == pytest.approx(0.9)


def test_a_scorer_that_walks_into_the_hole_has_the_whole_value_as_regret():
    env, gamma = lake(["SH", "FG"]), 0.9
    q = env.reference_q(gamma)

    def always_right(point):
        return [1.0 if c.action == "right" else 0.0 for c in point.candidates], [None] * 4, []

    rows = run_episode(env, q, gamma, 0, 0, 10, None, always_right)
    assert len(rows) == 1 and rows[0]["action"] == "right" and rows[0]["done"]
    assert not rows[0]["success"] and rows[0]["episode_return"] == 0.0
    best = run_episode(env, q, gamma, 0, 0, 10, None, oracle)
    assert [r["action"] for r in best] == ["down", "right"] and best[-1]["episode_return"] == pytest.approx(0.9)
    values = frame([rows, best])
    assert GuidedRegret().compute(values).value == pytest.approx(0.45)  # (0.9 + 0) / 2
    assert GuidedSuccess().compute(values).value == 0.5
    assert GuidedReturn().compute(values).value == pytest.approx(0.45)


def test_the_step_limit_ends_an_episode_without_success():
    env, gamma = lake(["SFG"]), 0.9
    q = env.reference_q(gamma)

    def stay(point):  # "left" on S bumps into the wall
        return [1.0 if c.action == "left" else 0.0 for c in point.candidates], [None] * 4, []

    rows = run_episode(env, q, gamma, 0, 0, 7, None, stay)
    assert len(rows) == 7 and not rows[-1]["success"] and rows[-1]["episode_return"] == 0.0
    assert rows[-1]["v_star"] - rows[-1]["episode_return"] == pytest.approx(0.9)


def test_ties_are_broken_by_a_seeded_draw_and_failed_scores_count_as_minus_infinity():
    rng = np.random.default_rng(0)
    draws = [choose([1.0, 1.0, 0.0, 1.0], rng) for _ in range(300)]
    assert set(draws) == {0, 1, 3}  # every tied best, never the worse one
    assert choose([None, 0.2, None, -5.0], rng) == 1
    assert {choose([None, None, None], rng) for _ in range(100)} == {0, 1, 2}  # none scored: uniform (as QVal)
    again = np.random.default_rng(0)
    assert draws == [choose([1.0, 1.0, 0.0, 1.0], again) for _ in range(300)]


def test_failed_steps_are_counted_and_the_agent_still_moves():
    env, gamma = lake(LAKE), 0.95
    q = env.reference_q(gamma)

    def fails(point):
        n = len(point.candidates)
        return [None] * n, ["ScoreError: no reply"] * n, []

    rows = run_episode(env, q, gamma, 3, 0, 20, None, fails)
    assert rows[-1]["failed_steps"] == len(rows) and all(r["error"] == "ScoreError: no reply" for r in rows)


def test_best_of_n_scores_only_the_drawn_candidates():
    rng = np.random.default_rng(1)
    for _ in range(200):
        picked = candidate_indices(4, 2, rng)
        assert 1 <= len(picked) <= 2 and picked == sorted(set(picked)) and set(picked) <= {0, 1, 2, 3}
    assert candidate_indices(4, None, rng) == [0, 1, 2, 3]
    env, gamma = lake(LAKE), 0.95
    q = env.reference_q(gamma)
    rows = run_episode(env, q, gamma, 0, 0, 100, 2, oracle)
    for r in rows:
        assert 1 <= len(r["candidates"]) <= 2
        assert r["action"] == r["candidates"][int(np.argmax(r["ref_q"]))] or len(set(r["ref_q"])) == 1
    # Best-of-1 with the oracle is a uniform random walk: it does worse than the full oracle on some episode.
    walks = [run_episode(env, q, gamma, 0, ep, 100, 1, oracle)[-1] for ep in range(20)]
    assert np.mean([w["v_star"] - w["episode_return"] for w in walks]) > 0.3


# --- the oracle's regret ---------------------------------------------------------------------------------------------


def test_oracle_has_zero_regret_on_deterministic_maps():
    for desc in (LAKE, ["SFFFFF", "FHFHFF", "FFFHFG"]):
        env, gamma = lake(desc), 0.95
        q = env.reference_q(gamma)
        episodes = [run_episode(env, q, gamma, 0, ep, 100, None, oracle) for ep in range(10)]
        regret = [e[-1]["v_star"] - e[-1]["episode_return"] for e in episodes]
        assert np.allclose(regret, 0.0, atol=1e-9) and all(e[-1]["success"] for e in episodes)


def test_oracle_regret_on_slippery_ice_is_zero_in_expectation():
    """Slippery FrozenLake: one return is a draw, so regret is V*(s0) minus a sampled return. The oracle's mean over
    episodes is not 0, but its 95% interval covers 0 (the step limit truncates a negligible γ^100 tail)."""
    env, gamma = lake(LAKE, slippery=True), 0.95
    q = env.reference_q(gamma)
    episodes = [run_episode(env, q, gamma, 0, ep, 100, None, oracle) for ep in range(300)]
    value = GuidedRegret().compute(frame(episodes))
    assert value.n == 300 and value.value != 0.0
    assert value.ci_low < 0.0 < value.ci_high
    # A scorer that never prefers anything (ties everywhere: uniform moves) has a regret whose interval excludes 0.
    flat = [
        run_episode(env, q, gamma, 0, ep, 100, None, lambda p: ([0.0] * len(p.candidates), [None] * 4, []))
        for ep in range(100)
    ]
    assert GuidedRegret().compute(frame(flat)).ci_low > 0.0


# --- leaderboard rows ------------------------------------------------------------------------------------------------


def test_cells_of_one_grid_point_share_a_row_only_when_unambiguous():
    key = {"model": "–", "method": "random", "method_label": "random", "dataset_label": "frozenlake"}
    rows = pd.DataFrame(
        [
            {**key, "temperature": 0.0, "seed": 0, "top1": 0.3, "top1__lo": 0.1, "top1__hi": 0.5, "top1__n": 9},
            {**key, "temperature": 0.0, "seed": 0, "guided_success": 0.2, "guided_success__n": 20},
            {**key, "temperature": 0.0, "seed": 1, "top1": 0.4, "top1__n": 9},  # another seed: its own row
            {**key, "temperature": 0.0, "seed": 1, "top1": 0.5, "top1__n": 9},  # same kind twice: never merged
            {**key, "temperature": 0.0, "seed": 1, "guided_success": 0.1, "guided_success__n": 20},
        ],
        index=["p0", "g0", "p1", "p1b", "g1"],
    )
    for column in ("guided_success__lo", "guided_success__hi", "top1__n_states", "guided_success__n_states"):
        rows[column] = np.nan
    kinds = pd.Series(["qalign", "qalign_guided", "qalign", "qalign", "qalign_guided"], index=rows.index)
    out = _share_rows(rows, kinds, ("qalign", "qalign_state", "qalign_guided"), ["guided_success", "top1"])
    assert list(out.index) == ["p0", "p1", "p1b", "g1"]
    assert out.at["p0", "guided_success"] == 0.2 and out.at["p0", "guided_success__n"] == 20
    assert out.at["p0", "top1"] == 0.3 and out.at["p0", "other_cells"] == "g0"
    assert out.at["g1", "other_cells"] == "" and np.isnan(out.at["p1", "guided_success"])


# --- the suite and the real CLI --------------------------------------------------------------------------------------

SUITE = """\
name: guided
seeds: [0]
qalign:
  envs: [{{name: frozenlake, params: {{map: 4x4}}}}, cliffwalking]
  methods: [oracle-q, random, heuristic]
  points: {{episodes: 3, max_points_per_episode: 3}}
  metrics: [per_state_spearman, top1{extra}]
{guided}"""
GUIDED = ", guided_success, guided_return, guided_regret"


def test_guided_cells_are_expanded_only_when_a_guided_metric_is_listed(tmp_path):
    plain = build_plan(load_suite(write_suite(tmp_path / "a.yaml", SUITE.format(extra="", guided=""))))
    both = build_plan(load_suite(write_suite(tmp_path / "b.yaml", SUITE.format(extra=GUIDED, guided=""))))
    assert len(plain.cells) == 6 and len(both.cells) == 12
    assert set(plain.cells) < set(both.cells)  # the points cells keep their ids
    guided = [c for c in both.cells.values() if c.track == "qalign_guided"]
    assert len(guided) == 6 and guided[0].settings["guided"] == {"episodes": 20, "max_steps": None, "best_of_n": None}
    bon = build_plan(
        load_suite(write_suite(tmp_path / "c.yaml", SUITE.format(extra=GUIDED, guided="  guided: {best_of_n: 2}\n")))
    )
    assert set(bon.cells) & set(both.cells) == set(plain.cells)  # best-of-N episodes are other cells


def test_guided_settings_are_checked(tmp_path):
    path = write_suite(tmp_path / "s.yaml", SUITE.format(extra=GUIDED, guided="  guided: {episodes: 0}\n"))
    usage_error(run_qval("plan", path), "qalign.guided.episodes")


def _lake_step(r, c, a):
    dr, dc = MOVES[a]
    return min(max(r + dr, 0), 3), min(max(c + dc, 0), 3)


def _independent_random_episodes(seed: int, episodes: int, gamma: float):
    """The random scorer's guided episodes on the 4x4 lake, computed without qval's environment or runner: hand-
    written moves, V* by counting steps to G, the scorer's documented per-point seeding, argmax of its scores."""
    v_start = gamma**5  # six moves from S to G, the reward on the sixth
    out = []
    for ep in range(episodes):
        r, c, ret, success = 0, 0, 0.0, False
        for t in range(100):  # gymnasium's FrozenLake limit
            point_id = f"e{ep:04d}t{t:04d}"
            scores = np.random.default_rng([seed, zlib.crc32(point_id.encode())]).random(4)
            r, c = _lake_step(r, c, int(np.argmax(scores)))
            if LAKE[r][c] == "G":
                ret, success = gamma**t, True
                break
            if LAKE[r][c] == "H":
                break
        out.append((v_start, ret, success))
    return np.array(out, float)


def test_cli_guided_metrics_on_the_leaderboard(tmp_path):
    results = tmp_path / "results"
    first = write_suite(tmp_path / "s.yaml", SUITE.format(extra="", guided=""))
    proc = run_qval("run", first, "--results", results)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    points_parts = {p: p.stat().st_mtime_ns for p in (results / "parts").rglob("*.parquet")}
    assert points_parts
    # Adding the guided metrics to the finished suite runs only the guided cells.
    second = write_suite(tmp_path / "s.yaml", SUITE.format(extra=GUIDED, guided="  guided: {episodes: 20}\n"))
    proc = run_qval("run", second, "--results", results)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "12 cells, 6 to run" in proc.stdout + proc.stderr
    assert "random on frozenlake [qalign_guided] (no model" in proc.stdout + proc.stderr  # progress names the kind
    assert {p: p.stat().st_mtime_ns for p in points_parts} == points_parts

    board = R.leaderboard(results, "guided", "qalign")
    assert len(board) == 6  # one row per method and env: guided metrics on the points cell's row
    for column in ("per_state_spearman", "guided_success", "guided_return", "guided_regret"):
        assert board[column].notna().all(), column
    assert (board["guided_success__n"] == 20).all() and (board["guided_regret__lo"] <= board["guided_regret"]).all()
    oracle_rows = board[board["method"] == "oracle-q"]
    assert np.allclose(oracle_rows["guided_regret"], 0.0, atol=1e-9) and (oracle_rows["guided_success"] == 1.0).all()
    lake_oracle = oracle_rows[oracle_rows["dataset"] == "frozenlake"].iloc[0]
    assert lake_oracle["guided_return"] == pytest.approx(0.95**5)

    mine = _independent_random_episodes(0, 20, 0.95)
    random_lake = board[(board["method"] == "random") & (board["dataset"] == "frozenlake")].iloc[0]
    assert random_lake["guided_success"] == pytest.approx(mine[:, 2].mean())
    assert random_lake["guided_return"] == pytest.approx(mine[:, 1].mean())
    assert random_lake["guided_regret"] == pytest.approx((mine[:, 0] - mine[:, 1]).mean())
    # Wilson's interval, written out: k successes of n.
    n, share, z = 20, mine[:, 2].mean(), 1.959963984540054
    centre = (share + z * z / (2 * n)) / (1 + z * z / n)
    half = z * np.sqrt(share * (1 - share) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    assert random_lake["guided_success__lo"] == pytest.approx(max(0.0, min(share, centre - half)))
    assert random_lake["guided_success__hi"] == pytest.approx(min(1.0, max(share, centre + half)))
    expected = bounded_mean(mine[:, 0] - mine[:, 1], -1.0, 1.0)
    assert random_lake["guided_regret__lo"] == pytest.approx(expected.ci_low)

    out = tmp_path / "reports"
    proc = run_qval("report", "--results", results, "--out", out)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    text = (out / "guided" / "leaderboard.md").read_text()
    assert "guided_regret ↓" in text and "(n=20" in text
    row = next(line for line in text.splitlines() if "| oracle-q |" in line and "frozenlake" not in line)
    assert row.count("[") >= 5  # per_state_spearman, top1 and the three guided metrics, each with its CI


def test_cli_samples_of_a_guided_cell(tmp_path):
    results = tmp_path / "results"
    path = write_suite(
        tmp_path / "s.yaml",
        SUITE.format(extra=GUIDED, guided="  guided: {episodes: 2, best_of_n: 2}\n").replace(
            "[oracle-q, random, heuristic]", "[oracle-q]"
        ),
    )
    proc = run_qval("run", path, "--results", results)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    cells = R.cells(results, "guided")
    guided = cells[cells["track"] == "qalign_guided"]
    assert len(guided) == 2 and (guided["n_samples"] == 2).all()
    rows = R.samples(results, "qalign_guided", "guided")
    assert rows["candidates"].map(len).max() <= 2
    assert rows.groupby(["cell_id", "sample_id"])["last"].sum().eq(1).all()
    proc = run_qval("samples", guided["cell_id"].iloc[0][:12], "--results", results, "--limit", "1")
    assert proc.returncode == 0 and "episode_return" in proc.stdout, proc.stdout + proc.stderr
    assert Path(results / "qval.duckdb").exists()


def test_guided_intervals_hold_the_mean_when_an_environment_pays_other_rewards():
    """qval's environments pay a sparse success reward, so returns lie in [0, 1]; a third-party environment's shaped
    rewards (here -1 per step) must not give an interval that excludes its own mean."""
    returns = np.array([-3.0, -2.5, -4.0, 0.5, -1.0, -2.0])
    frame = pd.DataFrame({"episode_return": returns, "v_star": np.full(returns.size, 0.5), "success": False})
    for metric, values in ((GuidedReturn(), returns), (GuidedRegret(), 0.5 - returns)):
        value = metric.compute(frame)
        assert value.value == pytest.approx(values.mean()) and value.n == returns.size
        assert value.ci_low < value.value < value.ci_high
