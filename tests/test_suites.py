"""Every suite shipped in suites/ loads and plans through the real CLI, so none can rot when a plugin, a metric or
the schema changes. GPU suites name model folders that are not on this machine: `--model` puts SmolLM2 in their
place, as a user without those weights would; a decoding policy pinned to models (`models:`) keeps them, since
`--model` replaces the suite's list and a pin to a model it left out is refused (tested in test_plan.py)."""

from __future__ import annotations

import re

import pytest
import yaml
from conftest import ROOT, run_qval

SUITES = sorted((ROOT / "suites").glob("*.yaml"))


def test_there_are_suites():
    assert len(SUITES) >= 8


@pytest.mark.parametrize("suite", SUITES, ids=lambda p: p.stem)
def test_a_shipped_suite_plans(suite, tmp_path):
    policies = (yaml.safe_load(suite.read_text()).get("decode") or {}).get("policies", [])
    pinned = {m for p in policies if isinstance(p, dict) for m in p.get("models") or []}
    models = [
        arg for m in ["smollm2-135m-instruct", *sorted(pinned - {"smollm2-135m-instruct"})] for arg in ("--model", m)
    ]
    proc = run_qval("plan", suite, *models, "--results", tmp_path / "res")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    planned = re.search(r"0 done, (\d+) to do", proc.stdout)
    assert planned and int(planned.group(1)) > 0, proc.stdout
