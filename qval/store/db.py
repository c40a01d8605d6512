"""The DuckDB results database: schema, ordered migrations, connection helpers.

Only one process writes (DuckDB allows one read-write process per file): ``qval ingest``, or ``qval run`` after its
workers have finished. Everything else opens it read-only.
"""

from __future__ import annotations

import fcntl
import os
import sys
import time
from contextlib import contextmanager, suppress
from pathlib import Path

import duckdb
import pyarrow as pa

from ..errors import QvalError, ResultsLockedError, UsageError, results_not_writable

DB_NAME = "qval.duckdb"

# Ordered migrations: (version, statements). Never edit a released step; append a new one.
MIGRATIONS: list[tuple[int, list[str]]] = [
    (
        1,
        [
            """CREATE TABLE runs (run_id VARCHAR PRIMARY KEY, suite VARCHAR, plan_id VARCHAR, started_at TIMESTAMP,
           finished_at TIMESTAMP, status VARCHAR, qval_version VARCHAR, git_sha VARCHAR, git_dirty BOOLEAN,
           host VARCHAR, hardware VARCHAR, gpu VARCHAR, python VARCHAR, torch VARCHAR, transformers VARCHAR,
           argv VARCHAR, fingerprint JSON)""",
            """CREATE TABLE suites (suite VARCHAR PRIMARY KEY, plan_id VARCHAR, path VARCHAR, suite_sha VARCHAR,
           description VARCHAR, config JSON, updated_at TIMESTAMP)""",
            "CREATE TABLE suite_cells (suite VARCHAR, cell_id VARCHAR, PRIMARY KEY (suite, cell_id))",
            """CREATE TABLE cells (cell_id VARCHAR PRIMARY KEY, identity_version INTEGER, track VARCHAR, model VARCHAR,
           method VARCHAR, family VARCHAR, dataset VARCHAR, dataset_label VARCHAR, temperature DOUBLE, seed INTEGER,
           identity JSON, baseline_cell_id VARCHAR, status VARCHAR, n_samples INTEGER, n_failed INTEGER,
           run_id VARCHAR, error VARCHAR, parts_sig VARCHAR, ingested_at TIMESTAMP)""",
            """CREATE TABLE qalign_samples (cell_id VARCHAR, sample_id VARCHAR, state_key VARCHAR, candidate INTEGER,
           action VARCHAR, score DOUBLE, ref_q DOUBLE, error VARCHAR)""",
            """CREATE TABLE decode_samples (cell_id VARCHAR, sample_id VARCHAR, turn INTEGER, category VARCHAR,
           prompt_tokens INTEGER, new_tokens INTEGER, target_steps INTEGER, drafted INTEGER[], accepted INTEGER[],
           prefill_s DOUBLE, decode_s DOUBLE, stopped_on_eos BOOLEAN, output_sha VARCHAR, output_ids INTEGER[],
           error VARCHAR)""",
            """CREATE TABLE cell_metrics (cell_id VARCHAR, metric VARCHAR, value DOUBLE, ci_low DOUBLE, ci_high DOUBLE,
           n INTEGER, higher_is_better BOOLEAN, label VARCHAR, PRIMARY KEY (cell_id, metric))""",
        ],
    ),
    (
        2,
        [
            "ALTER TABLE decode_samples ADD COLUMN prefill_entropy DOUBLE",
            "ALTER TABLE decode_samples ADD COLUMN prefill_top_prob DOUBLE",
        ],
    ),
    (
        3,
        [
            """CREATE TABLE qalign_state_values (cell_id VARCHAR, sample_id VARCHAR, state_key VARCHAR,
           n_candidates INTEGER, value DOUBLE, error VARCHAR)""",
        ],
    ),
    (
        4,
        [
            "ALTER TABLE decode_samples ADD COLUMN draft_s DOUBLE",
        ],
    ),
    (
        5,
        [
            "ALTER TABLE qalign_samples ADD COLUMN is_behaviour BOOLEAN",
            "ALTER TABLE cell_metrics ADD COLUMN n_states INTEGER",
            "ALTER TABLE decode_samples ADD COLUMN load_other_cores DOUBLE",
            "ALTER TABLE decode_samples ADD COLUMN load_steal DOUBLE",
            "ALTER TABLE decode_samples ADD COLUMN load_avg1 DOUBLE",
            # Metric definitions changed with this step (vLLM's acceptance length, QVal's pooled rows, small-n
            # intervals): forget every cell's part signature so the next ingest re-reads and recomputes all of them.
            "UPDATE cells SET parts_sig = NULL",
        ],
    ),
    (
        6,
        [
            # The metric stage (qval/metrics/stage.py): which metric (family) wrote each value, at which version, and
            # the per-unit values behind per-state metrics. Values written before carry no family; the next ingest
            # recomputes them from the stored rows.
            "ALTER TABLE cell_metrics ADD COLUMN metric_family VARCHAR",  # not `family`: cells has one
            """CREATE TABLE metric_versions (cell_id VARCHAR, metric VARCHAR, version INTEGER, computed_at TIMESTAMP,
           PRIMARY KEY (cell_id, metric))""",
            "CREATE TABLE metric_units (cell_id VARCHAR, metric VARCHAR, unit VARCHAR, cluster VARCHAR, value DOUBLE)",
        ],
    ),
    (
        7,
        [
            # Samples a researcher can read (`qval samples`, drill-down pages): a Q-alignment point's requests (prompt,
            # reply, parse) and a decoding turn's text. Rows ingested before stay NULL there.
            "ALTER TABLE qalign_samples ADD COLUMN requests STRUCT(kind VARCHAR, prompt VARCHAR, reply VARCHAR, "
            "parsed VARCHAR, parse_error VARCHAR, memo BOOLEAN, capped BOOLEAN)[]",
            "ALTER TABLE decode_samples ADD COLUMN output_text VARCHAR",
            "ALTER TABLE decode_samples ADD COLUMN output_capped BOOLEAN",
            "ALTER TABLE decode_samples ADD COLUMN accepted_chars INTEGER[]",
        ],
    ),
    (
        8,
        [
            # Requests a scorer sent while preparing its cell (once per cell), and which points a batched scorer
            # scored in one call (the batch's requests sit on its first point). Rows ingested before stay NULL.
            "CREATE TABLE prepare_requests (cell_id VARCHAR, requests STRUCT(kind VARCHAR, prompt VARCHAR, "
            "reply VARCHAR, parsed VARCHAR, parse_error VARCHAR, memo BOOLEAN, capped BOOLEAN)[])",
            "ALTER TABLE qalign_samples ADD COLUMN batch VARCHAR[]",
        ],
    ),
    (
        9,
        [
            # The quality axis: a dataset checker's verdict per decoding turn (qval/decode/checkers.py). Rows
            # ingested before stay NULL (task_accuracy undefined for them, not 0).
            "ALTER TABLE decode_samples ADD COLUMN correct BOOLEAN",
            "ALTER TABLE decode_samples ADD COLUMN check_detail VARCHAR",
        ],
    ),
    (
        10,
        [
            # The CPU threads each decoding turn ran with (qval/decode/tables.py). Rows ingested before stay NULL.
            "ALTER TABLE decode_samples ADD COLUMN threads INTEGER",
        ],
    ),
    (
        11,
        [
            # Which forward pass decoded each turn: "qval" (models/fast_llama.py) or "transformers" (the engine's
            # setting, or its fallback for a model qval's forward does not cover). Rows ingested before stay NULL.
            "ALTER TABLE decode_samples ADD COLUMN forward VARCHAR",
        ],
    ),
    (
        12,
        [
            # The method class's ``adaptive`` flag, recorded at planning (cell.Cell.adaptive), so that a report need
            # not import a policy's code to know it. Cells planned before stay NULL until a plan written by a qval
            # that records it (a new `qval run` of their suite) is ingested; until then the report asks the class.
            "ALTER TABLE cells ADD COLUMN adaptive BOOLEAN",
        ],
    ),
]
SCHEMA_VERSION = MIGRATIONS[-1][0]


