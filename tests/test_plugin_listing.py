"""`qval list` (descriptions, --params, --json) and `qval plugins --check` on qval's own plugins and on a plugin
that breaks its contract, through the real CLI; the CheckReport that qval.testing's checks return."""

from __future__ import annotations

import json

import pytest
from conftest import run_qval
from path_plugins import expose_package

from qval.qalign.scorers.base import Scorer
from qval.registry import NO_DOCSTRING
from qval.testing import CheckReport, ContractError, check_scorer

UNDOCUMENTED = """
from qval.decode.policies import AutoregressivePolicy


class Quiet(AutoregressivePolicy):
    name = "quiet"
"""


def _one_module_package(root, dist: str, kind: str, name: str, source: str) -> dict:
    """A package ``dist`` of one module holding ``source``, whose class ``name.capitalize()`` is the ``qval.<kind>``
    plugin ``name``, exposed as installed: the env for ``run_qval``."""
    module = dist.replace("-", "_")
    project = root / dist
    project.mkdir()
    (project / "pyproject.toml").write_text(
        f'[project]\nname = "{dist}"\nversion = "0.1.0"\n\n'
        f'[project.entry-points."qval.{kind}"]\n{name} = "{module}:{name.capitalize()}"\n'
    )
    (project / f"{module}.py").write_text(source)
    return expose_package(root / "site", project)


@pytest.fixture(scope="module")
def undocumented_env(tmp_path_factory):
    """A policy plugin whose class has no docstring of its own (its base class has one, which says nothing about
    it), exposed as an installed package: the env for ``run_qval``."""
    return _one_module_package(
        tmp_path_factory.mktemp("undocumented"), "quiet-policy", "policies", "quiet", UNDOCUMENTED
    )


def test_list_shows_the_first_sentence_of_each_docstring_and_never_none(undocumented_env):
    proc = run_qval("list", "policies", env=undocumented_env)
    assert proc.returncode == 0, proc.stderr
    rows = {line.split("│")[2].strip(): line for line in proc.stdout.splitlines() if line.startswith("│ policies")}
    assert "The baseline every speedup is measured against" in rows["ar"]
    # A sentence is not cut at "et al. 2023".
    assert "(Leviathan et al. 2023; Chen et al. 2023)." in rows["draft-model"]
    # A class without a docstring says so (its base class's docstring is not taken for its own), never "None".
    assert NO_DOCSTRING in rows["quiet"] and "None" not in rows["quiet"]
    assert "The baseline every speedup" not in rows["quiet"]


def test_every_built_in_plugin_has_a_description():
    proc = run_qval("list", "--json")
    assert proc.returncode == 0, proc.stderr
    built_in = [r for r in json.loads(proc.stdout) if r["distribution"] == "qval"]
    assert len(built_in) >= 60  # every kind is listed, not an empty or partial registry
    assert {r["kind"] for r in built_in} == {
        "scorers",
        "policies",
        "envs",
        "datasets",
        "models",
        "metrics",
        "runners",
        "tracks",
    }
    # A plugin that fails to import has no description either; say why, so that is not mistaken for a missing one.
    undescribed = sorted(
        f"{r['kind']}:{r['name']}" + (f" (fails to import: {r['error']})" if r["error"] else "")
        for r in built_in
        if not r["description"]
    )
    assert undescribed == [], (
        f"give these classes a docstring (its first sentence is what `qval list` shows): {undescribed}"
    )


def test_list_params_shows_types_defaults_and_bounds():
    proc = run_qval("list", "policies", "--params")
    assert proc.returncode == 0, proc.stderr
    assert "num_draft: int = 4  [≥ 1, ≤ 64]" in proc.stdout
    assert "match: Literal['latest', 'earliest'] = 'latest'" in proc.stdout
    assert "base_url: str (required)  [matches ^https?://]" in proc.stdout  # served: no default
    assert "(none)" in next(line for line in proc.stdout.splitlines() if "│ ar " in line)
    assert "params" not in run_qval("list", "policies").stdout.splitlines()[1]  # only with --params


def test_list_json_has_description_and_params_for_every_plugin(undocumented_env):
    proc = run_qval("list", "--json", env=undocumented_env)
    assert proc.returncode == 0, proc.stderr
    rows = {(r["kind"], r["name"]): r for r in json.loads(proc.stdout)}
    assert all({"description", "params", "version"} <= set(r) for r in rows.values())
    assert rows["policies", "quiet"]["description"] is None  # no docstring: null, not the string "None"
    assert rows["policies", "prompt-lookup"]["description"].startswith("Prompt lookup (Saxena 2023)")
    assert rows["scorers", "oracle-q"]["description"].startswith("Scores are the reference Q")
    num_draft = next(p for p in rows["policies", "prompt-lookup"]["params"] if p["name"] == "num_draft")
    assert num_draft == {
        "name": "num_draft",
        "type": "int",
        "required": False,
        "default": 4,
        "constraints": "≥ 1, ≤ 64",
        "description": "",
    }
    # A metric without a docstring is described by its label.
    assert rows["metrics", "top1"]["description"].startswith("mean over evaluation points of the chance")


def test_plugins_check_prints_each_rule_passed():
    proc = run_qval("plugins", "--check", "scorers:oracle-q")
    assert proc.returncode == 0, proc.stderr
    assert "scorer OracleQScorer: 12 checks passed" in proc.stdout
    assert "ok  deterministic: a second instance with the same seed gave identical scores" in proc.stdout
    proc = run_qval("plugins", "--check", "top1", "--json")
    report = json.loads(proc.stdout)
    assert proc.returncode == 0 and report["ok"] and "name 'top1' on track 'qalign'" in report["passed"]


def test_plugins_check_of_an_unknown_name_is_a_usage_error():
    proc = run_qval("plugins", "--check", "oracle-qq")
    assert proc.returncode == 2 and "did you mean 'oracle-q'" in proc.stderr and "Traceback" not in proc.stderr


BROKEN = '''
from qval.qalign.scorers.base import Scorer


class Short(Scorer):
    """Returns one score whatever the number of candidates."""

    def score(self, point):
        return [1.0]
'''


def test_plugins_check_of_a_broken_scorer_names_the_rule_and_exits_1(tmp_path):
    env = _one_module_package(tmp_path, "broken-scorer", "scorers", "short", BROKEN)
    proc = run_qval("plugins", "--check", "short", env=env)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "ok  prepare() accepted the cell's 6 points" in proc.stdout  # the rules passed before the broken one
    assert "short breaks its contract" in proc.stderr and "returned 1 scores for 4 candidates" in proc.stderr
    assert "Traceback" not in proc.stderr
    proc = run_qval("plugins", "--check", "short", "--json", env=env)
    report = json.loads(proc.stdout)
    assert proc.returncode == 1 and not report["ok"] and "1 scores for 4 candidates" in report["error"]


def test_check_scorer_returns_a_report_and_a_broken_rule_keeps_the_rules_passed():
    from qval.qalign.scorers.baselines import OracleQScorer

    report = check_scorer(OracleQScorer)
    assert isinstance(report, CheckReport) and report.kind == "scorer" and len(report.passed) == 12
    assert str(report).splitlines()[0] == "scorer OracleQScorer: 12 checks passed"

    class WrongFamily(Scorer):
        name = "wrong-family"
        family = "vibes"

        def score(self, point):
            return [0.0] * len(point.candidates)

    with pytest.raises(ContractError, match="family must be one of") as caught:
        check_scorer(WrongFamily)
    assert isinstance(caught.value, AssertionError)  # existing `except AssertionError` callers keep working
    assert caught.value.report.passed[-1].startswith("Params validate")
