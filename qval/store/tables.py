"""Arrow schemas of the per-sample tables; the Parquet parts and the DuckDB tables share them."""

from __future__ import annotations

import pyarrow as pa

# One request a scorer sent while scoring a point (qval/models/transcript.py): prompt and reply as text, what the
# scorer's reader parsed from a generated reply (or why it could not), whether the request layer's memo answered,
# and whether a text was cut at transcript.MAX_CHARS.
REQUEST = pa.struct(
    [
        ("kind", pa.string()),  # generate, logprobs (continuations), next (top next tokens) or tokens (given ones)
        ("prompt", pa.string()),
        ("reply", pa.string()),
        ("parsed", pa.string()),
        ("parse_error", pa.string()),
        ("memo", pa.bool_()),
        ("capped", pa.bool_()),
    ]
)

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

# The requests a scorer sent in prepare(), once per cell before any point is scored (codegen writes its programs
# there). One row, in RESULTS/parts/<cell>/prepare-requests.parquet (qval/store/parts.py), rewritten by each attempt.
PREPARE_REQUESTS = pa.schema([("cell_id", pa.string()), ("requests", pa.list_(REQUEST))])

DECODE_SAMPLES = pa.schema(
    [
        ("cell_id", pa.string()),
        ("sample_id", pa.string()),  # one prompt (all its turns); resume unit
        ("turn", pa.int32()),
        ("category", pa.string()),
        ("prompt_tokens", pa.int32()),
        ("new_tokens", pa.int32()),
        ("target_steps", pa.int32()),
        ("drafted", pa.list_(pa.int32())),  # draft tokens proposed per target step
        ("accepted", pa.list_(pa.int32())),  # draft tokens accepted per target step
        ("prefill_s", pa.float64()),
        ("decode_s", pa.float64()),
        ("stopped_on_eos", pa.bool_()),
        ("output_sha", pa.string()),
        ("output_ids", pa.list_(pa.int32())),
        ("error", pa.string()),
        # Prefill features of the first generated position (inputs to instance-adaptive policies such as BlockPilot's).
        ("prefill_entropy", pa.float64()),
        ("prefill_top_prob", pa.float64()),
        # Seconds of decode_s the harness clocked inside the policy's drafter (input to the modelled speedup).
        ("draft_s", pa.float64()),
        # Machine load while this turn was timed (qval/loadwatch.py): other processes' CPU in cores, the steal share of
        # all CPU time, and the 1-minute load average at the end. Timings taken under load are flagged in reports.
        ("load_other_cores", pa.float64()),
        ("load_steal", pa.float64()),
        ("load_avg1", pa.float64()),
        # The turn's output as text (special tokens skipped), cut at transcript.MAX_CHARS with output_capped set, and
        # the [start, end) character spans of accepted draft tokens in it, flattened: s0, e0, s1, e1, ...
        ("output_text", pa.string()),
        ("output_capped", pa.bool_()),
        ("accepted_chars", pa.list_(pa.int32())),
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

# Per track, where its metric view lives ("module:attribute", a ``qval.metrics.base.MetricView``): the columns
# its metrics may read, which rows they see and in what order. Imported on use: the store never imports a track.
METRIC_VIEWS = {
    "qalign": "qval.qalign.metrics:VIEW",
    "qalign_state": "qval.qalign.metrics:STATE_VIEW",
    "decode": "qval.decode.metrics:VIEW",
}
SCHEMAS = {"qalign": QALIGN_SAMPLES, "decode": DECODE_SAMPLES, "qalign_state": QALIGN_STATE_VALUES}
SAMPLE_TABLES = {"qalign": "qalign_samples", "decode": "decode_samples", "qalign_state": "qalign_state_values"}
# Tracks shown on one leaderboard: per-state values sit beside the Q-alignment cells.
BOARD_TRACKS = {"qalign": ("qalign", "qalign_state"), "decode": ("decode",)}
