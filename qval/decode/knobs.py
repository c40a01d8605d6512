"""The report's headroom per knob (qval.decode.sweeps), computed once per sweep whose cells changed.

Each sweep's rows (best fixed setting, per-sample oracle, cross-validated selector: about half a second a sweep of
10,000 samples) are kept in the report folder's cache (cache.py) under a key of the sweep's definition, the cells
table rows of its cells and their AR baselines (which change whenever ingest replaces a cell's samples), the source
of the code that computes them and the numeric libraries' versions. A rebuild computes only the sweeps whose key
changed and reads only their samples.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import scipy

from ..report import cache
from .sweeps import Group, load_sweeps, sweep_groups, sweep_headroom

FOLDS, SEED = 5, 0
# The modules whose code decides the rows: a change to any of them recomputes every sweep.
_CODE = ("qval.decode.sweeps", "qval.decode.replay", "qval.decode.selector", "qval.stats", "qval.decode.knobs")


def _key(info: pd.DataFrame, group: Group) -> str:
    members = list(group[3].values())
    baselines = [b for c in members if isinstance(b := info.at[c, "baseline_cell_id"], str) and b in info.index]
    return cache.key(
        "knob-headroom",
        cache.code_version(*_CODE),
        [np.__version__, pd.__version__, scipy.__version__],
        FOLDS,
        SEED,
        group,
        info.loc[sorted(set(members) | set(baselines))].reset_index(),
    )


def _plain(rows: list[dict]) -> list[dict]:
    """Rows as the cache stores them (JSON: tuples become lists, NumPy scalars Python numbers), so that a fresh
    computation and a cached one give the same frame."""
    return json.loads(json.dumps(rows, default=lambda v: v.item()))


def knob_headroom(results, suite: str) -> pd.DataFrame:
    """One row per (sweep, metric) of the suite's knob sweeps (sweeps.headroom_rows), from the active report cache
    where a sweep is unchanged."""
    info, groups = sweep_groups(results, suite)
    store = cache.active()
    keys = [_key(info, g) for g in groups] if store is not None else []
    rows: list[list[dict] | None] = [store.get_json("headroom", k) for k in keys] if store else [None] * len(groups)
    todo = [g for g, r in zip(groups, rows) if r is None]
    fresh = {(s.knob, tuple(s.cells.items())): s for s in load_sweeps(results, info, todo)}
    for i, group in enumerate(groups):
        if rows[i] is not None:
            continue
        sweep = fresh.get((group[1], tuple(group[3].items())))
        # A sweep without values (no sample at every setting) has no rows, and that is cached too.
        rows[i] = _plain(sweep_headroom(sweep, FOLDS, SEED)) if sweep is not None else []
        if store is not None:
            store.put_json("headroom", keys[i], rows[i])
    return pd.DataFrame([row for group_rows in rows for row in group_rows or []])
