"""Board rows and samples normalised for reporting: every column the report reads, numbers as float64 with NaN
for anything undefined, names as clean text; and the rows ranked into one table per (dataset, temperature)."""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import pandas as pd

from . import format as fmt
from .model import TrackBoard

TEXT_COLUMNS = ("cell_id", "model", "method", "family", "dataset")
NUMBER_COLUMNS = ("temperature", "seed", "n_samples", "n_failed")
CI_SUFFIXES = ("", "__lo", "__hi", "__n", "__n_states")
TEMPERATURE_METRICS = ("speedup", "acceptance_length")  # decode figure (a)
LOAD_METRIC = "load_other_cores"  # every decode cell has it; rows above loadwatch.BUSY_OTHER_CORES are flagged
_ACCEPT_RATE = re.compile(r"accept_rate@(\d+)")


@dataclass
class Group:
    """Rows of one (dataset, temperature) table, ranked, with a `rank` column."""

    dataset: str
    temperature: float
    rows: pd.DataFrame

    @property
    def title(self) -> str:
        return fmt.group_title(self.dataset, self.temperature)


def numbers(rows: pd.DataFrame, column: str) -> np.ndarray:
    """Column as float64 with missing, non-numeric and infinite entries as NaN.

    Plugins may hand over None, pd.NA, strings or a missing column; all of them
    mean "undefined" here, and infinities would otherwise print as 'inf'.
    """
    if column not in rows:
        return np.full(len(rows), np.nan)
    values = pd.to_numeric(rows[column], errors="coerce")
    # A copy: under copy-on-write, to_numpy() may return a read-only view.
    values = np.array(values.to_numpy(dtype=float, na_value=np.nan), dtype=float)
    values[~np.isfinite(values)] = np.nan
    return values


def source(board: TrackBoard) -> pd.DataFrame:
    return board.rows if isinstance(board.rows, pd.DataFrame) else pd.DataFrame()


def accept_positions(board: TrackBoard) -> list[int]:
    """Draft positions i for which board.rows has an 'accept_rate@i' column, ascending."""
    positions = set()
    for column in source(board).columns:
        match = _ACCEPT_RATE.fullmatch(str(column))
        if match:
            positions.add(int(match.group(1)))
    return sorted(positions)


def _metric_columns(board: TrackBoard) -> list[str]:
    """Every numeric column the report reads for this board's metrics."""
    metrics = [*board.metrics, board.main_metric]
    metrics += [*(board.report_metrics or ()), *(f"accept_rate@{i}" for i in accept_positions(board))]
    metrics = list(dict.fromkeys(metrics))
    return [f"{m}{suffix}" for m in metrics for suffix in CI_SUFFIXES]


def prepared_rows(board: TrackBoard) -> pd.DataFrame:
    """A normalised copy of board.rows with every column the report reads."""
    rows = source(board)
    columns = {}
    for column in TEXT_COLUMNS:
        columns[column] = rows[column].map(fmt.text).tolist() if column in rows else [""] * len(rows)
    for column in (*NUMBER_COLUMNS, *_metric_columns(board)):
        columns[column] = numbers(rows, column)
    return pd.DataFrame(columns)


def rank(board: TrackBoard, rows: pd.DataFrame) -> list[Group]:
    """One ranked frame per (dataset, temperature), best first, undefined last."""
    if rows.empty:
        return []
    main = board.main_metric
    # model/method/cell_id only break ties, so that output is deterministic.
    rows = rows.sort_values(
        [main, "model", "method", "cell_id"],
        ascending=[not board.higher(main), True, True, True],
        na_position="last",
        kind="stable",
    )
    groups = []
    # dropna=False: a missing temperature must not silently drop rows.
    for (dataset, temperature), group in rows.groupby(["dataset", "temperature"], dropna=False, sort=True):
        group = group.reset_index(drop=True)
        defined = group[main].notna().to_numpy()
        # Sorting put every defined value first, so positions are ranks.
        group["rank"] = [str(i + 1) if ok else fmt.UNDEFINED for i, ok in enumerate(defined)]
        groups.append(Group(dataset, float(temperature), group))
    return groups


def prepared_samples(board: TrackBoard) -> pd.DataFrame:
    """cell_id, sample_id (both text, as categoricals) and tau (float) of every sample with a defined tau.

    Ids are compared as text, as cell ids are in the rows. Only the distinct ids
    are converted, so that 100,000s of samples cost little.
    """
    samples = board.samples
    empty = pd.DataFrame(
        {
            "cell_id": pd.Series([], dtype=object),
            "sample_id": pd.Series([], dtype=object),
            "tau": pd.Series([], dtype=float),
        }
    )
    if not isinstance(samples, pd.DataFrame) or samples.empty:
        return empty
    if not {"cell_id", "sample_id", "tau"} <= set(samples.columns):
        return empty
    tau = numbers(samples, "tau")
    keep = ~np.isnan(tau) & samples["cell_id"].notna().to_numpy() & samples["sample_id"].notna().to_numpy()
    if not keep.any():
        return empty
    columns = {}
    for column in ("cell_id", "sample_id"):
        # The whole column at once (fast for the categoricals the decoding track reads), then the kept rows.
        codes, uniques = pd.factorize(samples[column])
        texts = [fmt.text(u) for u in uniques]
        # As categoricals of their texts, so readers group by codes instead of hashing a million strings again.
        columns[column] = (
            pd.Categorical.from_codes(codes[keep], categories=texts)
            if len(set(texts)) == len(texts)
            else np.array(texts, dtype=object)[codes[keep]]
        )
    return pd.DataFrame({**columns, "tau": tau[keep]})


def tau_by_cell(samples: pd.DataFrame) -> dict[str, np.ndarray]:
    """Per-sample tau arrays keyed by cell_id (one sort, no per-cell filtering)."""
    if samples.empty:
        return {}
    codes, cells = pd.factorize(samples["cell_id"])
    order = np.argsort(codes, kind="stable")
    sorted_codes = codes[order]
    taus = samples["tau"].to_numpy()[order]
    bounds = np.flatnonzero(np.diff(sorted_codes)) + 1
    starts = np.r_[0, bounds]
    return {str(cells[sorted_codes[start]]): part for start, part in zip(starts, np.split(taus, bounds))}
