"""Hypothesis-fuzzed suite files and CLI arguments: no traceback ever reaches the user.

Suites: every input either loads or raises SuiteError naming the file and a field. CLI: every argv ends with a
clean exit code (0, 2 for bad input, 3 for a locked folder) and, when it fails, a message, never a traceback.
"""

import copy
import io
import sys
from contextlib import redirect_stderr, redirect_stdout

import pytest
import yaml
from conftest import TINY_SUITE
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from qval.errors import SuiteError
from qval.suite import load_suite

BASE = yaml.safe_load(TINY_SUITE)
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**6), 10**6),
    st.floats(allow_nan=True),
    st.text(max_size=12),
    st.sampled_from(["ar", "frozenlake", "spec-bench", "oracle-q", "-1", "1e9"]),
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=8), inner, max_size=3)),
    max_leaves=6,
)
KEYS = st.sampled_from(
    [
        "name",
        "seeds",
        "models",
        "qalign",
        "decode",
        "envs",
        "methods",
        "policies",
        "datasets",
        "temperatures",
        "max_new_tokens",
        "metrics",
        "main_metric",
        "params",
        "points",
        "gamma",
        "warmup",
        "reference",
        "description",
        "extra",
    ]
)


def _paths(obj, prefix=()):
    yield prefix
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _paths(v, prefix + (k,))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from _paths(v, prefix + (i,))


@st.composite
def mutated_suites(draw):
    doc = copy.deepcopy(BASE)
    for _ in range(draw(st.integers(1, 3))):
        paths = list(_paths(doc))
        path = draw(st.sampled_from(paths))
        parent = doc
        for p in path[:-1]:
            parent = parent[p]
        action = draw(st.sampled_from(["replace", "delete", "add"]))
        if not path:
            continue
        if action == "replace":
            parent[path[-1]] = draw(VALUES)
        elif action == "delete" and isinstance(parent, dict):
            parent.pop(path[-1], None)
        elif isinstance(parent, dict):
            parent[draw(KEYS)] = draw(VALUES)
    return doc


def _check(path):
    try:
        load_suite(path)
    except SuiteError as exc:
        assert str(path) in str(exc) and exc.field and exc.reason


@settings(max_examples=700, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(doc=mutated_suites())
def test_mutated_suites_load_or_fail_cleanly(tmp_path, doc):
    path = tmp_path / "fuzz.yaml"
    path.write_text(yaml.safe_dump(doc, allow_unicode=True))
    _check(path)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=st.one_of(st.text(max_size=200), st.binary(max_size=200).map(lambda b: b.decode("latin-1"))))
def test_arbitrary_text_fails_cleanly(tmp_path, text):
    path = tmp_path / "fuzz.yaml"
    path.write_bytes(text.encode("utf-8", "surrogateescape") if isinstance(text, str) else text)
    _check(path)


COMMANDS = ["plan", "run", "list", "plugins", "ingest", "report", "export", "compare", "replay", "worker", "nope", ""]
OPTIONS = [
    "--results",
    "--workers",
    "--runner",
    "--out",
    "--suite",
    "--json",
    "--quiet",
    "--plan",
    "--shard",
    "--candidates",
    "--folds",
    "--metric",
    "--emit-manifest",
    "--version",
    "--help",
    "-q",
    "--bogus",
]


@st.composite
def argvs(draw, root):
    argv = [draw(st.sampled_from(COMMANDS))]
    for _ in range(draw(st.integers(0, 4))):
        kind = draw(st.integers(0, 2))
        if kind == 0:
            argv.append(draw(st.sampled_from(OPTIONS)))
        elif kind == 1:
            argv.append(
                draw(
                    st.sampled_from(
                        [
                            str(root / "missing.yaml"),
                            str(root / "dir"),
                            "-3",
                            "0",
                            "abc",
                            "14-x",
                            "99999999999",
                            "scorers",
                            "metrics",
                            "",
                            "ü",
                        ]
                    )
                )
            )
        else:
            argv.append(draw(st.text(max_size=6)))
    return [a for a in argv if a != ""] or ["--bogus"]


@pytest.fixture(scope="module")
def fuzz_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    (root / "dir").mkdir()
    return root


def test_cli_arguments_never_show_a_traceback(fuzz_root, monkeypatch):
    from qval import cli

    monkeypatch.chdir(fuzz_root)  # anything a fuzzed command writes lands here

    @settings(max_examples=400, deadline=None)
    @given(argv=argvs(fuzz_root))
    def run(argv):
        out, err = io.StringIO(), io.StringIO()
        monkeypatch.setattr(sys, "argv", ["qval", *argv])
        with redirect_stdout(out), redirect_stderr(err), pytest.raises(SystemExit) as info:
            cli.main()
        code = info.value.code or 0
        text = out.getvalue() + err.getvalue()
        assert "Traceback" not in text, (argv, text)
        assert code in (0, 2, 3), (argv, code, text)
        if code:
            assert err.getvalue().strip() or out.getvalue().strip(), (argv, "failed silently")

    run()
