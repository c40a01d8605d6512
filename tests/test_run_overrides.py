"""`qval run/plan --limit N`, `--set PATH=VALUE`, `--model NAME` and suites without models (issue #16, "A
researcher's first hour"), through the real CLI on model-free suites: seconds each, no model loaded."""

from __future__ import annotations

import json

import duckdb
import pytest
from conftest import model_free_suite, run_qval, usage_error, write_suite

import qval.results as R


def _ok(proc) -> dict | str:
    assert proc.returncode == 0, proc.stdout + proc.stderr
    try:
        return json.loads(proc.stdout)
    except ValueError:
        return proc.stdout


def _plan(*args) -> dict:
    return _ok(run_qval("plan", *args, "--json"))


def _stored_points(results) -> dict[str, int]:
    """Distinct points stored per cell, read from DuckDB (what `qval run` ingested, not what it said)."""
    con = duckdb.connect(str(results / "qval.duckdb"), read_only=True)
    try:
        rows = con.execute("SELECT cell_id, count(DISTINCT sample_id) FROM qalign_samples GROUP BY cell_id").fetchall()
    finally:
        con.close()
    return dict(rows)


def test_limit_caps_the_points_stored_and_labels_the_cells(tmp_path):
    # 3 episodes × up to 3 points: more than 2 points per cell without the limit.
    suite, results = model_free_suite(tmp_path, "lim", "[oracle-q, random]", episodes=3, points=3), tmp_path / "r"
    limited = _ok(run_qval("run", suite, "--results", results, "--limit", "2", "--json"))
    assert limited["cells_run"] == 2 and limited["failed_cells"] == []
    assert sorted(_stored_points(results).values()) == [2, 2]
    board = R.leaderboard(results, suite="lim", track="qalign")
    assert sorted(board["n_samples"]) == [2, 2]
    assert set(board["dataset"]) == {"frozenlake limit=2"}  # every table shows it: the label is the cell's
    assert (board["per_state_spearman__n"] <= 2).all()
    _ok(run_qval("report", "--results", results, "--out", tmp_path / "reports", "--quiet"))
    assert "frozenlake limit=2" in (tmp_path / "reports" / "lim" / "leaderboard.md").read_text()
    suites = R.suites(results)
    assert json.loads(suites.loc[suites["suite"] == "lim", "config"].iloc[0])["limit"] == 2


def test_a_limited_cell_is_not_the_full_cell(tmp_path):
    suite, results = model_free_suite(tmp_path, "lim", "[oracle-q, random]", episodes=3, points=3), tmp_path / "r"
    full_ids = {c["cell_id"] for c in _plan(suite, "--results", results)["cells"]}
    limited_ids = {c["cell_id"] for c in _plan(suite, "--results", results, "--limit", "2")["cells"]}
    assert len(full_ids) == len(limited_ids) == 2 and not full_ids & limited_ids
    assert {c["cell_id"] for c in _plan(suite, "--results", results, "--limit", "3")["cells"]}.isdisjoint(limited_ids)

    _ok(run_qval("run", suite, "--results", results, "--limit", "2", "--json"))
    again = _ok(run_qval("run", suite, "--results", results, "--limit", "2", "--json"))
    assert again["cells_run"] == 0  # the same limit is done
    full = _ok(run_qval("run", suite, "--results", results, "--json"))
    assert full["cells_run"] == 2, "a limited first look must not make the full run 'already done'"
    stored = _stored_points(results)
    assert {stored[c] for c in limited_ids} == {2}
    assert all(stored[c] > 2 for c in full_ids)
    # The full cells score the same points: the limited ones are their first two.
    con = duckdb.connect(str(results / "qval.duckdb"), read_only=True)
    try:
        by_cell = dict(
            con.execute(
                "SELECT c.cell_id, list(DISTINCT s.sample_id ORDER BY s.sample_id) FROM qalign_samples s "
                "JOIN cells c USING (cell_id) WHERE c.method = 'oracle-q' GROUP BY c.cell_id"
            ).fetchall()
        )
    finally:
        con.close()
    small, large = sorted(by_cell.values(), key=len)
    assert set(small) < set(large)
    board = R.leaderboard(results, suite="lim", track="qalign")  # the plan written last defines the suite
    assert set(board["dataset"]) == {"frozenlake"} and (board["n_samples"] > 2).all()


