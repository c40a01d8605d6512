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

# Scorer-guided episodes (qval/qalign/guided.py): one row per step the agent took. The episode's summary (what the
# guided metrics read) sits on its last step's row, ``last`` true; NULL on the others.
QALIGN_GUIDED = pa.schema(
    [
        ("cell_id", pa.string()),
        ("sample_id", pa.string()),  # one episode; resume unit
        ("step", pa.int32()),
        ("state_key", pa.string()),
        ("candidates", pa.list_(pa.string())),  # the actions scored at this step (all legal ones, or best-of-N's)
        ("scores", pa.list_(pa.float64())),  # NULL where the scorer failed on that candidate
        ("ref_q", pa.list_(pa.float64())),  # exact Q* of each candidate
        ("action", pa.string()),  # the action taken
        ("reward", pa.float64()),
        ("done", pa.bool_()),
        ("error", pa.string()),  # why some candidate has no score at this step (a failed step), else NULL
        ("requests", pa.list_(REQUEST)),  # this step's transcript
        ("last", pa.bool_()),
        ("v_star", pa.float64()),  # V*(s0) of the episode's start state
        ("episode_return", pa.float64()),  # discounted with the section's gamma
        ("success", pa.bool_()),
        ("steps", pa.int32()),
        ("failed_steps", pa.int32()),
    ]
)
