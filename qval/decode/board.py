"""What the decoding leaderboard and `qval compare` read beyond the metric table: per-sample acceptance, and the CPU
threads each cell was timed with."""

from __future__ import annotations

import pandas as pd
import pyarrow.compute as pc

from .. import results as R


def sample_summary(results="results", suite: str | None = None) -> pd.DataFrame:
    """Per (cell, sample, turn): acceptance length τ = 1 + accepted/steps, decode time, tokens (for plots)."""
    sql = (
        "SELECT t.cell_id, t.sample_id, t.turn, 1 + coalesce(list_sum(t.accepted), 0) / t.target_steps AS tau, "
        "t.decode_s, t.new_tokens FROM decode_samples t {join} WHERE t.error IS NULL AND t.target_steps > 0 {where}"
    )
    if suite is None:
        return _categorical(results, sql.format(join="", where=""), [])
    return _categorical(
        results, sql.format(join="JOIN suite_cells s USING (cell_id)", where="AND s.suite = ?"), [suite]
    )


def _categorical(results, sql: str, params: list) -> pd.DataFrame:
    """The rows with cell_id and sample_id as categoricals: a million ids converted to Python strings one by one cost
    a report about a second; dictionary-encoded, a tenth of that."""
    with R.connection(results) as con:
        table = con.sql(sql, params=params).to_arrow_table()
    for name in ("cell_id", "sample_id"):
        table = table.set_column(table.schema.get_field_index(name), name, pc.dictionary_encode(table[name]))
    return table.to_pandas()


def per_sample_tau(summary: pd.DataFrame) -> dict[str, pd.Series]:
    """Per cell, τ of each (sample, turn), indexed "sample:turn" (what `qval compare` pairs)."""
    return {
        cell: pd.Series(
            rows["tau"].to_numpy(float), index=rows["sample_id"].astype(str) + ":" + rows["turn"].astype(str)
        )
        for cell, rows in summary.groupby("cell_id", sort=False, observed=True)
    }


def cell_conditions(results, suite: str) -> dict[str, dict[str, str]]:
    """Per cell of the suite, the CPU threads its engine decoded with ("2"; "1, 2" if its turns differ) and the
    forward pass ("qval" or "transformers"), from the sample rows (qval/decode/tables.py). A cell whose rows record
    neither (a remote server, rows from before the columns) is left out: unknown is not a difference."""
    frame = R.query(
        results,
        "SELECT t.cell_id, "
        "array_to_string(list_sort(list(DISTINCT t.threads) FILTER (t.threads IS NOT NULL)), ', ') AS threads, "
        "array_to_string(list_sort(list(DISTINCT t.forward) FILTER (t.forward IS NOT NULL)), ', ') AS forward "
        "FROM decode_samples t JOIN suite_cells s USING (cell_id) "
        "WHERE s.suite = ? AND (t.threads IS NOT NULL OR t.forward IS NOT NULL) GROUP BY t.cell_id",
        [suite],
    )
    out: dict[str, dict[str, str]] = {}
    for cell, threads, forward in zip(frame["cell_id"], frame["threads"], frame["forward"]):
        values = {"threads": str(threads), "forward": str(forward)}
        out[str(cell)] = {k: v for k, v in values.items() if v}
    return out
