"""Every malformed suite gets an error naming the file, the field and the reason; exit code 2; nothing written."""

import pytest
from conftest import TINY_SUITE, run_qval, write_suite

from qval.errors import SuiteError
from qval.suite import load_suite

CASES = [
    # (description, text transformation, expected field, expected reason fragment)
    ("unknown top-level key", lambda s: s + "colour: blue\n", "colour", "unknown key"),
    (
        "unknown nested key",
        lambda s: s.replace("max_new_tokens: 16", "max_new_tokenz: 16"),
        "decode.max_new_tokenz",
        "unknown key",
    ),
    (
        "negative temperature",
        lambda s: s.replace("max_new_tokens: 16", "max_new_tokens: 16\n  temperatures: [-0.5]"),
        "decode.temperatures",
        "out of range",
    ),
    (
        "wrong type",
        lambda s: s.replace("max_new_tokens: 16", "max_new_tokens: many"),
        "decode.max_new_tokens",
        "integer",
    ),
    (
        "empty grid",
        lambda s: s.replace("methods: [oracle-q, random, action-logprob]", "methods: []"),
        "qalign.methods",
        "at least 1",
    ),
    (
        "unknown plugin",
        lambda s: s.replace("action-logprob]", "action-logprobz]"),
        "qalign.methods[2].name",
        "did you mean 'action-logprob'",
    ),
    (
        "unknown plugin param",
        lambda s: s.replace("num_draft: 4", "num_drafts: 4"),
        "decode.policies[1].params.num_drafts",
        "unknown key",
    ),
    (
        "out-of-range plugin param",
        lambda s: s.replace("num_draft: 4", "num_draft: 0"),
        "decode.policies[1].params.num_draft",
        "greater than or equal to 1",
    ),
    (
        "unknown metric",
        lambda s: s.replace("metrics: [speedup,", "metrics: [sped,"),
        "decode.metrics[0]",
        "unknown metric",
    ),
    ("main metric not listed", lambda s: s + "  main_metric: tokens_per_s\n", "decode.main_metric", "not one of"),
    (
        "metric of the other track",
        lambda s: s.replace("metrics: [speedup,", "metrics: [pooled_spearman, speedup,"),
        "decode.metrics[0]",
        "belongs to the qalign track",
    ),
    ("bad suite name", lambda s: s.replace("name: tiny", "name: ../escape"), "name", "pattern"),
    ("no track", lambda s: s.split("qalign:")[0], "qalign/decode", "at least one track"),
    ("unknown model", lambda s: s.replace("[smollm2-135m-instruct]", "[gpt-17]"), "models[0].source", "unknown model"),
    ("not a mapping", lambda s: "- just\n- a list\n", "<file>", "mapping"),
    ("invalid yaml", lambda s: s + "  bad: [unclosed\n", "<file>", "invalid YAML"),
    ("repeated seeds", lambda s: s.replace("seeds: [0]", "seeds: [1, 1]"), "seeds", "repeat"),
]


@pytest.mark.parametrize("desc,mutate,field,reason", CASES, ids=[c[0] for c in CASES])
def test_malformed_suite_error_names_file_field_reason(tmp_path, desc, mutate, field, reason):
    path = write_suite(tmp_path / "bad.yaml", mutate(TINY_SUITE))
    with pytest.raises(SuiteError) as info:
        load_suite(path)
    assert info.value.field == field, info.value
    assert reason in info.value.reason, info.value
    assert str(path) in str(info.value)


def test_cli_exit_code_2_and_nothing_written(tmp_path):
    path = write_suite(tmp_path / "bad.yaml", TINY_SUITE.replace("max_new_tokens: 16", "max_new_tokens: -3"))
    results = tmp_path / "results"
    for command in ("plan", "run"):
        proc = run_qval(command, path, "--results", results)
        assert proc.returncode == 2, proc.stderr
        assert "bad.yaml" in proc.stderr and "decode.max_new_tokens" in proc.stderr
        assert "Traceback" not in proc.stderr + proc.stdout
    assert not results.exists()


def test_missing_file_is_a_clear_error(tmp_path):
    proc = run_qval("plan", tmp_path / "nope.yaml")
    assert proc.returncode == 2 and "no such file" in proc.stderr


def test_valid_suite_loads(tmp_path):
    suite = load_suite(write_suite(tmp_path / "ok.yaml", TINY_SUITE))
    assert suite.name == "tiny" and len(suite.models) == 1
