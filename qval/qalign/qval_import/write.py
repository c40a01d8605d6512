"""The write into qval's store: one cell per (estimator, method), written as parts and DONE manifests with a plan
and a run record, so that the normal ``qval ingest`` picks the cells up like any worker's output.

Cell ids are content hashes of (source sha256, estimator, method): changing what enters them orphans every cell
users already imported.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd

from qval.errors import UsageError
from qval.identity import IDENTITY_VERSION, content_hash
from qval.qalign.track import QALIGN_ROW_FORMAT

from .summary import ImportedSummary, PointwiseEntry, RankingEntry

IMPORT_MARKER = "qval-import"
TRACK = "qalign"
STATE_TRACK = "qalign_state"  # per-state values only (qalign_state_values): QVal keeps no per-candidate rows

# QVal's own family names for its method ids (docs: 7 families); anything else is family "qval-import".
_FAMILIES = [
    (r"^(direct|gvl)", "direct"),
    (r"(codegen|eureka)", "code"),
    (r"^(verifier|delta-belief)", "intrinsic"),
    (r"^ranking", "ranking"),
    (r"^sdpo", "self-distillation"),
    (r"^(vip|liv)", "pre-trained"),
    (r"^vlm", "embedding"),
]


def metric_frame(rows: pd.DataFrame, cell_id: str = "imported") -> pd.DataFrame:
    """What qval's qalign metrics receive from ingest (``_samples_by_cell``): every row, with a NULL score where
    the row has an error; columns ``cell_id, sample_id, state_key, candidate, score, ref_q, is_behaviour``, index
    reset."""
    frame = rows[["sample_id", "state_key", "candidate", "score", "ref_q", "is_behaviour"]].copy()
    frame.loc[rows["error"].notna().to_numpy(), "score"] = float("nan")
    frame.insert(0, "cell_id", cell_id)
    return frame.reset_index(drop=True)


def family_of(method: str) -> str:
    base = method.split("#", 1)[0]
    for pattern, family in _FAMILIES:
        if re.search(pattern, base):
            return family
    return IMPORT_MARKER


def suite_name(s: ImportedSummary) -> str:
    """A valid qval suite name (``^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$``), unique per source file."""
    stem = re.sub(r"[^A-Za-z0-9_.-]", "_", s.source.stem) or "summary"
    return f"{IMPORT_MARKER}-{stem}"[:54] + f"-{s.sha256[:8]}"


def import_cells(s: ImportedSummary, model: str | None = None, temperature: float | None = None):
    """One qval ``Cell`` per (estimator, method): pointwise cells in track "qalign", ranking ones in STATE_TRACK.

    Returns ``[(cell, entry)]``. The cell id is a content hash of (source sha256, estimator, method)."""
    from qval.cell import Cell

    model = model or s.model_token
    if not model:
        raise UsageError(
            f"{s.source}: the summary names no model and none was found in its file or folder name; "
            "pass model=… (e.g. q35-122)"
        )
    entries: list[tuple[PointwiseEntry | RankingEntry, str]] = [(e, TRACK) for e in s.pointwise]
    entries += [(e, STATE_TRACK) for e in s.ranking]
    out = []
    for entry, track in entries:
        identity = {
            "v": IDENTITY_VERSION,
            "source": IMPORT_MARKER,
            "source_sha256": s.sha256,
            "estimator": entry.estimator,
            "method": entry.method,
        }
        if track == TRACK:
            identity["rows"] = QALIGN_ROW_FORMAT  # rows carry is_behaviour: imports from before are redone
        method_params: dict[str, Any] = {"qval_method": entry.method, "estimator": entry.estimator}
        if isinstance(entry, PointwiseEntry) and entry.group is not None:
            method_params.update(group=entry.group, sample_index=entry.sample_index, alias=entry.alias)
        cell = Cell(
            cell_id=content_hash(identity),
            track=track,
            model=model,
            model_identity={"source": IMPORT_MARKER, "qval_backbone": model},
            method=f"{IMPORT_MARKER}:{entry.method}",
            method_params=method_params,
            family=family_of(entry.method),
            dataset=s.env_name,
            dataset_params={"gt": entry.estimator, "summary_sha256": s.sha256, "summary": s.source.name},
            # None where QVal recorded none: a qval run always has both, an import may not.
            temperature=temperature,
            seed=s.collection_seed,
            settings={
                "import": {
                    "source": str(s.source),
                    "sha256": s.sha256,
                    "min_points": s.min_points,
                    "exclude_zero_points": s.exclude_zero_points,
                    "timestamp": s.timestamp,
                }
            },
            dataset_label=f"{s.env_name}(gt={entry.estimator})",
        )
        out.append((cell, entry))
    return out


@dataclass
class WriteReport:
    suite: str
    plan_path: Path
    run_id: str
    written: list[str] = field(default_factory=list)  # cell ids written now
    already_done: list[str] = field(default_factory=list)


def write_import_parts(
    s: ImportedSummary, results_dir, model: str | None = None, temperature: float | None = None
) -> WriteReport:
    """Write the summary as qval parts + DONE manifests, a plan manifest and a run record, so that the normal
    ``qval ingest`` picks the cells up. Idempotent: cells already DONE are left alone; an interrupted import
    resumes per sample (as a worker does)."""
    from qval import __version__
    from qval.plan import Plan
    from qval.store.parts import PartWriter, is_done, write_json_atomic

    results = Path(results_dir)
    cells = import_cells(s, model, temperature)
    suite = suite_name(s)
    plan_id = content_hash({"suite": suite, "cells": sorted(c.cell_id for c, _ in cells)}, length=12)
    run_id = f"{IMPORT_MARKER}-{s.sha256[:12]}"
    report = WriteReport(suite, results / "plans" / f"{plan_id}.json", run_id)
    now = datetime.now(UTC).isoformat()
    for cell, entry in cells:
        if is_done(results, cell.cell_id):
            report.already_done.append(cell.cell_id)
            continue
        writer = PartWriter(results, cell.cell_id, cell.track, flush_rows=10_000, flush_seconds=3600)
        done = writer.done_sample_ids()
        rows = entry.rows if isinstance(entry, PointwiseEntry) else entry.states
        for row in rows.to_dict("records"):
            if row["sample_id"] in done:
                continue
            # Parquet wants null, not NaN, for a missing score or reference.
            writer.add_sample([{k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in row.items()}])
        manifest = {
            "run_id": run_id,
            "plan_id": plan_id,
            "cell_id": cell.cell_id,
            "started_at": now,
            "hardware": None,
            "n_samples": len(rows),
            "n_failed": int(rows["error"].notna().sum()),
            "qval_import": _provenance(s, entry),
        }
        writer.finish(manifest)
        report.written.append(cell.cell_id)
    registered = _registered_metrics()
    qalign_metrics = [
        m for m in ("pooled_spearman", "pooled_kendall", "pooled_pearson", "per_state_spearman") if m in registered
    ]
    plan = Plan(
        plan_id,
        suite,
        str(s.source),
        s.sha256,
        f"QVal summary {s.source.name} ({s.env_name}), imported with {IMPORT_MARKER}",
        {
            "name": suite,
            "qalign": {"metrics": qalign_metrics, "main_metric": "pooled_spearman"},
            IMPORT_MARKER: {
                "source": str(s.source),
                "sha256": s.sha256,
                "env_name": s.env_name,
                "model": model or s.model_token,
                "notes": s.notes,
            },
        },
        {c.cell_id: c for c, _ in cells},
        [],
    )
    plan.write(results)
    run_file = results / "runs" / f"{run_id}.json"
    if not run_file.exists():
        run_file.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(
            run_file,
            {
                "run_id": run_id,
                "suite": suite,
                "plan_id": plan_id,
                "status": "done",
                "started_at": now,
                "finished_at": now,
                "fingerprint": {
                    "packages": {"qval": __version__},
                    "argv": f"{IMPORT_MARKER} {s.source}",
                    "source_sha256": s.sha256,
                },
            },
        )
    return report


def _provenance(s: ImportedSummary, entry: PointwiseEntry | RankingEntry) -> dict:
    """The stored numbers next to each cell's rows (in its DONE manifest), so a cell shows what QVal published."""
    base: dict = {"source": str(s.source), "sha256": s.sha256, "estimator": entry.estimator, "method": entry.method}
    if isinstance(entry, PointwiseEntry):
        base["stored"] = None if entry.stored is None else {m: vars(v) for m, v in entry.stored.items()}
        base["num_dropped_zero"] = entry.num_dropped_zero
    else:
        base["stored"] = entry.stored
    return base


def _registered_metrics() -> set[str]:
    from qval.registry import REGISTRY

    return set(REGISTRY.names("metrics"))
