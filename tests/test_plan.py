import pytest
from conftest import TINY_SUITE, write_suite

from qval.plan import Plan, build_plan
from qval.suite import load_suite


def _plan(tmp_path, text=TINY_SUITE):
    return build_plan(load_suite(write_suite(tmp_path / "s.yaml", text)))


def test_cell_ids_are_stable_and_content_addressed(tmp_path):
    a, b = _plan(tmp_path), _plan(tmp_path)
    assert list(a.cells) == list(b.cells)
    assert all(len(cid) == 16 for cid in a.cells)
    # Changing something that changes outputs changes the id…
    c = _plan(tmp_path, TINY_SUITE.replace("max_new_tokens: 16", "max_new_tokens: 17"))
    decode_a = {k for k, v in a.cells.items() if v.track == "decode"}
    decode_c = {k for k, v in c.cells.items() if v.track == "decode"}
    assert decode_a.isdisjoint(decode_c)
    # …while descriptions and other runtime-irrelevant text do not.
    d = _plan(tmp_path, TINY_SUITE.replace("tiny suite for tests", "another description"))
    assert set(d.cells) == set(a.cells)


def test_model_free_methods_are_one_cell_and_ar_baseline_is_added(tmp_path):
    text = TINY_SUITE.replace("policies: [ar, ", "policies: [")
    plan = _plan(tmp_path, text)
    methods = sorted(c.method for c in plan.cells.values())
    assert methods.count("oracle-q") == 1 and methods.count("ar") == 1
    pl = next(c for c in plan.cells.values() if c.method == "prompt-lookup")
    ar = next(c for c in plan.cells.values() if c.method == "ar")
    assert pl.baseline_cell_id == ar.cell_id and ar.baseline_cell_id is None


def test_shards_group_by_model_and_timed_shards_are_exclusive(tmp_path):
    plan = _plan(tmp_path)
    by_model = {s.model: s for s in plan.shards}
    assert set(by_model) == {None, "smollm2-135m-instruct"}
    assert by_model["smollm2-135m-instruct"].exclusive and not by_model[None].exclusive
    assert sum(len(s.cell_ids) for s in plan.shards) == len(plan.cells)


def test_manifest_round_trips(tmp_path):
    plan = _plan(tmp_path)
    path = plan.write(tmp_path / "results")
    again = Plan.read(path)
    assert again.to_json() == plan.to_json()


def test_grid_is_the_full_product(tmp_path):
    text = TINY_SUITE.replace("seeds: [0]", "seeds: [" + ", ".join(map(str, range(200))) + "]")
    plan = _plan(tmp_path, text)
    assert len(plan.cells) == 200 * (3 + 2)  # (3 scorers + 2 policies) per seed; every cell depends on the seed


def test_a_policy_naming_its_models_gets_cells_for_those_models_only(tmp_path):
    text = TINY_SUITE.replace(
        "models: [smollm2-135m-instruct]",
        "models: [smollm2-135m-instruct, {source: smollm2-135m-instruct, name: twin, params: {dtype: bfloat16}}]",
    ).replace(
        "{name: prompt-lookup, params: {num_draft: 4}}", "{name: prompt-lookup, params: {num_draft: 4}, models: [twin]}"
    )
    plan = _plan(tmp_path, text)
    decode = [c for c in plan.cells.values() if c.track == "decode"]
    assert sorted((c.model, c.method) for c in decode) == [
        ("smollm2-135m-instruct", "ar"),
        ("twin", "ar"),
        ("twin", "prompt-lookup"),
    ]
    twin_ar = next(c for c in decode if c.model == "twin" and c.method == "ar")
    assert next(c for c in decode if c.method == "prompt-lookup").baseline_cell_id == twin_ar.cell_id


def test_a_policy_naming_a_model_the_suite_lacks_is_refused(tmp_path):
    from qval.suite import SuiteError

    text = TINY_SUITE.replace(
        "{name: prompt-lookup, params: {num_draft: 4}}",
        "{name: prompt-lookup, params: {num_draft: 4}, models: [gemma]}",
    )
    with pytest.raises(SuiteError) as err:
        _plan(tmp_path, text)
    assert "decode.policies[1].models" in str(err.value) and "'gemma' is not one of the suite's models" in str(
        err.value
    )
