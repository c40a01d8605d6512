"""Points are collected and labelled once and stored; a scorer added later is scored on exactly those points."""

import json

from conftest import run_qval, write_suite

import qval.results as R

SUITE = """\
name: {name}
models: [smollm2-135m-instruct]
qalign:
  envs: [{{name: frozenlake, params: {{map: 4x4, slippery: true}}}}]
  methods: [{methods}]
  points: {{episodes: 5, max_points_per_episode: 3, discard_early: 1}}
  reference: {{method: mc, rollouts: 8, agg: max}}
"""


def test_points_are_stored_and_reused_by_a_later_scorer(tmp_path):
    results = tmp_path / "r"
    first = write_suite(tmp_path / "a.yaml", SUITE.format(name="a", methods="oracle-q, random"))
    assert run_qval("run", first, "--results", results).returncode == 0
    stored = list((results / "points").glob("*.json"))
    assert len(stored) == 1  # one set of points for both methods
    before = stored[0].stat().st_mtime_ns
    points = json.loads(stored[0].read_text())["points"]
    assert points and all(p["candidates"][0]["outcome"] for p in points)  # outcomes travel with the points

    later = write_suite(tmp_path / "b.yaml", SUITE.format(name="b", methods="oracle-q, random, heuristic"))
    assert run_qval("run", later, "--results", results).returncode == 0
    assert stored[0].stat().st_mtime_ns == before  # read back, not re-collected or re-labelled
    samples = R.samples(results, "qalign", "b")
    by_method = samples.merge(R.cells(results, "b")[["cell_id", "method"]], on="cell_id")
    heuristic = by_method[by_method["method"] == "heuristic"]
    oracle = by_method[by_method["method"] == "oracle-q"]
    assert set(heuristic["sample_id"]) == set(oracle["sample_id"]) == {p["point_id"] for p in points}
    ref = {(p["point_id"], c["index"]): c["ref_q"] for p in points for c in p["candidates"]}
    assert all(ref[(r.sample_id, r.candidate)] == r.ref_q for r in heuristic.itertuples())  # the stored MC labels
