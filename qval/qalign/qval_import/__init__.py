"""Import a bethgelab/qval evaluation summary (``summary_*.json``) as qval Q-alignment cells.

Published QVal results then sit in qval's DuckDB tables next to new runs, and qval's own metrics reproduce the
summary's stored correlations. One module per step: ``schema`` (what the JSON must hold, as pydantic models),
``summary`` (the validated JSON as qval rows), ``recompute`` (QVal's statistics), ``check`` (against the numbers
the summary stores) and ``write`` (cells, parts and manifests in qval's store).

What a summary holds (see tests/data/qval_reference/SCHEMA.md) and how it maps:

* point estimations (one per ground-truth estimator, e.g. ``qv_mc_max``): one pointwise cell per method. Each
  evaluation point is one ``qalign_samples`` sample with a single candidate (the actor's own action): ``score`` is
  the prediction, ``ref_q`` the ground truth. A pair QVal could not use keeps its row with an ``error`` (missing
  prediction, missing reference, excluded zero), so ingest leaves it out of the metrics exactly as QVal did.
* the multi-sample code entry (``llm_codegen_qv_optimal``): one cell per program (``…#03``) plus the per-point mean
  of the programs, which is either the summary's own averaged entry (``codegen-mean_qv``) or, if the summary has
  none, a derived ``…#mean`` variant (no stored numbers to compare).
* ranking estimations (``ranking_gt_*``): only per-state Spearman ρ survive in a summary (no per-candidate scores or
  ground truth), so they are per-state values, never pooled rows. They need their own table (see
  ``STATE_TRACK``).
"""

from __future__ import annotations

from pathlib import Path

from qval.errors import UsageError

from .check import CheckReport, check_summary
from .recompute import (
    POINT_METRICS,
    qval_correlations,
    recompute_aggregates,
    recompute_pointwise,
    recompute_ranking,
)
from .schema import MIN_USABLE_POINTS, QvalSummary, SummaryError, validate_summary
from .summary import (
    AGGREGATE_STATS,
    ERR_BEYOND,
    ERR_NOT_COVERED,
    ERR_NULL_PRED,
    ERR_NULL_REF,
    ERR_ZERO,
    RANKING_STATS,
    SAMPLE_COLUMNS,
    STATE_COLUMNS,
    ImportedSummary,
    PointwiseEntry,
    RankingEntry,
    SampleGroup,
    Stored,
    parse_summary,
    pointwise_rows,
    read_summary,
)
from .write import (
    IMPORT_MARKER,
    STATE_TRACK,
    TRACK,
    WriteReport,
    family_of,
    import_cells,
    metric_frame,
    suite_name,
    write_import_parts,
)

__all__ = [
    "AGGREGATE_STATS",
    "ERR_BEYOND",
    "ERR_NOT_COVERED",
    "ERR_NULL_PRED",
    "ERR_NULL_REF",
    "ERR_ZERO",
    "IMPORT_MARKER",
    "MIN_USABLE_POINTS",
    "POINT_METRICS",
    "RANKING_STATS",
    "SAMPLE_COLUMNS",
    "STATE_COLUMNS",
    "STATE_TRACK",
    "TRACK",
    "CheckReport",
    "ImportedSummary",
    "PointwiseEntry",
    "QvalSummary",
    "RankingEntry",
    "SampleGroup",
    "Stored",
    "SummaryError",
    "WriteReport",
    "check_summary",
    "family_of",
    "import_cells",
    "import_qval",
    "metric_frame",
    "parse_summary",
    "pointwise_rows",
    "qval_correlations",
    "read_summary",
    "recompute_aggregates",
    "recompute_pointwise",
    "recompute_ranking",
    "suite_name",
    "validate_summary",
    "write_import_parts",
]


def import_qval(path, results_dir, model: str | None = None, temperature: float | None = None, check: bool = True):
    """What ``qval import-qval SUMMARY.json [--model M] [--results DIR]`` calls: read, check (every stored number
    must be reproduced, else nothing is written), then write parts and ingest, under the results lock."""
    from qval.store.db import results_lock
    from qval.store.ingest import ingest

    summary = read_summary(path)
    report = check_summary(summary)
    if check and not report.ok():
        raise UsageError(
            f"{path}: {len(report.mismatches)} stored number(s) not reproduced, first: "
            f"{report.mismatches[0]}; nothing imported"
        )
    with results_lock(Path(results_dir), f"import-qval {Path(path).name}"):
        written = write_import_parts(summary, results_dir, model, temperature)
        return summary, report, written, ingest(Path(results_dir))
