"""Arrow schema of the decoding track's sample table; the Parquet parts and the DuckDB table share it."""

from __future__ import annotations

import pyarrow as pa

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
        # CPU threads the engine that decoded this turn ran with, as it reports them (the worker's torch, or the vLLM
        # child's OpenMP pool); NULL where unknown (a remote server). Timings with different counts do not compare.
        ("threads", pa.int32()),
        # The forward pass that decoded the turn: "qval" (qval's own, models/fast_llama.py) or "transformers"; NULL
        # for a served model (its engine's own). Timings with different forwards do not compare.
        ("forward", pa.string()),
        # The turn's output as text (special tokens skipped), cut at transcript.MAX_CHARS with output_capped set, and
        # the [start, end) character spans of accepted draft tokens in it, flattened: s0, e0, s1, e1, ...
        ("output_text", pa.string()),
        ("output_capped", pa.bool_()),
        ("accepted_chars", pa.list_(pa.int32())),
        # The dataset checker's verdict on the turn's whole output (qval/decode/checkers.py), judged once in the
        # worker: NULL where the dataset has no checker. check_detail says what was judged (the extracted answer,
        # the failing test).
        ("correct", pa.bool_()),
        ("check_detail", pa.string()),
    ]
)
