"""Every block of README's "Writing a plugin" section, run as written: the package's pyproject, its scorer, metric
and policy, the suites, and each `qval` command of the walkthrough through the real CLI. The README cannot drift
from the code without failing here.

Only `pip install -e .` is stood in for (``path_plugins.expose_package``: the dist-info and the path an editable
install creates), so the test leaves the environment as it found it.
"""

from __future__ import annotations

import re
import shlex

import pytest
from conftest import ROOT, run_qval
from path_plugins import expose_package

import qval.results as R

BLOCK = re.compile(r"<!-- plugin-example: (?P<name>[\w-]+) -->\n```(?P<lang>\w+)\n(?P<body>.*?)\n```", re.S)


def readme_blocks() -> dict[str, str]:
    text = (ROOT / "README.md").read_text()
    start = text.index("\n## Writing a plugin\n")
    section = text[start : text.index("\n## ", start + 1)]
    return {m["name"]: m["body"] for m in BLOCK.finditer(section)}


BLOCKS = readme_blocks()


def target_file(block: str) -> str:
    """The file a block says it is (its first line: ``# my-scorers/NAME …``)."""
    first = block.splitlines()[0]
    match = re.match(r"# my-scorers/(\S+?):?(\s|$)", first)
    assert match, f"README block should start with '# my-scorers/<file>': {first!r}"
    return match.group(1)


def qval_commands(block: str) -> list[list[str]]:
    lines = [line.split("#", 1)[0].strip() for line in block.splitlines()]
    commands = [shlex.split(line) for line in lines if line.startswith("qval ")]
    assert commands, "the README's command block runs no qval command"
    return [c[1:] for c in commands]


@pytest.fixture(scope="module")
def package(tmp_path_factory):
    """The README's package, laid out as its blocks say, and the env under which qval sees it installed."""
    root = tmp_path_factory.mktemp("readme")
    project = root / "my-scorers"
    project.mkdir()
    for name in ("pyproject", "suite", "policy-suite"):
        (project / target_file(BLOCKS[name])).write_text(BLOCKS[name] + "\n")
    # The pyproject's comment names the module; the three Python blocks are its contents, in README order.
    module = re.search(r"my-scorers/(\w+)\.py", BLOCKS["pyproject"]).group(1)
    (project / f"{module}.py").write_text("\n\n".join(BLOCKS[n] for n in ("scorer", "metric", "policy")) + "\n")
    return project, expose_package(root / "site", project)


def test_the_section_has_every_block_it_documents():
    assert set(BLOCKS) == {
        "pyproject",
        "scorer",
        "metric",
        "suite",
        "commands",
        "policy",
        "policy-suite",
        "policy-commands",
    }
    assert "pip install -e ." in BLOCKS["commands"]  # the one step this test stands in for


def test_walkthrough_installs_checks_runs_and_reports_the_scorer(package):
    project, env = package
    outputs = {}
    for args in qval_commands(BLOCKS["commands"]):
        proc = run_qval(*args, cwd=project, env=env)
        assert proc.returncode == 0, f"qval {' '.join(args)}:\n{proc.stdout}\n{proc.stderr}"
        assert "Traceback" not in proc.stderr
        outputs[" ".join(args[:3])] = proc.stdout
    listing = outputs["list scorers --params"]
    row = next(line for line in listing.splitlines() if "goal-distance" in line)
    assert "Minus the Manhattan distance to the goal after each move" in row and "my-scorers" in row
    assert "hole_penalty: float = 10.0" in listing  # --params, from the Params model
    assert "scorer GoalDistance: 12 checks passed" in outputs["plugins --check goal-distance"]
    board = R.leaderboard(project / "results", "my-first-plugin", "qalign").set_index("method")
    assert {"oracle-q", "random"} <= set(board.index) and any(m.startswith("goal-distance") for m in board.index)
    mine = board.loc[next(m for m in board.index if m.startswith("goal-distance"))]
    assert mine["per_state_spearman"] > 0.3  # the heuristic is Q-aligned on FrozenLake
    assert board.loc["oracle-q", "regret"] == pytest.approx(0.0)  # the plugin metric was computed at ingest
    assert mine["regret"] < board.loc["random", "regret"]
    leaderboard = (project / "reports" / "my-first-plugin" / "leaderboard.md").read_text()
    assert "goal-distance" in leaderboard and "regret" in leaderboard


def test_every_check_command_prints_the_rules_it_passed(package):
    project, env = package
    checks = [a for a in qval_commands(BLOCKS["commands"]) if a[:2] == ["plugins", "--check"]]
    assert [a[2] for a in checks] == ["goal-distance", "regret"]
    expected = {"goal-distance": "scorer GoalDistance: 12 checks passed", "regret": "metric Regret: 5 checks passed"}
    for args in checks:
        proc = run_qval(*args, cwd=project, env=env)
        assert proc.returncode == 0, proc.stderr
        assert expected[args[2]] in proc.stdout and "  ok  " in proc.stdout


def test_list_json_carries_the_plugins_description_and_params(package):
    import json

    project, env = package
    proc = run_qval("list", "--json", cwd=project, env=env)
    assert proc.returncode == 0, proc.stderr
    rows = {(r["kind"], r["name"]): r for r in json.loads(proc.stdout)}
    scorer, policy = rows["scorers", "goal-distance"], rows["policies", "bigram"]
    assert scorer["distribution"] == "my-scorers" and scorer["description"].startswith("Minus the Manhattan")
    assert scorer["params"] == [
        {
            "name": "hole_penalty",
            "type": "float",
            "required": False,
            "default": 10.0,
            "constraints": "≥ 0",
            "description": "minus the score of a move into a hole",
        }
    ]
    assert [p["name"] for p in policy["params"]] == ["num_draft"]
    assert rows["metrics", "regret"]["params"] == []


@pytest.mark.slow
def test_policy_walkthrough_checks_on_smollm_and_plans(package):
    """The policy's commands: its contract check on SmolLM2 (lossless at T = 0) and a plan of its suite."""
    project, env = package
    for args in qval_commands(BLOCKS["policy-commands"]):
        proc = run_qval(*args, cwd=project, env=env)
        assert proc.returncode == 0, f"qval {' '.join(args)}:\n{proc.stdout}\n{proc.stderr}"
        if args[:2] == ["plugins", "--check"]:
            assert "policy BigramPolicy: 10 checks passed" in proc.stdout
            assert "lossless at T=0" in proc.stdout
        else:
            assert "bigram" in proc.stdout
