"""The report's headroom per knob (qval.decode.sweeps), computed once per sweep whose cells changed.

Each sweep's rows (best fixed setting, per-sample oracle, cross-validated selector: about half a second a sweep of
10,000 samples) are kept in the report folder's cache (cache.py) under a key of the sweep's definition, the cells
table rows of its cells and their AR baselines (which change whenever ingest replaces a cell's samples), the source
of the code that computes them and the numeric libraries' versions. A rebuild computes only the sweeps whose key
changed and reads only their samples.
"""

from __future__ import annotations

import json
from collections.abc import Callable

import numpy as np
import pandas as pd
import scipy
from threadpoolctl import threadpool_limits

from ..cell import TRAITS
from ..report import background, cache
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
        # Not the method's traits: they say nothing of a sweep's samples (and a NULL flag's dtype follows the
        # suite's other cells).
        info.loc[sorted(set(members) | set(baselines))].drop(columns=list(TRAITS), errors="ignore").reset_index(),
    )


def _plain(rows: list[dict]) -> list[dict]:
    """Rows as the cache stores them (JSON: tuples become lists, NumPy scalars Python numbers), so that a fresh
    computation and a cached one give the same frame."""
    return json.loads(json.dumps(rows, default=lambda v: v.item()))


def knob_headroom(results, suite: str) -> pd.DataFrame:
    """One row per (sweep, metric) of the suite's knob sweeps (sweeps.headroom_rows), from the active report cache
    where a sweep is unchanged."""
    return start_knob_headroom(results, suite)()


def start_knob_headroom(results, suite: str) -> Callable[[], pd.DataFrame]:
    """``knob_headroom`` begun: while a report is being written, a worker process computes the sweeps the cache does
    not hold (background.start) as the report goes on; the function returned waits for them and gives the frame."""
    info, groups = sweep_groups(results, suite)
    store = cache.active()
    keys = [_key(info, g) for g in groups] if store is not None else []
    rows: list[list[dict] | None] = [store.get_json("headroom", k) for k in keys] if store else [None] * len(groups)
    todo = [i for i, r in enumerate(rows) if r is None]
    samples = int(info.loc[list({c for i in todo for c in groups[i][3].values()}), "n_samples"].fillna(0).sum())
    pending = (
        background.start(
            sweep_rows,
            results,
            info,
            [groups[i] for i in todo],
            worth_a_worker=samples >= background.WORKER_MIN_SAMPLES,
        )
        if todo
        else None
    )

    def finish() -> pd.DataFrame:
        for i, computed in zip(todo, pending.result() if pending is not None else []):
            rows[i] = computed
            if store is not None:
                store.put_json("headroom", keys[i], computed)
        return pd.DataFrame([row for group_rows in rows for row in group_rows or []])

    return finish


def sweep_rows(results, info: pd.DataFrame, groups: list[Group]) -> list[list[dict]]:
    """The rows of these sweeps (``info``, ``groups``: as sweep_groups gives them), each as the cache stores it; a
    sweep without values (no sample at every setting) has none. In a worker process (start_knob_headroom) or the
    report's own."""
    out = []
    # One BLAS thread, as in a worker process (background.spawn): the rows are the same bits wherever computed.
    with threadpool_limits(limits=1, user_api="blas"):
        fresh = {(s.knob, tuple(s.cells.items())): s for s in load_sweeps(results, info, groups)}
        for group in groups:
            sweep = fresh.get((group[1], tuple(group[3].items())))
            out.append(_plain(sweep_headroom(sweep, FOLDS, SEED)) if sweep is not None else [])
    return out