@pytest.mark.parametrize("command, value", [("plan", "0"), ("plan", "two"), ("plan", "1.5"), ("run", "-3")])
def test_a_bad_limit_exits_2(tmp_path, command, value):
    suite = model_free_suite(tmp_path, "lim")
    usage_error(run_qval(command, suite, "--results", tmp_path / "r", "--limit", value), "--limit")
    assert not (tmp_path / "r").exists()  # nothing written


def test_set_changes_values_as_the_file_would(tmp_path):
    suite, results = model_free_suite(tmp_path, "over", episodes=3, points=3), tmp_path / "r"
    plan = _plan(
        suite,
        "--results",
        results,
        "--set",
        "seeds=[0, 1]",
        "--set",
        "qalign.envs[0].params.map=8x8",
        "--set",
        "qalign.methods.0=random",
    )
    cells = plan["cells"]
    assert sorted(c["seed"] for c in cells) == [0, 1]
    assert {c["dataset"] for c in cells} == {"frozenlake(map=8x8)"} and {c["method"] for c in cells} == {"random"}

    ran = _ok(
        run_qval(
            "run",
            suite,
            "--results",
            results,
            "--set",
            "qalign.points.episodes=1",
            "--set",
            "qalign.points={episodes: 1, max_points_per_episode: 1}",
            "--json",
        )
    )
    assert ran["cells_run"] == 1 and list(_stored_points(results).values()) == [1]
    config = json.loads(R.suites(results)["config"].iloc[0])
    assert config["qalign"]["points"]["max_points_per_episode"] == 1  # the suite record says what was run


@pytest.mark.parametrize(
    "override, fragments",
    [
        ("qalign.points.episode=4", ["field 'qalign.points.episode'", "did you mean 'episodes'", "(from --set"]),
        ("qalign.pionts.episodes=4", ["field 'qalign.pionts'", "did you mean 'points'"]),
        ("qalign.envs.0.params.slipery=true", ["field 'qalign.envs[0].params.slipery'", "did you mean 'slippery'"]),
        ("qalign.points.episodes=many", ["field 'qalign.points.episodes'", "valid integer", "(from --set"]),
        ("qalign.points.episodes=0", ["field 'qalign.points.episodes'", "greater than or equal to 1"]),
        ("qalign.methods.0=orcale-q", ["field 'qalign.methods[0].name'", "did you mean 'oracle-q'"]),
        ("qalign.envs.4.params.map=8x8", ["field 'qalign.envs[4]'", "the list has 1"]),
        ("seeds.x=1", ["field 'seeds'", "is a list"]),
        ("qalign.points.episodes={a: [1", ["field 'qalign.points.episodes'", "not valid YAML"]),
        ("qalign.points.episodes", ["--set takes PATH=VALUE"]),
        ("qalign..points=1", ["not a dotted field path"]),
        # The value is shown as typed: brackets are not eaten as console markup.
        ("description=[x, {y: z}]", ["field 'description'", "(from --set description=[x, {y: z}])"]),
        # The index goes where the list is, not at the end of the path.
        ("qalign.envs.name=taxi", ["field 'qalign.envs'", "is a list: index it by position, e.g. qalign.envs.0.name"]),
        # An index into a list the file leaves out: set the whole list (not "Input should be a valid list").
        (
            "qalign.temperatures.0=0.5",
            ["field 'qalign.temperatures'", "is not in the file; set the whole list: --set qalign.temperatures=[0.5]"],
        ),
        # A problem the override caused elsewhere in the list entry it wrote, or above it, still names the flag.
        (
            "qalign.envs[0].name=taxi",
            ["field 'qalign.envs[0].params.map'", "unknown key", "(from --set qalign.envs[0].name=taxi)"],
        ),
        ("qalign=null", ["field 'qalign/decode'", "needs at least one track section", "(from --set qalign=null)"]),
    ],
)
def test_a_bad_set_exits_2_with_the_field(tmp_path, override, fragments):
    suite = model_free_suite(tmp_path, "over")
    usage_error(run_qval("plan", suite, "--set", override), *fragments)


