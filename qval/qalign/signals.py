"""Which metrics apply to which scorer signal, and the suite check that says so before anything runs.

A scorer's ``signal`` (qval/qalign/scorers/base.py) says what its scores estimate: Q(s, a), an advantage A(s, a) or
a state value V(s). Comparing one with another's reference gives a number that looks valid and is not: a V scorer's
per-state Spearman over candidates is 0 by construction (one value per state), and an advantage's pooled Spearman
against Q* mixes the states' values back in. So each Q-alignment metric declares the signals it accepts
(``signals``); a cell's signal travels in its settings (only when it is not "q", so the ids of Q cells stay what they
were); a metric asked of a cell of another signal is undefined (NULL) there, and a suite in which a metric fits none
of its methods, or a method none of its metrics, is refused with the fix.
"""

from __future__ import annotations

import json
from typing import Any

SIGNALS = ("q", "v", "advantage")
WHAT = {
    "q": "a Q signal (one score per state and action)",
    "v": "a V signal (one value per state)",
    "advantage": "an advantage signal (one score per state and action, relative to the state)",
}
# What to add when a signal has no metric, or a metric no scorer.
METRIC_FOR = {"q": "per_state_spearman", "v": "v_spearman", "advantage": "advantage_spearman"}
SCORER_FOR = {"q": "oracle-q", "v": "oracle-v or direct-value", "advantage": "oracle-advantage"}
# Signals an agent can act on: a Q score or an advantage ranks a state's actions, a state value (one number per
# state) cannot choose between them. Guided episodes (guided.py) run for these scorers only.
RANKS_ACTIONS = ("q", "advantage")


def scorer_signal(cls: Any) -> str:
    return getattr(cls, "signal", "q")


def metric_signals(metric: Any) -> tuple[str, ...]:
    """The signals a metric accepts; a metric that declares none was written for Q scores."""
    return tuple(getattr(metric, "signals", ("q",)))


def cell_settings(cell: dict | None) -> dict:
    """A cell row's settings (the cells table stores its identity as JSON); {} for no cell."""
    if not cell or cell.get("identity") is None:
        return {}
    identity = cell["identity"]
    if isinstance(identity, str):
        identity = json.loads(identity)
    return identity.get("settings") or {}


def cell_signal(cell: dict | None) -> str:
    """The signal of a cell's scorer; a cell without one in its settings (every cell before signals, imported QVal
    cells, a metric called on bare rows) is a Q cell."""
    return cell_settings(cell).get("signal", "q")


def applies(metric: Any, cell: dict | None) -> bool:
    return cell_signal(cell) in metric_signals(metric)


def section_problems(methods: list[tuple[int, str, Any]], metrics: list[tuple[int, str, Any]], section) -> list:
    """(field, reason) for a Q-alignment section whose methods' signals and metrics do not fit: a signal that is not
    one of SIGNALS, a metric that applies to none of the methods, a method that no metric applies to, and a metric
    that needs every legal action as a candidate when ``points.max_candidates`` samples them."""
    problems = []
    signals = {}
    for i, name, cls in methods:
        signal = scorer_signal(cls)
        if signal not in SIGNALS:
            problems.append((f"qalign.methods[{i}]", f"scorer '{name}' declares signal {signal!r}; one of {SIGNALS}"))
        else:
            signals.setdefault(signal, []).append(name)
    if problems or not signals or not metrics:
        return problems
    accepted = set()
    for j, name, metric in metrics:
        fits = metric_signals(metric)
        accepted.update(fits)
        if not any(s in signals for s in fits):
            wants = " or ".join(WHAT[s] for s in fits if s in WHAT)
            have = "; ".join(f"{', '.join(names)}: {WHAT[s]}" for s, names in signals.items())
            add = " or ".join(SCORER_FOR[s] for s in fits if s in SCORER_FOR)
            problems.append(
                (
                    f"qalign.metrics[{j}]",
                    f"metric '{name}' applies to scorers with {wants}, and none of qalign.methods has one ({have}): "
                    f"add a scorer such as {add}, or drop the metric",
                )
            )
        elif getattr(metric, "needs_all_actions", False) and section.points.max_candidates is not None:
            problems.append(
                (
                    "qalign.points.max_candidates",
                    f"metric '{name}' needs V*(s), the best reference Q over every legal action, but max_candidates "
                    "samples the candidates: leave it unset",
                )
            )
    for i, name, cls in methods:
        signal = scorer_signal(cls)
        if signal in SIGNALS and signal not in accepted:
            problems.append(
                (
                    f"qalign.methods[{i}]",
                    f"scorer '{name}' returns {WHAT[signal]}, and none of qalign.metrics applies to it (a Q metric "
                    f"of it would be a wrong number): add {METRIC_FOR[signal]} to qalign.metrics, or drop the method",
                )
            )
    return problems
