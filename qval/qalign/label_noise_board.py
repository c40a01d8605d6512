"""The label-noise comparison in a suite's report (``qalign.label_noise``), computed once per change of its inputs.

The same document as `qval label-noise` (qval/qalign/label_noise.py): the Monte-Carlo returns are stored once under
``RESULTS/labels/`` (shared with the command), and the comparison itself (per-point ρ under each label set, Kendall
τ-b with its state bootstrap) is kept in the report folder's cache (qval/report/cache.py) under a key of the suite's
Q-alignment cells as the ``cells`` table holds them (a row changes whenever ingest replaces a cell's samples), the
setting, and the source of the code that computes it. A rebuild of an unchanged suite rolls out and bootstraps
nothing.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from .. import results as R
from ..errors import UsageError
from ..report import cache
from . import label_noise as ln

# The modules whose code decides the document: a change to any of them recomputes it.
_CODE = (
    "qval.qalign.label_noise",
    "qval.qalign.mc_labels",
    "qval.qalign.reference",
    "qval.qalign.metrics",
    "qval.stats",
    "qval.qalign.label_noise_board",
)
KIND = "label_noise"


def label_sets(setting: dict) -> list[ln.LabelSet]:
    """The label sets a ``qalign.label_noise`` setting names, rollouts first (as the command orders them)."""
    return [ln.LabelSet(int(n), str(a)) for n in setting["rollouts"] for a in setting["agg"]]


def label_noise_doc(results, suite: str, setting: dict, reference: dict | None) -> dict:
    """The suite's comparison for its ``qalign.label_noise`` setting (validated: track.LabelNoiseConfig), from the
    active report cache when its inputs did not change. A suite the comparison cannot apply to (fewer than 2 methods
    on every set of points, points no longer stored) gets ``{"error": why}``, shown in the report instead of failing
    it."""
    cells = R.cells(results, suite)
    cells = cells[cells["track"] == "qalign"].reset_index(drop=True)
    store = cache.active()
    name = cache.key(
        KIND,
        cache.code_version(*_CODE),
        [np.__version__, pd.__version__],
        setting,
        reference,
        cells,
    )
    if store is not None and (doc := store.get_json(KIND, name)) is not None:
        return doc
    try:
        doc = ln.label_noise(
            Path(results), suite, label_sets(setting), seed=setting["seed"], max_steps=setting["max_steps"]
        )
    except UsageError as exc:
        doc = {"error": str(exc)}
    doc["setting"] = setting
    doc = json.loads(json.dumps(doc))  # as the cache returns it (tuples as lists): a fresh and a cached build agree
    if store is not None:
        store.put_json(KIND, name, doc)
    return doc
