"""The mistakes of a researcher's first hour (issue #16), through the real CLI: each exits 2 with the fix in the
message, never an internal error."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from conftest import TINY_SUITE, model_free_suite, run_qval, usage_error, write_suite


def test_metric_typo_gets_a_suggestion(tmp_path):
    suite = model_free_suite(tmp_path, "typo")
    suite.write_text(suite.read_text() + "  metrics: [per_state_spearmann]\n  main_metric: per_state_spearmann\n")
    usage_error(
        run_qval("plan", suite, "--results", tmp_path / "r"),
        "qalign.metrics[0]",
        "unknown metric 'per_state_spearmann'; did you mean 'per_state_spearman'",
    )


def test_plugin_param_typo_gets_a_suggestion(tmp_path):
    suite = model_free_suite(tmp_path, "typo")
    suite.write_text(suite.read_text().replace("map: 4x4", "map: 4x4, slipery: true"))
    usage_error(
        run_qval("plan", suite, "--results", tmp_path / "r"),
        "qalign.envs[0].params.slipery",
        "unknown key; did you mean 'slippery'",
    )


def test_suite_key_typo_gets_a_suggestion(tmp_path):
    path = write_suite(tmp_path / "s.yaml", TINY_SUITE.replace("max_new_tokens: 16", "max_new_tokenz: 16"))
    usage_error(run_qval("plan", path), "decode.max_new_tokenz", "did you mean 'max_new_tokens'")


def test_every_problem_is_listed_each_on_its_own_line(tmp_path):
    text = (
        TINY_SUITE.replace("max_new_tokens: 16", "max_new_tokens: -3\n  warmup: -1")
        .replace("seeds: [0]", "seeds: [-1]")
        .replace("colour", "")
    ) + "colour: blue\n"
    stderr = usage_error(run_qval("plan", write_suite(tmp_path / "s.yaml", text)), "4 problems")
    lines = [line.strip() for line in stderr.splitlines()]
    for field in ("seeds", "colour", "decode.max_new_tokens", "decode.warmup"):
        assert any(line.startswith(f"field '{field}':") for line in lines), stderr
    assert "more problem" not in stderr


def test_plugin_problems_are_listed_together(tmp_path):
    text = (
        TINY_SUITE.replace("action-logprob]", "action-logprobz]")
        .replace("num_draft: 4", "num_drafts: 4")
        .replace("metrics: [speedup,", "metrics: [sped,")
    )
    usage_error(
        run_qval("plan", write_suite(tmp_path / "s.yaml", text)),
        "3 problems",
        "field 'qalign.methods[2].name'",
        "field 'decode.policies[1].params.num_drafts'",
        "field 'decode.metrics[0]'",
    )


def test_a_long_list_of_problems_is_capped(tmp_path):
    keys = "".join(f"typo{i}: 1\n" for i in range(25))
    stderr = usage_error(run_qval("plan", write_suite(tmp_path / "s.yaml", TINY_SUITE + keys)), "25 problems")
    assert "… and 5 more" in stderr
    assert sum("unknown key" in line for line in stderr.splitlines()) == 20


def test_unknown_policy_is_called_a_policy(tmp_path):
    path = write_suite(tmp_path / "s.yaml", TINY_SUITE.replace("name: prompt-lookup,", "name: prompt-lookupp,"))
    stderr = usage_error(run_qval("plan", path), "unknown policy 'prompt-lookupp'; did you mean 'prompt-lookup'")
    assert "policie '" not in stderr


def _hf_suite(tmp_path, model_path) -> object:
    return write_suite(
        tmp_path / "hf.yaml",
        f"""\
        name: hf
        models: [{{source: hf, params: {{path: "{model_path}"}}}}]
        qalign:
          envs: [{{name: frozenlake, params: {{map: 4x4}}}}]
          methods: [oracle-q]
          points: {{episodes: 1, max_points_per_episode: 1}}
        """,
    )


def test_a_model_path_that_does_not_exist_fails_plan_and_run(tmp_path):
    missing = tmp_path / "models" / "Qwen2.5-0.5B"
    suite = _hf_suite(tmp_path, missing)
    for command in ("plan", "run"):
        usage_error(
            run_qval(command, suite, "--results", tmp_path / "r"), "models[0].params.path", f"{missing} does not exist"
        )
    assert not (tmp_path / "r").exists()


def test_a_model_path_without_config_json_fails_plan(tmp_path):
    folder = tmp_path / "weights"
    folder.mkdir()
    usage_error(run_qval("plan", _hf_suite(tmp_path, folder)), "models[0].params.path", "has no config.json")


def test_a_model_folder_passes_plan(tmp_path):
    folder = tmp_path / "weights"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    proc = run_qval("plan", _hf_suite(tmp_path, folder), "--results", tmp_path / "r")
    assert proc.returncode == 0, proc.stderr


def test_ingest_of_a_folder_that_is_not_a_results_folder_writes_nothing(tmp_path):
    for folder in (tmp_path / "reslts", tmp_path):  # a mistyped path; an existing folder with no results in it
        usage_error(
            run_qval("ingest", "--results", folder),
            f"{folder} is not a qval results folder",
            "qval run SUITE --results",
        )
    assert not (tmp_path / "reslts").exists() and not (tmp_path / "qval.duckdb").exists()


def test_run_into_a_file_instead_of_a_folder(tmp_path):
    (tmp_path / "file").write_text("")
    results = tmp_path / "file" / "results"
    usage_error(
        run_qval("run", model_free_suite(tmp_path, "x"), "--results", results),
        f"cannot write to {results}",
        "is a file, not a folder",
        "choose another --results folder",
    )


def test_run_into_a_folder_it_cannot_write(tmp_path):
    # /sys refuses mkdir even to root (where chmod would not stop a write).
    results = Path("/sys/qval-results")
    if not Path("/sys").is_dir():
        pytest.skip("no /sys on this system")
    usage_error(
        run_qval("run", model_free_suite(tmp_path, "x"), "--results", results),
        f"cannot write to {results}: permission denied; choose another --results folder or fix its permissions",
    )


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into a read-only folder; the /sys case covers qval run")
def test_ingest_into_a_read_only_results_folder(tmp_path):
    results = tmp_path / "r"
    (results / "plans").mkdir(parents=True)
    results.chmod(0o500)
    try:
        usage_error(run_qval("ingest", "--results", results), f"cannot write to {results}: permission denied")
    finally:
        results.chmod(0o700)


def test_ingest_refuses_a_folder_the_access_check_says_is_read_only(tmp_path, monkeypatch):
    # In-process, so that it runs as root too: what the kernel would answer a user for a chmod 0500 folder.
    from qval.api import ingest_results
    from qval.errors import UsageError
    from qval.store import db

    (tmp_path / "plans").mkdir()
    monkeypatch.setattr(db.os, "access", lambda *a, **k: False)
    with pytest.raises(UsageError, match="permission denied; choose another --results folder") as info:
        ingest_results(tmp_path)
    assert info.value.exit_code == 2 and str(tmp_path) in str(info.value)
