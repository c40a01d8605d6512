"""Shared fixtures: the real SmolLM2 model (loaded once per session) and helpers to run the real CLI."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PLUGINS = ROOT / "tests" / "plugins"


@pytest.fixture(scope="session")
def smollm():
    from qval.models.base import ModelParams
    from qval.models.packaged import SmolLM2Instruct

    return SmolLM2Instruct(ModelParams()).load(device="cpu")


def run_qval(*args, cwd=None, timeout=900, env=None) -> subprocess.CompletedProcess:
    """Run the real CLI in a subprocess, as a user would."""
    return subprocess.run(
        [sys.executable, "-m", "qval", *map(str, args)],
        cwd=cwd or ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )


def usage_error(proc: subprocess.CompletedProcess, *fragments: str) -> str:
    """Assert a usage error as users must see it: exit 2, every fragment in stderr, no internal error or
    traceback. Returns stderr."""
    text = proc.stdout + proc.stderr
    assert proc.returncode == 2, text
    assert "internal error" not in text and "Traceback" not in text, text
    for fragment in fragments:
        assert fragment in proc.stderr, proc.stderr
    return proc.stderr


def write_suite(path: Path, text: str) -> Path:
    path.write_text(textwrap.dedent(text))
    return path


TINY_SUITE = """\
name: tiny
description: tiny suite for tests
seeds: [0]
models: [smollm2-135m-instruct]
qalign:
  envs: [{name: frozenlake, params: {map: 4x4}}]
  methods: [oracle-q, random, action-logprob]
  points: {episodes: 4, epsilon: 0.3, max_points_per_episode: 3}
decode:
  datasets: [{name: spec-bench, params: {categories: [summarization, coding], limit_per_category: 2, max_turns: 1}}]
  policies: [ar, {name: prompt-lookup, params: {num_draft: 4}}]
  max_new_tokens: 16
  metrics: [speedup, acceptance_length, mean_accepted_tokens, lossless]
"""


def model_free_suite(
    tmp_path: Path,
    name: str,
    methods: str = "[oracle-q]",
    episodes: int = 2,
    points: int = 2,
    lake: str = "4x4",
    file: str = "s.yaml",
) -> Path:
    """A Q-alignment suite whose methods need no model (none is loaded): seconds to run, for harness tests."""
    return write_suite(
        tmp_path / file,
        f"""\
        name: {name}
        seeds: [0]
        models: [smollm2-135m-instruct]
        qalign:
          envs: [{{name: frozenlake, params: {{map: {lake}}}}}]
          methods: {methods}
          points: {{episodes: {episodes}, max_points_per_episode: {points}}}
        """,
    )


def pip(*args) -> None:
    """pip in the test interpreter's environment (installing the test plugin packages for real)."""
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q", *args],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def install_plugin(name: str) -> None:
    pip("install", "--no-deps", "--no-build-isolation", "--no-index", str(PLUGINS / name))


# The Q-alignment cells that the served backends (tests/test_openai_backend.py, tests/test_vllm_backend.py) compare
# with transformers: both compare against the same transformers cells, computed once per session.
SERVED_QALIGN_BODY = """\
qalign:
  envs: [{name: frozenlake, params: {map: 4x4}}]
  methods: [action-logprob, verifier, next-state-entropy]
  points: {episodes: 2, epsilon: 0.3, max_points_per_episode: 2}
"""


@pytest.fixture(scope="session")
def served_qalign_results(tmp_path_factory) -> Path:
    """A results folder holding SERVED_QALIGN_BODY's cells on transformers SmolLM2 (suite `q-hf`). Tests add their
    served model's cells to it; cell ids do not depend on the suite, so a suite that lists these cells again finds
    them done."""
    root = tmp_path_factory.mktemp("served-qalign")
    suite = write_suite(root / "q-hf.yaml", "name: q-hf\nmodels: [smollm2-135m-instruct]\n" + SERVED_QALIGN_BODY)
    proc = run_qval("run", suite, "--results", root / "results", timeout=1200)
    assert proc.returncode == 0 and "ingested" in proc.stdout, proc.stdout + proc.stderr
    return root / "results"
