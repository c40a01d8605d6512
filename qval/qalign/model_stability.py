"""Is the method ranking stable across models? For a suite that runs the same methods on the same environments with
two or more models, per pair of models: Kendall's τ-b between the order of methods by their mean per-state ρ (the
main metric, per evaluation point as the metric stage stored it) under model A and under model B, over the
evaluation points both scored, with a 95% percentile bootstrap interval resampling states, and the pairs of methods
whose order flips (``method_order``, the statistic ``qval label-noise`` uses too).

The points come from the environment's behaviour policy, not from the model, so both models' cells scored the same
states; that is checked, not assumed: a point id that names a different state under the two models (points played by
the model, ``points.behaviour: llm``) makes the pair incomparable. Methods that use no model (oracle-q, random,
heuristic, minilm-similarity: ``Scorer.uses_model`` is False, so the suite runs one cell of each whatever the model
list) are left out of τ: their one cell would sit in both orders, its pairs with the other model-free methods could
never flip, and τ would read more stable than the models are.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from itertools import combinations

import pandas as pd

from .. import results as R
from ..errors import UsageError
from ..stats import N_BOOT
from .method_order import OrderAgreement, compare_orders, order_text

NO_MODEL = "–"  # a board row's model when its cell uses none (results.leaderboard)
STATISTIC = (
    "qval's own statistic (QVal compares no method orders across models): per pair of models, Kendall τ-b between "
    "the order of the methods that use a model by their mean per-state ρ under model A and under model B, over the "
    "evaluation points both models' cells scored (the environment's behaviour policy chose them, so they are the "
    "same states; checked by state id) where every compared method has a defined ρ under both; n = those "
    "evaluation points, 'S states' = the distinct states among them, which the 95% percentile bootstrap resamples "
    "(every method's two means recomputed per resample). Methods that use no model (oracle, random, heuristic, "
    "embeddings) are left out: one cell serves every model, so they would inflate τ."
)


@dataclass
class ModelPair:
    dataset: str
    temperature: float
    seed: int
    model_a: str
    model_b: str
    agreement: OrderAgreement
    no_model: list[str] = field(default_factory=list)  # methods left out: they use no model
    one_model: dict[str, str] = field(default_factory=dict)  # method → the only model it ran under here

    @property
    def left_out(self) -> list[str]:
        """Every method not in τ, with why."""
        out = [f"{m} (uses no model)" for m in self.no_model]
        out += [f"{m} (ran under {model} only)" for m, model in self.one_model.items()]
        return out + [f"{m} ({why})" for m, why in self.agreement.left_out.items()]

    def to_json(self) -> dict:
        a = self.agreement
        return {
            "dataset": self.dataset,
            "temperature": self.temperature,
            "seed": self.seed,
            "model_a": self.model_a,
            "model_b": self.model_b,
            **a.summary_json("a", "b"),
            "left_out": self.left_out,
        }


def _frame(cells: dict[str, str], units: dict[str, pd.DataFrame]) -> tuple[pd.DataFrame, pd.Series]:
    """(per-point values, rows: points, columns: methods; each point's state) of one model's cells."""
    values = {m: units[c].set_index("unit")["value"] for m, c in cells.items() if c in units}
    states = pd.concat([units[c].set_index("unit")["cluster"] for c in cells.values() if c in units])
    states = states[~states.index.duplicated()]
    return pd.DataFrame(values, index=states.index, dtype=float), states


def _pair(
    a_cells: dict[str, str], b_cells: dict[str, str], units: dict[str, pd.DataFrame], a: str, b: str, n_boot: int
) -> OrderAgreement:
    shared = [m for m in a_cells if m in b_cells]
    xa, states_a = _frame({m: a_cells[m] for m in shared}, units)
    xb, states_b = _frame({m: b_cells[m] for m in shared}, units)
    points = states_a.index.intersection(states_b.index)
    if not (states_a[points] == states_b[points]).all():
        return OrderAgreement(
            undefined="the same point ids name different states under the two models (points played by the model, "
            "not by the environment's behaviour policy): no common states to compare on"
        )
    xa, xb = xa.reindex(index=points, columns=shared), xb.reindex(index=points, columns=shared)
    return compare_orders(xa, xb, states_a[points], a, b, "both models", n_boot=n_boot)


def model_stability(rows: pd.DataFrame, units: pd.DataFrame, n_boot: int = N_BOOT) -> list[ModelPair]:
    """Per (environment, seed, temperature) and pair of models (model A the first by name).
    ``rows``: board rows (cell_id, model, method, dataset, temperature, seed); ``units``: the main metric's
    per-point values (cell_id, unit, cluster, value), as ``results.units`` reads them. [] with fewer than 2 models."""
    if rows.empty or units.empty:
        return []
    by_model = rows[rows["model"].notna() & (rows["model"] != NO_MODEL)]
    models = sorted(set(by_model["model"]))  # A before B by name: the same pairs whatever order cells are stored in
    if len(models) < 2:
        return []
    per_cell = {cell: group for cell, group in units.groupby("cell_id", sort=False)}
    out = []
    for (dataset, seed), group in rows.groupby(["dataset", "seed"], sort=False):
        # Model-free cells run at temperature 0 whatever the suite's: they are left out at every temperature.
        no_model = list(dict.fromkeys(group.loc[~group.index.isin(by_model.index), "method"]))
        for temperature, at in by_model[by_model.index.isin(group.index)].groupby("temperature", sort=True):
            cells: dict[str, dict[str, str]] = {m: {} for m in models}
            for model, method, cell in zip(at["model"], at["method"], at["cell_id"]):
                # A method's row without per-point values (a guided cell on a row of its own) never hides its
                # points cell's.
                if cells[model].get(method) not in per_cell:
                    cells[model][method] = cell
            present = [m for m in models if cells[m]]
            for a, b in combinations(present, 2):
                one = {m: a for m in cells[a] if m not in cells[b]} | {m: b for m in cells[b] if m not in cells[a]}
                agreement = _pair(cells[a], cells[b], per_cell, a, b, n_boot)
                out.append(ModelPair(str(dataset), float(temperature), int(seed), a, b, agreement, no_model, one))
    return out


def for_suite(results, suite: str, track: str = "qalign") -> dict:
    """The comparison from stored values (the track's leaderboard rows and its main metric's per-point values), as
    one JSON-ready document (``to_markdown`` renders it)."""
    import json

    from .metrics import BY_STATE

    suites = R.suites(results)
    row = suites[suites["suite"] == suite]
    if row.empty:
        known = ", ".join(suites["suite"]) or "none"
        raise UsageError(f"no suite '{suite}' in {results} (suites there: {known}); run `qval run` on it first")
    section = json.loads(row.iloc[0]["config"]).get(track) or {}
    metric = section.get("main_metric", "per_state_spearman")
    if metric not in BY_STATE:
        raise UsageError(
            f"suite '{suite}' ranks by {metric}, which is not a per-state mean; set qalign.main_metric to one of "
            f"{', '.join(BY_STATE)} to compare method orders across models"
        )
    pairs = model_stability(R.leaderboard(results, suite, track), R.units(results, suite, metric))
    if not pairs:
        raise UsageError(
            f"suite '{suite}' has Q-alignment cells of fewer than 2 models that use one; list 2 or more under its "
            "models: (e.g. [smollm2-135m-instruct, gemma3-270m]) with a method that uses the model, and run it"
        )
    return {
        "suite": suite,
        "metric": metric,
        "statistic": STATISTIC,
        "bootstrap": {"resamples": N_BOOT, "seed": 0, "unit": "state"},
        "pairs": [p.to_json() for p in pairs],
    }


def to_markdown(doc: dict) -> str:
    lines = [f"# Method ranking across models: suite {doc['suite']}", "", doc["statistic"] + ".", ""]
    lines += [
        f"Methods ordered by mean {doc['metric']}. Bootstrap: {doc['bootstrap']['resamples']} resamples of states.",
        "",
        "| environment | T | seed | model A | model B | n points (states) | Kendall τ-b [95% CI] | flipped pairs | "
        "order under A | order under B | left out |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for p in doc["pairs"]:
        if p["undefined"]:
            tau = f"undefined: {p['undefined']}"
        else:
            tau = f"{p['kendall_tau_b']:.3f} [{_num(p['ci_low'])}, {_num(p['ci_high'])}]"
        flips = [f"{f['a_above']} > {f['b_above']} → reversed" for f in p["flipped_pairs"]]
        flips += [f"{a} = {b} under one model only" for a, b in p["tie_changes"]]
        lines.append(
            f"| {p['dataset']} | {p['temperature']:g} | {p['seed']} | {p['model_a']} | {p['model_b']} | {p['n']} "
            f"({p['n_states']}) | {tau} | {'; '.join(flips) or 'none'} | {order_text(p['mean_rho_a'])} | "
            f"{order_text(p['mean_rho_b'])} | {'; '.join(p['left_out']) or 'none'} |"
        )
    return "\n".join(lines) + "\n"


def _num(x: float | None) -> str:
    return "–" if x is None else f"{x:.3f}"


def flips_text(pair: ModelPair) -> str:
    """The pairs whose order reverses, as model A orders them ("x > y → reversed"), then those tied under one only."""
    flips = [f"{x} > {y} → reversed" for x, y in pair.agreement.flips]
    ties = [f"{x} = {y} under one model only" for x, y in pair.agreement.tie_changes]
    return "; ".join(flips + ties) or "none"
