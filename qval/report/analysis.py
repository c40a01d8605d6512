"""What a report computes beyond the stored metrics: headroom of per-sample oracles over the best fixed policy,
the paired permutation test between neighbouring ranks, load flags. Pure functions of a board's data; a
BoardAnalysis computes each part once, on first use, and is passed to every writer and figure."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np
import pandas as pd

from ..cell import LOSSY_FAMILY
from ..loadwatch import BUSY_OTHER_CORES
from . import format as fmt
from .model import SuiteReport, TrackBoard
from .prepare import (
    LOAD_METRIC,
    Group,
    numbers,
    prepared_rows,
    prepared_samples,
    rank,
    source,
    tau_by_cell,
)

HEADROOM_COLUMNS = (
    "dataset",
    "temperature",
    "best_fixed_method",
    "best_fixed_tau",
    "oracle_tau",
    "gain",
)
# Families that are not a "fixed policy" when picking the best fixed one.
_NOT_FIXED = ("baseline", "adaptive")
MAX_REASON = 200  # characters of a failure reason shown


@dataclass
class Headroom:
    """Headroom of one (dataset, temperature) group, over the samples every cell ran."""

    group: Group
    best_fixed_method: str
    best_fixed_label: str
    best_fixed_tau: float
    oracle_tau: float
    n_samples: int  # samples present in every cell of the group
    n_cells: int  # cells with samples, over which the oracle takes its maximum
    adaptive: list[tuple[str, float]]  # (label, mean tau) per adaptive cell
    # The model, when the table group holds several: an oracle over policies of different target models would
    # compare outputs of different models, so each model of a group gets its own headroom.
    model: str | None = None

    @property
    def gain(self) -> float:
        return self.oracle_tau - self.best_fixed_tau


def _is_family(family: str, *names: str) -> bool:
    return family.strip().lower() in names


def _codes_in(index: pd.Index, column: pd.Series) -> np.ndarray:
    """Each value's position in ``index`` (-1 where absent); a categorical column looks up its categories only."""
    if isinstance(column.dtype, pd.CategoricalDtype):
        codes = column.cat.codes.to_numpy()
        return np.where(codes >= 0, index.get_indexer(column.cat.categories)[codes], -1)
    return index.get_indexer(column)


def headrooms(groups: list[Group], samples: pd.DataFrame) -> list[Headroom]:
    """Best fixed policy vs per-sample oracle, per (dataset, temperature) group and model.

    Only cells with samples take part, and only samples that every such cell of
    the group ran count, so that all means are over the same samples (and the
    oracle is never below the best fixed policy). A sample repeated within a
    cell counts with its mean tau. The oracle takes the per-sample maximum over
    all of the group's lossless cells (baselines and adaptive policies included, lossy ones not); the
    best fixed policy is the cell with the highest mean tau whose family is
    neither baseline nor adaptive. Groups without such a cell, or without a
    sample common to all cells, have no headroom.
    """
    if samples.empty or not groups:
        return []
    split = _per_model(groups)
    groups, models = [group for group, _ in split], [model for _, model in split]
    # Integer codes throughout: grouping 100,000s of samples by text ids is slow.
    cell_list, group_list = [], []
    for index, group in enumerate(groups):
        # A lossy policy's τ buys other outputs: it takes no part in the oracle or the best fixed policy.
        for cell in dict.fromkeys(group.rows.loc[group.rows["family"] != LOSSY_FAMILY, "cell_id"]):
            cell_list.append(cell)
            group_list.append(index)
    cells = pd.Index(cell_list)
    first = ~cells.duplicated()  # a cell id in two groups (a plugin bug) counts in the first
    cells, group_of_cell = cells[first], np.array(group_list)[first]
    cell_code = _codes_in(cells, samples["cell_id"])
    known = cell_code >= 0
    if not known.any():
        return []
    sample_code = pd.factorize(samples["sample_id"])[0][known]
    frame = pd.DataFrame({"c": cell_code[known], "s": sample_code, "tau": samples["tau"].to_numpy()[known]})
    per = frame.groupby(["c", "s"], sort=False)["tau"].mean().reset_index()
    per["g"] = group_of_cell[per["c"].to_numpy()]
    n_cells = per.groupby("g")["c"].nunique()
    in_cells = per.groupby(["g", "s"], sort=False)["c"].transform("size").to_numpy()
    per = per[in_cells == n_cells.reindex(per["g"]).to_numpy()]
    if per.empty:
        return []
    oracle = per.groupby(["g", "s"], sort=False)["tau"].max().groupby(level="g").agg(["mean", "size"])
    cell_tau = per.groupby("c")["tau"].mean()
    names = cells.tolist()
    tau_of = {
        (int(group_of_cell[code]), names[code]): float(tau)
        for code, tau in zip(cell_tau.index.tolist(), cell_tau.tolist())
    }

    result = []
    for index in sorted(oracle.index):
        group = groups[index]
        with_model = fmt.single_model(group.rows) is None
        labels = dict(zip(group.rows["cell_id"], fmt.bar_labels(group.rows, with_model)))
        best = None
        adaptive = []
        # Ranked rows, so that ties go to the better rank.
        rows = group.rows.drop_duplicates("cell_id")
        for cell, method, family in zip(rows["cell_id"], rows["method"], rows["family"]):
            tau = tau_of.get((index, cell))
            if tau is None:
                continue
            if _is_family(family, "adaptive"):
                adaptive.append((labels[cell], tau))
            elif not _is_family(family, *_NOT_FIXED) and (best is None or tau > best[2]):
                best = (cell, method, tau)
        if best is None:
            continue
        cell, method, tau = best
        result.append(
            Headroom(
                group=group,
                best_fixed_method=method,
                best_fixed_label=labels[cell],
                best_fixed_tau=tau,
                oracle_tau=float(oracle.loc[index, "mean"]),
                n_samples=int(oracle.loc[index, "size"]),
                n_cells=int(n_cells.loc[index]),
                adaptive=adaptive,
                model=models[index],
            )
        )
    return result


