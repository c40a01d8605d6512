"""Schema migrations and ingest of older parts."""

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from qval.decode.tables import DECODE_SAMPLES
from qval.store import db


def test_v1_database_is_migrated_in_place_and_keeps_its_rows(tmp_path):
    con = duckdb.connect(str(tmp_path / db.DB_NAME))
    con.execute("CREATE TABLE meta (key VARCHAR PRIMARY KEY, value VARCHAR)")
    for sql in db.MIGRATIONS[0][1]:
        con.execute(sql)
    con.execute("INSERT INTO meta VALUES ('schema_version', '1')")
    con.execute("INSERT INTO decode_samples (cell_id, sample_id, turn) VALUES ('c', 's', 0)")
    con.close()
    con = db.connect_writer(tmp_path)
    assert con.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()[0] == str(db.SCHEMA_VERSION)
    assert con.execute("SELECT sample_id, prefill_entropy FROM decode_samples").fetchall() == [("s", None)]
    con.close()


def test_newer_database_is_refused(tmp_path):
    con = duckdb.connect(str(tmp_path / db.DB_NAME))
    con.execute("CREATE TABLE meta (key VARCHAR PRIMARY KEY, value VARCHAR)")
    con.execute("INSERT INTO meta VALUES ('schema_version', '999')")
    con.close()
    from qval.errors import QvalError

    with pytest.raises(QvalError, match="newer than this qval"):
        db.connect_writer(tmp_path)


def test_parts_written_before_a_column_existed_still_ingest(tmp_path):
    old_schema = pa.schema(
        [f for f in DECODE_SAMPLES if not f.name.startswith("prefill_e") and f.name != "prefill_top_prob"]
    )
    part = tmp_path / "old.parquet"
    pq.write_table(
        pa.Table.from_pylist([{"cell_id": "c", "sample_id": "s", "turn": 0, "accepted": [1, 2]}], schema=old_schema),
        part,
    )
    con = db.connect_writer(tmp_path)
    con.execute("INSERT INTO decode_samples BY NAME SELECT * FROM read_parquet(?, union_by_name = true)", [[str(part)]])
    assert con.execute("SELECT accepted, prefill_top_prob FROM decode_samples").fetchall() == [([1, 2], None)]
    con.close()


def _tables(con) -> set[str]:
    return {r[0] for r in con.execute("SELECT table_name FROM information_schema.tables").fetchall()}


def _columns(con, table: str) -> set[str]:
    return {
        r[0]
        for r in con.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_name = ?", [table]
        ).fetchall()
    }


@pytest.mark.parametrize("failing, after", [(5, 6), (6, 1), (8, 2)])
def test_a_failed_migration_leaves_the_previous_version_and_a_rerun_finishes(tmp_path, monkeypatch, failing, after):
    """A step whose statements ran but whose commit did not happen leaves nothing behind: the database stays at the
    version before it (tables, columns and data changes of the step undone, earlier steps kept), and the next
    writer runs the step again from the start. ``after``: how many of the step's statements run before the failure
    (all of them for step 5, whose last statement rewrites data, so only the version row was left to write)."""
    real = list(db.MIGRATIONS)
    monkeypatch.setattr(db, "MIGRATIONS", real[:4])
    monkeypatch.setattr(db, "SCHEMA_VERSION", 4)
    db.connect_writer(tmp_path).close()
    con = duckdb.connect(str(tmp_path / db.DB_NAME))
    con.execute("INSERT INTO cells (cell_id, parts_sig) VALUES ('c', 'sig')")
    con.close()

    broken = [
        (v, sql[:after] + ["SELECT error('injected failure')"] + sql[after:] if v == failing else sql)
        for v, sql in real
    ]
    monkeypatch.setattr(db, "MIGRATIONS", broken)
    monkeypatch.setattr(db, "SCHEMA_VERSION", real[-1][0])
    with pytest.raises(duckdb.Error, match="injected failure"):
        db.connect_writer(tmp_path)

    con = duckdb.connect(str(tmp_path / db.DB_NAME), read_only=True)  # what is on disk, from a fresh connection
    assert con.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone() == (str(failing - 1),)
    tables, cell_metrics = _tables(con), _columns(con, "cell_metrics")
    decode, qalign = _columns(con, "decode_samples"), _columns(con, "qalign_samples")
    parts_sig = con.execute("SELECT parts_sig FROM cells").fetchone()[0]
    con.close()
    assert ("n_states" in cell_metrics) == (failing > 5) and ("load_steal" in decode) == (failing > 5)
    assert parts_sig == ("sig" if failing == 5 else None)  # step 5's UPDATE is undone with it
    assert ("metric_family" in cell_metrics) == (failing > 6) and ("metric_versions" in tables) == (failing > 6)
    assert ("output_text" in decode) == (failing > 7)
    assert "prepare_requests" not in tables and "batch" not in qalign  # step 8 never committed in any case

    monkeypatch.setattr(db, "MIGRATIONS", real)
    con = db.connect_writer(tmp_path)
    assert con.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone() == (str(db.SCHEMA_VERSION),)
    assert {"metric_versions", "metric_units", "prepare_requests"} <= _tables(con)
    assert {"n_states", "metric_family"} <= _columns(con, "cell_metrics") and "batch" in _columns(con, "qalign_samples")
    assert con.execute("SELECT cell_id, parts_sig FROM cells").fetchall() == [("c", None)]
    con.close()


def test_a_failed_commit_reports_its_own_error_and_leaves_the_previous_version(tmp_path, monkeypatch):
    """A COMMIT that fails (disk full, say) ends the transaction itself: migrate must raise that error, not the
    "no transaction is active" of its own ROLLBACK, and the file stays at the version before the step."""
    monkeypatch.setattr(db, "MIGRATIONS", db.MIGRATIONS[:7])
    monkeypatch.setattr(db, "SCHEMA_VERSION", 7)
    db.connect_writer(tmp_path).close()
    monkeypatch.undo()

    class CommitFails:  # DuckDB's connection cannot be patched: wrap it, and fail the commit as DuckDB would
        def __init__(self, con):
            self.con = con

        def execute(self, sql, *args):
            if sql == "COMMIT":
                self.con.execute("ROLLBACK")
                raise duckdb.TransactionException("Failed to commit: injected")
            return self.con.execute(sql, *args)

    con = duckdb.connect(str(tmp_path / db.DB_NAME))
    with pytest.raises(duckdb.TransactionException, match="Failed to commit: injected"):
        db.migrate(CommitFails(con))
    assert con.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone() == ("7",)
    assert "prepare_requests" not in _tables(con)
    assert db.migrate(con) == 7 and "prepare_requests" in _tables(con)
    con.close()
