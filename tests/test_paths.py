"""Names from suites, plans and cells can never address files outside the results (or report) folder, and SQL
never interpolates them."""

import ast
import re
from pathlib import Path

import pytest
from conftest import ROOT, run_qval, write_suite

from qval.store.parts import cell_dir

HOSTILE = ["../evil", "..", "a/b", "/etc/passwd", "x\\..\\y", ".hidden", "a\nb", "a" * 65]


@pytest.mark.parametrize("name", HOSTILE)
def test_hostile_suite_names_are_refused_before_anything_is_written(tmp_path, name):
    suite = tmp_path / "s.yaml"
    suite.write_text(
        f"name: {name!r}\nmodels: [smollm2-135m-instruct]\nqalign: {{envs: [frozenlake], methods: [random]}}\n"
    )
    proc = run_qval("run", suite, "--results", tmp_path / "r")
    assert proc.returncode == 2 and "name" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "r").exists() and not (tmp_path / "evil").exists()


@pytest.mark.parametrize("name", ["../m", "a/b"])
def test_hostile_model_display_names_are_refused(tmp_path, name):
    suite = write_suite(
        tmp_path / "s.yaml",
        f"""\
        name: ok
        models: [{{source: smollm2-135m-instruct, name: {name!r}}}]
        qalign: {{envs: [frozenlake], methods: [action-logprob]}}
        """,
    )
    proc = run_qval("plan", suite, "--results", tmp_path / "r")
    assert proc.returncode == 2 and "models[0].name" in proc.stderr


@pytest.mark.parametrize("cell_id", ["../x", "..", "a/b", "", "abc/../../etc"])
def test_cell_ids_cannot_leave_the_parts_folder(tmp_path, cell_id):
    with pytest.raises(ValueError, match="invalid cell id"):
        cell_dir(tmp_path, cell_id)


@pytest.mark.parametrize("plan_id", ["../../etc/passwd", "a/b", ".."])
def test_worker_plan_ids_name_files_under_results_plans_only(tmp_path, plan_id):
    proc = run_qval("worker", "--plan", plan_id, "--shard", "0", "--results", tmp_path / "r")
    assert proc.returncode == 2 and "neither a plan id" in proc.stderr


def test_report_file_names_are_sanitised(tmp_path):
    """Even a suite name that got into a database by other means (here: written by hand) cannot make the report
    writer leave its output folder."""
    import duckdb

    from qval.report.build import write_reports
    from qval.store.db import connect_writer

    results = tmp_path / "r"
    results.mkdir()
    connect_writer(results).close()  # create the schema
    con = duckdb.connect(str(results / "qval.duckdb"))
    con.execute("INSERT INTO suites VALUES (?, 'p', 's', 'sha', 'd', '{}', now())", ["../../escaped"])
    con.close()
    out = tmp_path / "reports" / "inner"
    written = write_reports(results, out)
    assert written and all(Path(p).resolve().is_relative_to(out.resolve()) for p in written)
    assert not (tmp_path / "escaped").exists()


def test_sql_never_formats_user_values():
    """Every f-string SQL statement formats only table names and column lists from qval's own constants (a track's
        MetricView and the column list built from it, a table/column pair from a fixed tuple, a track's table name, which
    qval.tracks.SampleTable refuses unless it is a plain identifier). Read from the syntax
        tree, so a statement split over lines by the formatter is still checked whole."""
    allowed = re.compile(r"table|column|select|view\.(keep|order)")
    offenders, checked = [], 0
    for path in (ROOT / "qval").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if not (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr in ("execute", "executemany", "sql")
                and node.args
                and isinstance(node.args[0], ast.JoinedStr)
            ):
                continue
            checked += 1
            formatted = [ast.unparse(v.value) for v in node.args[0].values if isinstance(v, ast.FormattedValue)]
            if not all(allowed.fullmatch(f) for f in formatted):
                offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}: {formatted}")
    assert checked >= 5  # the walk found the statements it is meant to check
    assert not offenders, offenders