@contextmanager
def rows_view(con: duckdb.DuckDBPyConnection, name: str, schema: pa.Schema, rows: list[list]):
    """Rows (lists in the schema's column order) visible to SQL as the view ``name`` while the block runs, so that
    one INSERT ... SELECT or UPDATE ... FROM writes them all: ``executemany`` runs one statement per row, about a
    millisecond each (2 s of a 100-cell ingest went to its 1,400 metric values and 700 versions). Arrow columns of
    the schema's types, so a None is a NULL (a pandas frame would make it NaN in a float column)."""
    table = pa.Table.from_arrays(
        [pa.array([r[i] for r in rows], type=f.type) for i, f in enumerate(schema)], schema=schema
    )
    with registered(con, name, table):
        yield


@contextmanager
def registered(con: duckdb.DuckDBPyConnection, name: str, data):
    """An Arrow table or pandas frame visible to SQL as the view ``name`` while the block runs."""
    con.register(name, data)
    try:
        yield
    finally:
        con.unregister(name)


def db_path(results: Path) -> Path:
    return Path(results) / DB_NAME


def _one(con: duckdb.DuckDBPyConnection, sql: str) -> tuple | None:
    """The first row, with the result read to its end: DuckDB 2 refuses a relation (``con.sql``) on a connection
    whose last result was left unfinished, as ``fetchone`` leaves it."""
    rows = con.execute(sql).fetchall()
    return rows[0] if rows else None