def _per_model(groups: list[Group]) -> list[tuple[Group, str | None]]:
    """Each table group, split by model where it holds several (the model then names the part)."""
    out: list[tuple[Group, str | None]] = []
    for group in groups:
        models = list(dict.fromkeys(group.rows["model"])) if "model" in group.rows else []
        if len(models) <= 1:
            out.append((group, None))
            continue
        for model in models:
            rows = group.rows[group.rows["model"] == model]
            out.append((Group(group.dataset, group.temperature, rows), str(model)))
    return out


def headroom_frame(rooms: list[Headroom]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "dataset": [r.group.dataset for r in rooms],
            "temperature": np.array([r.group.temperature for r in rooms], dtype=float),
            "best_fixed_method": [r.best_fixed_method for r in rooms],
            "best_fixed_tau": np.array([r.best_fixed_tau for r in rooms], dtype=float),
            "oracle_tau": np.array([r.oracle_tau for r in rooms], dtype=float),
            "gain": np.array([r.gain for r in rooms], dtype=float),
            "model": [r.model for r in rooms],
        },
        # The model column only where a group held several models (its value is None otherwise).
        columns=list(HEADROOM_COLUMNS) + (["model"] if any(r.model is not None for r in rooms) else []),
    )


def paired_p_values(by_state: dict[str, pd.Series] | None, group: Group) -> list[float | None]:
    """Per ranked row, the sign-flip permutation p-value against the next-ranked row, paired on the states both
    scored; None where either is unranked or unscored, and for the last row."""
    out: list[float | None] = [None] * len(group.rows)
    if by_state is None:
        return out
    from ..stats import paired_permutation_test

    cells, ranks = group.rows["cell_id"].tolist(), group.rows["rank"].tolist()
    for i in range(len(cells) - 1):
        if fmt.UNDEFINED in (ranks[i], ranks[i + 1]):
            continue
        a, b = by_state.get(cells[i]), by_state.get(cells[i + 1])
        if a is None or b is None:
            continue
        shared = a.index.intersection(b.index)
        out[i] = paired_permutation_test(a[shared].to_numpy(), b[shared].to_numpy()) if len(shared) else None
    return out


def under_load(group: Group) -> list[bool]:
    """Per ranked row: whether other processes kept more than BUSY_OTHER_CORES cores busy while it was timed."""
    if LOAD_METRIC not in group.rows:
        return [False] * len(group.rows)
    return [bool(share > BUSY_OTHER_CORES) for share in group.rows[LOAD_METRIC].tolist()]  # NaN: False


def family_rows(families: pd.DataFrame | None) -> list[dict]:
    """Family aggregates in display order (dataset, temperature, best value first), undefined numbers as NaN."""
    if families is None or families.empty:
        return []
    rows = families.sort_values(
        ["dataset", "temperature", "value"], ascending=[True, True, False], na_position="last"
    ).to_dict("records")
    for r in rows:  # undefined parts arrive as None; the formatters read NaN
        for key in ("value", "ci_low", "ci_high", "n", "best_value"):
            r[key] = float("nan") if r[key] is None else float(r[key])
    return rows


def failure_rows(failures: pd.DataFrame | None, rows: pd.DataFrame) -> list[tuple[str, str, str, str, int]]:
    """(model, method, dataset, reason, samples) per listed reason, in leaderboard order."""
    if failures is None or failures.empty:
        return []
    cells = rows.set_index("cell_id")
    out = []
    for record in failures.to_dict("records"):
        if record["cell_id"] not in cells.index:
            continue
        row = cells.loc[record["cell_id"]]
        reason = " ".join(str(record["error"]).split())
        reason = reason if len(reason) <= MAX_REASON else reason[:MAX_REASON] + "…"
        out.append((row["model"], row["method"], row["dataset"], reason, int(record["samples"])))
    return out


class BoardAnalysis:
    """One board's normalised rows, ranked groups, samples and headroom: each computed once, on first use, and
    shared by the tables, both writers and the figures."""

    def __init__(self, board: TrackBoard):
        self.board = board

    @cached_property
    def rows(self) -> pd.DataFrame:
        return prepared_rows(self.board)

    @cached_property
    def groups(self) -> list[Group]:
        return rank(self.board, self.rows)

    @cached_property
    def samples(self) -> pd.DataFrame:
        return prepared_samples(self.board)

    @cached_property
    def taus(self) -> dict[str, np.ndarray]:
        return tau_by_cell(self.samples)

    @cached_property
    def headrooms(self) -> list[Headroom]:
        return headrooms(self.groups, self.samples)

    @cached_property
    def flagged_under_load(self) -> int:
        # Only the one column: the whole board need not be normalised for a count.
        return int((numbers(source(self.board), LOAD_METRIC) > BUSY_OTHER_CORES).sum())


def analyse(report: SuiteReport) -> list[BoardAnalysis]:
    return [BoardAnalysis(board) for board in report.tracks]


def headroom_table(board: TrackBoard) -> pd.DataFrame:
    """Per (dataset, temperature): best fixed policy, per-sample oracle and their gap.

    Columns dataset, temperature, best_fixed_method, best_fixed_tau, oracle_tau
    and gain (= oracle_tau - best_fixed_tau), one row per group with a headroom
    (see headrooms for which samples and cells count); empty without samples.
    """
    return headroom_frame(BoardAnalysis(board).headrooms)
