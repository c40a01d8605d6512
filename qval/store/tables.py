"""Arrow schemas the store itself defines: transcripts of requests. Each track declares its own sample tables
(qval.tracks.SampleTable; qval/qalign/tables.py and qval/decode/tables.py); the Parquet parts and the DuckDB tables
share them."""

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

# The requests a scorer sent in prepare(), once per cell before any point is scored (codegen writes its programs
# there). One row, in RESULTS/parts/<cell>/prepare-requests.parquet (qval/store/parts.py), rewritten by each attempt.
PREPARE_REQUESTS = pa.schema([("cell_id", pa.string()), ("requests", pa.list_(REQUEST))])
