"""The check against QVal's own numbers: every statistic stored in the summary, recomputed from the imported rows.

Nothing is imported unless all of them match, so qval's tables never hold rows that disagree with what QVal
published.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .recompute import recompute_aggregates, recompute_pointwise, recompute_ranking
from .summary import ERR_ZERO, ImportedSummary, Stored


@dataclass
class CheckReport:
    counts: dict[str, int] = field(default_factory=dict)  # what was compared and matched, by kind
    mismatches: list[str] = field(default_factory=list)

    def ok(self) -> bool:
        return not self.mismatches

    def total(self) -> int:
        return sum(self.counts.values())


def _close(a, b, tol: float) -> bool:
    if a is None or b is None:
        return a is None and b is None
    return abs(a - b) <= tol


def _close_p(a, b) -> bool:
    # p-values span hundreds of orders of magnitude: relative, with an absolute floor for the tiny ones.
    if a is None or b is None:
        return a is None and b is None
    return abs(a - b) <= 1e-9 * max(abs(b), 1e-300) or abs(a - b) <= 1e-15


def check_summary(s: ImportedSummary, tol: float = 1e-9) -> CheckReport:
    """Recompute every stored number from the imported rows and compare."""
    rep = CheckReport(
        {
            "pointwise_correlations": 0,
            "pointwise_p_values": 0,
            "pointwise_num_points": 0,
            "num_dropped_zero": 0,
            "sample_aggregates": 0,
            "averaged_variants": 0,
            "ranking_stats": 0,
        }
    )

    def count(kind: str, good: bool, what: str) -> None:
        if good:
            rep.counts[kind] += 1
        else:
            rep.mismatches.append(what)

    recomputed: dict[tuple[str, str], dict[str, Stored]] = {}
    for e in s.pointwise:
        got = recomputed[(e.estimator, e.method)] = recompute_pointwise(e.rows, s.min_points)
        if e.stored is None:
            continue
        where = f"{e.estimator}/{e.method}"
        for metric, st in e.stored.items():
            if metric not in got:
                rep.mismatches.append(f"{where}: stored metric {metric!r} has no recomputation")
                continue
            g = got[metric]
            count(
                "pointwise_correlations",
                _close(g.correlation, st.correlation, tol),
                f"{where} {metric}: recomputed {g.correlation} vs stored {st.correlation}",
            )
            count(
                "pointwise_p_values",
                _close_p(g.p_value, st.p_value),
                f"{where} {metric} p: recomputed {g.p_value} vs stored {st.p_value}",
            )
            count(
                "pointwise_num_points",
                g.num_points == st.num_points,
                f"{where} {metric} n: recomputed {g.num_points} vs stored {st.num_points}",
            )
        if e.num_dropped_zero is not None:
            dropped = int((e.rows["error"] == ERR_ZERO).sum())
            count(
                "num_dropped_zero",
                dropped == e.num_dropped_zero,
                f"{where} num_dropped_zero: {dropped} vs stored {e.num_dropped_zero}",
            )
    for grp in s.groups:
        aggregates = recompute_aggregates([recomputed[(grp.estimator, m)] for m in grp.members])
        for metric, stats in grp.stored.items():
            for stat, value in stats.items():
                mine = aggregates.get(metric, {}).get(stat)
                good = mine == value if stat.startswith("num_") else _close(mine, value, tol)
                count(
                    "sample_aggregates",
                    good,
                    f"{grp.estimator}/{grp.method} aggregate {metric}.{stat}: {mine} vs stored {value}",
                )
        if not grp.averaged_is_derived:
            count("averaged_variants", True, "")
    for r in s.ranking:
        ranking = recompute_ranking(r.states)
        for stat, value in r.stored.items():
            mine = ranking[stat]
            good = mine == value if stat.startswith("num_") else _close(mine, value, tol)
            count("ranking_stats", good, f"{r.estimator}/{r.method} ranking {stat}: {mine} vs stored {value}")
    return rep
