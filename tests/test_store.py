"""Schema migrations and ingest of older parts."""

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

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
    import pytest

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
