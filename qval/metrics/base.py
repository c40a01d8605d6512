"""Base class of metrics: each declares its track, direction and label together with how it is computed."""
from __future__ import annotations

from typing import ClassVar

import pandas as pd

from ..stats import MetricValue


class Metric:
    name: ClassVar[str] = ""
    track: ClassVar[str] = ""  # "qalign" | "decode"
    higher_is_better: ClassVar[bool] = True
    label: ClassVar[str] = ""  # what the number is, shown once in every report
    needs_baseline: ClassVar[bool] = False  # decode metrics paired with the same-run AR cell
    multi: ClassVar[bool] = False  # compute() returns {name: value} (a family, e.g. per position): figures, not a column

    def compute(self, samples: pd.DataFrame, baseline: pd.DataFrame | None = None,
                cell: dict | None = None) -> MetricValue:
        """``samples``: the cell's successful per-sample rows; ``baseline``: the AR cell's, when needed;
        ``cell``: the cell's row (temperature, method, …)."""
        raise NotImplementedError