def migrate(con: duckdb.DuckDBPyConnection) -> int:
    """Bring the schema to SCHEMA_VERSION, one transaction per step. Returns the version found before."""
    con.execute("CREATE TABLE IF NOT EXISTS meta (key VARCHAR PRIMARY KEY, value VARCHAR)")
    row = _one(con, "SELECT value FROM meta WHERE key = 'schema_version'")
    found = int(row[0]) if row else 0
    if found > SCHEMA_VERSION:
        raise QvalError(f"{DB_NAME} has schema version {found}, newer than this qval ({SCHEMA_VERSION}); upgrade qval")
    for version, statements in MIGRATIONS:
        if version <= found:
            continue
        con.execute("BEGIN TRANSACTION")
        try:
            for sql in statements:
                con.execute(sql)
            con.execute("INSERT OR REPLACE INTO meta VALUES ('schema_version', ?)", [str(version)])
            con.execute("COMMIT")
        except Exception:
            # A COMMIT that fails has already ended the transaction: ROLLBACK would then raise "no transaction is
            # active" and hide the error that matters.
            with suppress(duckdb.TransactionException):
                con.execute("ROLLBACK")
            raise
    return found


# DuckDB lets one process open a file read-write, or any number read-only, not both: a reader during an ingest (or
# an ingest while a reader is open) gets "Conflicting lock". Both sides wait for the other, then say what to do.
READ_WAIT_S = float(os.environ.get("QVAL_DB_WAIT_S", "60"))


def _is_lock_conflict(exc: Exception) -> bool:
    text = str(exc).lower()
    return "lock" in text and ("conflicting" in text or "could not set lock" in text)


def _connect_waiting(path: Path, read_only: bool, wait_s: float) -> duckdb.DuckDBPyConnection:
    deadline, told = time.monotonic() + wait_s, False
    while True:
        try:
            return duckdb.connect(str(path), read_only=read_only)
        except duckdb.IOException as exc:
            if not _is_lock_conflict(exc) or time.monotonic() >= deadline:
                raise
            if not told:
                other = "an ingest is writing it" if read_only else "another process has it open"
                print(f"qval: {path} is busy ({other}); waiting up to {wait_s:.0f} s", file=sys.stderr, flush=True)
                told = True
            time.sleep(0.25)


def connect_writer(results: Path, wait_s: float | None = None) -> duckdb.DuckDBPyConnection:
    Path(results).mkdir(parents=True, exist_ok=True)
    try:
        con = _connect_waiting(db_path(results), False, READ_WAIT_S if wait_s is None else wait_s)
    except duckdb.IOException as exc:
        if not _is_lock_conflict(exc):
            raise
        raise ResultsLockedError(
            f"cannot write {db_path(results)}: another process keeps it open ({exc}). Nothing is lost: the parts "
            f"are on disk; close the other process and run `qval ingest --results {results}`"
        ) from None
    try:
        migrate(con)
    except BaseException:
        # The failed step was rolled back (the file stays at the version before it); let go of the file, so that
        # this process, or the next writer, can open it and run the step again.
        con.close()
        raise
    return con


def connect_reader(results: Path) -> duckdb.DuckDBPyConnection:
    path = db_path(results)
    if not path.exists():
        raise UsageError(f"no results database at {path}; run `qval run SUITE` or `qval ingest` first")
    try:
        con = _connect_waiting(path, True, READ_WAIT_S)
    except duckdb.IOException as exc:
        if not _is_lock_conflict(exc):
            raise
        raise ResultsLockedError(
            f"{path} is being written (an ingest is running) for more than {READ_WAIT_S:.0f} s; "
            "try again when it finishes"
        ) from None
    # Readers never migrate (they open the file read-only): a database an older qval wrote lacks tables and columns
    # this one reads, so say how to upgrade it rather than fail on a missing table.
    row = _one(con, "SELECT value FROM meta WHERE key = 'schema_version'") if _has_meta(con) else None
    found = int(row[0]) if row else 0
    if found < SCHEMA_VERSION:
        con.close()
        raise UsageError(
            f"{path} has schema version {found}; this qval reads version {SCHEMA_VERSION}. Run `qval ingest "
            f"--results {Path(results)}` once to upgrade it (rows are kept; metrics are recomputed from them)"
        )
    return con


def _has_meta(con: duckdb.DuckDBPyConnection) -> bool:
    row = _one(con, "SELECT count(*) FROM information_schema.tables WHERE table_name = 'meta'")
    return bool(row and row[0])


def _open_lock(results: Path) -> int:
    """The lock file's descriptor, creating the folder; a folder qval cannot write is a usage error here, before
    anything is run (not a PermissionError from deep inside a run)."""
    try:
        results.mkdir(parents=True, exist_ok=True)
        # The lock file may exist from when the folder was writable: ask about the folder itself too (root passes).
        if not os.access(results, os.W_OK | os.X_OK):
            raise PermissionError(13, "Permission denied", str(results))
        return os.open(results / ".qval.lock", os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise results_not_writable(results, exc) from None


@contextmanager
def results_lock(results: Path, what: str):
    """One writer per results folder: a second `qval run`/`qval ingest` gets a clear error instead of a corrupt DB."""
    fd = _open_lock(Path(results))
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "another process"
            raise ResultsLockedError(
                f"results folder {results} is in use by {holder}; wait for it to finish or use another --results"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"qval {what} (pid {os.getpid()})".encode(), 0)
        yield
    finally:
        os.close(fd)  # closing releases the lock