@pytest.mark.parametrize(
    "override, whole",
    [
        ("models.0=smollm2-135m-instruct", "--set models=[smollm2-135m-instruct]"),
        ("models.0.source=x", "--set models=[{source: x}]"),
    ],
)
def test_an_index_into_a_list_the_file_leaves_out_says_to_set_the_whole_list(tmp_path, override, whole):
    path = write_suite(
        tmp_path / "free.yaml",
        """\
        name: free
        qalign:
          envs: [frozenlake]
          methods: [oracle-q]
        """,
    )
    stderr = usage_error(run_qval("plan", path, "--set", override), "field 'models'", "is not in the file", whole)
    assert "valid list" not in stderr


def test_a_problem_of_the_file_does_not_name_an_unrelated_flag(tmp_path):
    path = write_suite(
        tmp_path / "bad.yaml",
        """\
        name: bad
        qalign:
          envs: [{name: frozenlake, params: {mapp: 4x4}}]
          methods: [oracle-q, random]
        """,
    )
    stderr = usage_error(
        run_qval("plan", path, "--set", "qalign.points.episodes=2", "--set", "seeds=[1]"),
        "field 'qalign.envs[0].params.mapp'",
        "did you mean 'map'",
    )
    assert "(from" not in stderr


def test_run_refuses_a_bad_set_before_writing_anything(tmp_path):
    suite = model_free_suite(tmp_path, "over")
    usage_error(
        run_qval("run", suite, "--results", tmp_path / "r", "--set", "qalign.points.episode=4"),
        "field 'qalign.points.episode'",
        "did you mean 'episodes'",
    )
    assert not (tmp_path / "r").exists()


def test_model_replaces_the_suites_models(tmp_path):
    path = write_suite(
        tmp_path / "m.yaml",
        """\
        name: models
        models: [smollm2-135m-instruct, {source: smollm2-135m-instruct, name: second, params: {dtype: bfloat16}}]
        qalign:
          envs: [{name: frozenlake, params: {map: 4x4}}]
          methods: [oracle-q, action-logprob]
        """,
    )
    before = {c["model"] for c in _plan(path, "--results", tmp_path / "r")["cells"]}
    assert before == {None, "smollm2-135m-instruct", "second"}
    after = _plan(path, "--results", tmp_path / "r", "--model", "{source: smollm2-135m-instruct, name: small}")
    assert {c["model"] for c in after["cells"]} == {None, "small"}
    usage_error(
        run_qval("plan", path, "--model", "smollm2-135m-instruc"),
        "field 'models[0].source'",
        "unknown model 'smollm2-135m-instruc'",
        "(from --model smollm2-135m-instruc)",
    )


def test_a_model_free_suite_needs_no_models(tmp_path):
    path = write_suite(
        tmp_path / "free.yaml",
        """\
        name: free
        qalign:
          envs: [{name: frozenlake, params: {map: 4x4}}]
          methods: [oracle-q, random]
          points: {episodes: 2, max_points_per_episode: 2}
        """,
    )
    cells = _plan(path, "--results", tmp_path / "r")["cells"]
    assert len(cells) == 2 and {c["model"] for c in cells} == {None}
    ran = _ok(run_qval("run", path, "--results", tmp_path / "r", "--json"))
    assert ran["cells_run"] == 2 and ran["failed_cells"] == [] and ran["problem_cells"] == []
    assert len(R.leaderboard(tmp_path / "r", suite="free", track="qalign")) == 2


