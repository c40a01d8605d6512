"""Structural guardrails beside ruff and mypy (``make lint``): no module over 700 lines, no import cycle."""

from __future__ import annotations

import subprocess
import sys

from conftest import ROOT

MAX_LINES = 700


def test_no_module_is_over_700_lines():
    long = {
        str(p.relative_to(ROOT)): n
        for p in (ROOT / "qval").rglob("*.py")
        if (n := len(p.read_text().splitlines())) > MAX_LINES
    }
    assert not long, f"split these modules (one job each): {long}"


def test_no_import_cycle():
    proc = subprocess.run(
        [sys.executable, "tools/import_cycles.py"], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0 and " 0 cycle(s)" in proc.stdout, proc.stdout + proc.stderr
