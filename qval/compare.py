"""Compare two suites or two results folders: what changed, and whether the change is significant.

Cells are matched on (track, model, method label, dataset, temperature, seed). For each track's paired metric
(qval.tracks.Track.paired_metric: per-state ρ for Q-alignment, per-sample acceptance length for decoding) the verdict
comes from a paired sign-flip permutation test over the samples both sides share; for other metrics, from whether
the two 95% CIs overlap (labelled so).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from . import results as R
from .errors import UsageError
from .stats import paired_permutation_test
from .tracks import all_tracks, find_track, get_track

KEY = ["track", "model", "method", "dataset", "temperature", "seed"]
ALPHA = 0.05


@dataclass(frozen=True)
class Side:
    results: Path
    suite: str

    @property
    def label(self) -> str:
        return f"{self.results}:{self.suite}"


def parse_side(text: str, default_results: Path) -> Side:
    """``SUITE``, ``DIR:SUITE`` or ``DIR`` (a results folder holding exactly one suite)."""
    if ":" in text:
        folder, suite = text.rsplit(":", 1)
        return Side(Path(folder), suite)
    if Path(text).is_dir() and (Path(text) / "qval.duckdb").exists():
        suites = R.suites(text)["suite"].tolist()
        if len(suites) != 1:
            raise UsageError(f"{text} holds {len(suites)} suites ({', '.join(suites)}); name one as {text}:SUITE")
        return Side(Path(text), suites[0])
    return Side(Path(default_results), text)


def _cells(side: Side) -> pd.DataFrame:
    frames = [R.leaderboard(side.results, side.suite, t.name).assign(track=t.name) for t in all_tracks()]
    frame = (
        pd.concat([f for f in frames if not f.empty], ignore_index=True)
        if any(not f.empty for f in frames)
        else pd.DataFrame(columns=KEY + ["cell_id"])
    )
    if frame.empty and side.suite not in set(R.suites(side.results)["suite"]):
        raise UsageError(f"no suite '{side.suite}' in {side.results}")
    frame["model"] = frame["model"].fillna("–")
    return frame


def _per_sample(side: Side, track: str) -> dict[str, pd.Series]:
    """Per cell of one side, the per-unit values its paired test resamples (the track's own), read once per side."""
    return get_track(track).paired_units(side.results, side.suite)


def _paired_metric(track: str) -> str | None:
    found = find_track(track)
    return found.paired_metric if found is not None else None


def _conditions(side: Side) -> dict[str, dict[str, str]]:
    found: dict[str, dict[str, str]] = {}
    for track in all_tracks():
        found.update(track.conditions(side.results, side.suite))
    return found


def _differ(a: dict[str, str], b: dict[str, str]) -> str | None:
    """'threads 2 → 1' for the conditions both cells recorded and that differ; None when none do."""
    changed = [f"{name} {a[name]} → {b[name]}" for name in sorted(a.keys() & b.keys()) if a[name] != b[name]]
    return "; ".join(changed) or None


def compare(a: Side, b: Side) -> pd.DataFrame:
    """One row per matched cell and metric (or per cell on one side only). ``conditions_differ`` names what the two
    cells were measured under that differs (the CPU threads or forward pass of a decoding engine), like a speedup against another
    run's baseline: their timings do not compare, whatever the test says."""
    left, right = _cells(a), _cells(b)
    conditions = _conditions(a), _conditions(b)
    merged = left.merge(right, on=KEY, how="outer", suffixes=("_a", "_b"), indicator=True)
    metrics = sorted(
        {c for c in left.columns if f"{c}__lo" in left.columns}
        | {c for c in right.columns if f"{c}__lo" in right.columns}
    )
    per_sample: dict[tuple[Side, str], dict[str, pd.Series]] = {}

    def values(side: Side, cell_id: str, track: str) -> pd.Series:
        if (side, track) not in per_sample:
            per_sample[(side, track)] = _per_sample(side, track)
        return per_sample[(side, track)].get(cell_id, pd.Series(dtype=float))

    rows = []
    for rec in merged.to_dict("records"):
        base = {k: rec[k] for k in KEY}
        if rec["_merge"] != "both":
            rows.append(
                {**base, "metric": None, "verdict": "only in A" if rec["_merge"] == "left_only" else "only in B"}
            )
            continue
        differ = _differ(conditions[0].get(rec["cell_id_a"], {}), conditions[1].get(rec["cell_id_b"], {}))
        for metric in metrics:
            va, vb = rec.get(f"{metric}_a"), rec.get(f"{metric}_b")
            if _undefined(va) and _undefined(vb):
                continue
            row = {
                **base,
                "metric": metric,
                "a": va,
                "a_lo": rec.get(f"{metric}__lo_a"),
                "a_hi": rec.get(f"{metric}__hi_a"),
                "b": vb,
                "b_lo": rec.get(f"{metric}__lo_b"),
                "b_hi": rec.get(f"{metric}__hi_b"),
                "delta": None if _undefined(va) or _undefined(vb) else vb - va,
                "p_value": None,
                "test": None,
                "conditions_differ": differ,
            }
            if metric == _paired_metric(rec["track"]):
                sa = values(a, rec["cell_id_a"], rec["track"])
                sb = values(b, rec["cell_id_b"], rec["track"])
                common = sa.index.intersection(sb.index)
                if len(common) >= 2:
                    row["p_value"] = paired_permutation_test(sb[common], sa[common])
                    row["paired_mean_diff"] = float((sb[common] - sa[common]).mean())
                    row["test"] = f"paired permutation over {len(common)} shared samples"
            row["verdict"] = _verdict(row)
            rows.append(row)
    return pd.DataFrame(rows)


def _undefined(x) -> bool:
    return x is None or (isinstance(x, float) and np.isnan(x))


def _verdict(row: dict) -> str:
    if row["delta"] is None:
        return "defined on one side only"
    if row["test"]:  # direction from the paired differences over the shared samples the test used
        changed = row["p_value"] is not None and row["p_value"] < ALPHA
        return ("B higher" if row["paired_mean_diff"] > 0 else "B lower") if changed else "no significant change"
    bounds = [row["a_lo"], row["a_hi"], row["b_lo"], row["b_hi"]]
    if any(_undefined(x) for x in bounds):
        return "no CI: not tested"
    if row["b_lo"] > row["a_hi"]:
        return "B higher (CIs disjoint)"
    if row["b_hi"] < row["a_lo"]:
        return "B lower (CIs disjoint)"
    return "no significant change (CIs overlap)"