@pytest.mark.parametrize(
    "section, named",
    [
        (
            "qalign:\n  envs: [frozenlake]\n  methods: [oracle-q, action-logprob]\n",
            "qalign.methods[1] 'action-logprob'",
        ),
        ("qalign:\n  envs: [frozenlake]\n  methods: [random]\n  points: {behaviour: llm}\n", "behaviour: llm"),
        ("decode:\n  datasets: [spec-bench]\n  policies: [prompt-lookup]\n", "decode.policies 'prompt-lookup'"),
    ],
)
def test_a_suite_needing_a_model_without_models_names_what_needs_it(tmp_path, section, named):
    path = write_suite(tmp_path / "s.yaml", "name: needs\n" + section)
    usage_error(run_qval("run", path, "--results", tmp_path / "r"), "field 'models'", named, "--model NAME")
    assert not (tmp_path / "r").exists()


def test_a_limited_decode_cell_is_paired_with_a_limited_baseline(tmp_path):
    """Decoding caps prompts; speedup pairs each policy with the AR cell of the same settings, so with the limit."""
    path = write_suite(
        tmp_path / "d.yaml",
        """\
        name: dec
        models: [smollm2-135m-instruct]
        decode:
          datasets: [{name: spec-bench, params: {categories: [coding], limit_per_category: 4, max_turns: 1}}]
          policies: [prompt-lookup]
        """,
    )
    results = tmp_path / "r"
    out = _plan(path, "--results", results, "--limit", "2", "--emit-manifest")
    manifest = json.loads((results / "plans" / f"{out['plan_id']}.json").read_text())
    cells = {c["method"]: c for c in manifest["cells"]}
    assert set(cells) == {"ar", "prompt-lookup"}
    assert {c["settings"]["limit"] for c in cells.values()} == {2} and manifest["config"]["limit"] == 2
    assert cells["prompt-lookup"]["baseline_cell_id"] == cells["ar"]["cell_id"]
    assert {c["dataset_label"].endswith(" limit=2") for c in cells.values()} == {True}


def _points_files(results) -> dict[str, list[dict]]:
    return {p.name: json.loads(p.read_text())["points"] for p in (results / "points").glob("*.json")}


def test_a_limited_cell_collects_only_the_first_points_of_the_full_run(tmp_path):
    """--limit N stops collection (and Monte-Carlo labelling) after N points, and those N are the full run's first
    N: same states, candidates and labels, stored apart so that the full run still collects every point."""
    path = write_suite(
        tmp_path / "mc.yaml",
        """\
        name: mc
        qalign:
          envs: [{name: frozenlake, params: {map: 4x4}}]
          methods: [oracle-q, random]
          points: {episodes: 3, max_points_per_episode: 3}
          reference: {method: mc, rollouts: 4}
        """,
    )
    limited, full = tmp_path / "limited", tmp_path / "full"
    assert _ok(run_qval("run", path, "--results", limited, "--limit", "2", "--json"))["cells_run"] == 2
    (name, first), *others = _points_files(limited).items()
    assert not others and name.endswith(".limit2.json") and len(first) == 2  # one collection, shared by both cells

    assert _ok(run_qval("run", path, "--results", full, "--json"))["cells_run"] == 2
    (full_name, every), *others = _points_files(full).items()
    assert not others and full_name == name.replace(".limit2", "") and len(every) > 2
    assert every[:2] == first  # ids, states, candidates, Monte-Carlo labels: the same points

    # With the full set stored, a limited cell reads its prefix from it: nothing is collected again.
    assert _ok(run_qval("run", path, "--results", full, "--limit", "3", "--json"))["cells_run"] == 2
    assert list(_points_files(full)) == [full_name]
    assert sorted(_stored_points(full).values()) == [3, 3, len(every), len(every)]
