"""Arrow schemas of the Q-alignment track's sample tables; the Parquet parts and the DuckDB tables share them."""

from __future__ import annotations

import pyarrow as pa

from ..store.tables import REQUEST

QALIGN_SAMPLES = pa.schema(
    [
        ("cell_id", pa.string()),
        ("sample_id", pa.string()),  # one evaluation point (state); resume unit
        ("state_key", pa.string()),
        ("candidate", pa.int32()),
        ("action", pa.string()),
        ("score", pa.float64()),  # NULL when the method failed on this point
        ("ref_q", pa.float64()),
        ("error", pa.string()),
        # The action the behaviour policy took at this point: QVal's pooled statistics use these rows only.
        ("is_behaviour", pa.bool_()),
        # The point's transcript, on its first candidate's row only (NULL on the others: one copy per point).
        ("requests", pa.list_(REQUEST)),
        # A scorer that scores several points in one call (batch_points > 1) sends requests that cannot be told apart
        # per point: the batch's requests sit on its first point, and every point of the batch lists the batch's
        # sample ids here, in order (so the first names the point that holds them). NULL for a point scored alone.
        ("batch", pa.list_(pa.string())),
    ]
)

# Per-state values of cells that have no per-candidate rows: QVal summaries store only the per-state Spearman ρ of
# ranking-style methods. One row per state; ``value`` NULL when QVal skipped the state (``error`` says why).
QALIGN_STATE_VALUES = pa.schema(
    [
        ("cell_id", pa.string()),
        ("sample_id", pa.string()),
        ("state_key", pa.string()),
        ("n_candidates", pa.int32()),
        ("value", pa.float64()),
        ("error", pa.string()),
    ]
)
