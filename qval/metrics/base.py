"""Base class of metrics: one declaration per metric (track, direction, label, what it reads, what n counts,
version) together with how it is computed. The metric stage (``qval/metrics/stage.py``) reads these declarations to
decide what to compute for which cell, and what to recompute when a definition changes."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import ClassVar

import pandas as pd

from ..stats import MetricValue, Resampling, bootstrap_ratios_many


@dataclass(frozen=True)
class ListCount:
    """A view column: per row, how many elements of the list column ``column`` are at least ``at_least`` (NULL for
    a NULL list; NULL elements are not counted), as ``len(list_filter(column, lambda x: x >= at_least))`` would
    give. The metric stage counts every such column of one list in a single numpy pass over the fetched list:
    DuckDB evaluates each lambda over every element (the nine per-position counts of 1,000,000 decoding rows took
    about half of the stage's query)."""

    column: str
    at_least: int


@dataclass(frozen=True)
class MetricView:
    """What a track's metrics read from its sample table: named column expressions (DuckDB SQL over the table, or a
    ``ListCount``), a row filter and a fixed row order (bootstrap CIs resample row positions, so the same rows must
    come in the same order however the table was written)."""

    columns: dict[str, str | ListCount]
    keep: str
    order: str


@dataclass
class Deferred:
    """A metric's value waiting for its ratio bootstraps: ``finish`` turns the answers to ``requests`` (in their
    order) into the value. The metric stage answers the requests of many cells and metrics in one product
    (``stats.bootstrap_ratios_many``); the answers are the same as one request at a time would get."""

    finish: Callable[[list[list[MetricValue]]], MetricValue | dict[str, MetricValue]]
    requests: list[Resampling] = field(default_factory=list)

    def resolve(self) -> MetricValue | dict[str, MetricValue]:
        return self.finish(bootstrap_ratios_many(self.requests))


class Metric:
    name: ClassVar[str] = ""
    track: ClassVar[str] = ""  # the kind of the sample table it reads (qval.tracks.SampleTable.kind)
    higher_is_better: ClassVar[bool] = True
    label: ClassVar[str] = ""  # what the number is, shown once in every report
    needs_baseline: ClassVar[bool] = False  # decode metrics paired with the same-run AR cell
    multi: ClassVar[bool] = (
        False  # compute() returns {name: value} (a family, e.g. per position): figures, not a column
    )
    # Bump when the definition changes: the next ingest recomputes this metric for every finished cell from its
    # stored rows (no sample is recomputed), and leaves every other metric alone.
    version: ClassVar[int] = 1
    # Columns of the track's metric view (``COLUMNS`` in the track's metrics module) this metric reads: the stage
    # loads only the union over the metrics it computes. Empty = every column.
    reads: ClassVar[tuple[str, ...]] = ()
    # Computed for every cell of the track whatever a suite lists, because reports read it (the load flag, the
    # per-position figure).
    always: ClassVar[bool] = False
    # The metric's per-unit values (per evaluation point, clustered by state) are stored in ``metric_units`` so
    # that reports and comparisons pair methods on shared units without recomputing them.
    stores_units: ClassVar[bool] = False
    # The value of no effect (a speedup of 1, a correlation of 0, chance for a pairwise accuracy): figures draw it
    # as a reference line. None: the metric has no such value.
    reference: ClassVar[float | None] = None

    def compute(
        self, samples: pd.DataFrame, baseline: pd.DataFrame | None = None, cell: dict | None = None
    ) -> MetricValue | dict[str, MetricValue]:
        """``samples``: the cell's successful per-sample rows; ``baseline``: the AR cell's, when needed;
        ``cell``: the cell's row (temperature, method, …)."""
        raise NotImplementedError

    def deferred(
        self, samples: pd.DataFrame, baseline: pd.DataFrame | None = None, cell: dict | None = None
    ) -> Deferred:
        """``compute`` split at its ratio bootstraps, so that the stage can answer those of many metrics and cells
        at once. A metric that bootstraps ratios of sums overrides this and makes ``compute`` its ``resolve()``;
        by default the value is computed when finished."""
        return Deferred(lambda _: self.compute(samples, baseline, cell))

    def compute_with_units(
        self, samples: pd.DataFrame, baseline: pd.DataFrame | None = None, cell: dict | None = None
    ) -> tuple[MetricValue | dict[str, MetricValue], pd.DataFrame | None]:
        """The value and, when ``stores_units``, the per-unit values behind it (columns unit, cluster, value)."""
        return self.compute(samples, baseline, cell), None
