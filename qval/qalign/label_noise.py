"""`qval label-noise`: does the method ranking survive QVal-style Monte-Carlo labels?

The scores stay as stored; only the labels change. For each set of stored evaluation points, every method's per-state
Spearman ρ (the track's main metric, ``metrics.per_state_spearman_by_state``) is computed against exact Q* and
against each Monte-Carlo label set (``mc_labels``: N rollouts of the optimal policy, max or mean), over the same
evaluation points. Methods are ordered by their mean ρ under each label set; the agreement of the two orders is
Kendall's τ-b (``method_order``, shared with the report's comparison across models), with a 95% percentile
bootstrap interval that resamples states (``stats.bootstrap_clusters``: each resample recomputes every method's
mean ρ under both label sets, then τ), and the pairs whose order reverses are listed. qval's own statistic: QVal publishes no comparison of method orders across label noise.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from .. import results as R
from ..cell import Cell
from ..errors import UsageError
from ..registry import REGISTRY
from ..stats import N_BOOT
from . import mc_labels, method_order
from .method_order import order_text
from .metrics import per_state_spearman_by_state
from .points import EvalPoint
from .task import _uses_llm_actor, points_paths, stored_points

AGGS = ("max", "mean")
STATISTIC = (
    "Kendall τ-b between the order of methods by mean per-state Spearman ρ under exact Q* labels and under "
    "Monte-Carlo labels, both over the same evaluation points (those where every compared method has a defined ρ "
    "under both); n = evaluation points, 95% percentile bootstrap interval resampling distinct states (every "
    "method's two means recomputed per resample). qval's own statistic: QVal never published one"
)


@dataclass(frozen=True)
class LabelSet:
    rollouts: int
    agg: str

    @property
    def key(self) -> str:
        return f"mc{self.rollouts}-{self.agg}"

    @property
    def title(self) -> str:
        return f"MC {self.rollouts}×{self.agg}"


@dataclass
class Comparison(method_order.OrderAgreement):
    """The agreement of the method orders under exact labels (side A) and under one Monte-Carlo label set (side
    B)."""

    labels: LabelSet | None = None

    def to_json(self) -> dict:
        return {
            "labels": self.labels.key if self.labels else None,
            "rollouts": self.labels.rollouts if self.labels else None,
            "agg": self.labels.agg if self.labels else None,
            **self.summary_json("exact", "mc"),
        }


def compare_orders(
    exact: pd.DataFrame, mc: pd.DataFrame, states: pd.Series, labels: LabelSet, n_boot: int = N_BOOT, seed: int = 0
) -> Comparison:
    """``exact`` and ``mc``: per-point ρ (rows: evaluation points, columns: methods; NaN where undefined);
    ``states``: each point's state (the bootstrap's cluster). The statistic is method_order's, shared with the
    report's comparison across models."""
    r = method_order.compare_orders(
        exact, mc, states, "exact labels", f"{labels.title} labels", "both label sets", n_boot=n_boot, seed=seed
    )
    return Comparison(**vars(r), labels=labels)


class NotRelabellable(UsageError):
    """A set of points whose stored states cannot be restored: left out of the comparison with this reason."""


@dataclass
class Group:
    """The cells that scored one stored set of points, and what labelling those points needs."""

    title: str
    cell: Cell  # any one of them: the points' settings are the same for all
    env_cls: type
    points_name: str
    cells: dict[str, str] = field(default_factory=dict)  # method label → cell id


def _cell(row) -> Cell:
    """The cell as the worker ran it, from its row (the stored identity holds its params and settings)."""
    ident = json.loads(row["identity"])
    return Cell(
        cell_id=row["cell_id"],
        track=row["track"],
        model=row["model"] if isinstance(row["model"], str) else None,
        model_identity=ident.get("model"),
        method=row["method"],
        method_params=ident.get("method_params") or {},
        family=row["family"],
        dataset=row["dataset"],
        dataset_params=ident.get("dataset_params") or {},
        temperature=row["temperature"],
        seed=int(row["seed"]),
        settings=ident["settings"],
    )


def groups(results: Path, suite: str) -> tuple[list[Group], pd.DataFrame]:
    """The suite's Q-alignment cells grouped by the stored points they scored, and their sample rows."""
    if suite not in set(R.suites(results)["suite"]):
        known = ", ".join(R.suites(results)["suite"]) or "none"
        raise UsageError(f"no suite '{suite}' in {results} (suites there: {known}); run `qval run` on it first")
    cells = R.cells(results, suite)
    cells = cells[cells["track"] == "qalign"]
    rows = R.samples(results, "qalign", suite)
    cells = cells[cells["cell_id"].isin(set(rows["cell_id"]))]
    if cells.empty:
        raise UsageError(f"suite '{suite}' has no Q-alignment cells with stored samples in {results}")
    rows = rows.assign(score=rows["score"].where(rows["error"].isna()))  # a failed candidate has no score
    labels = R.method_labels(cells)
    found: dict[str, Group] = {}
    names: dict[str, list[tuple[str, Cell]]] = {}
    for row in cells.to_dict("records"):
        cell = _cell(row)
        env_cls = REGISTRY.get("envs", cell.dataset)  # a changed env version keys other points: not found below
        stem = points_paths(cell, env_cls, results)[-1].stem
        if stem not in found:
            title = f"{row['dataset_label']} · seed {cell.seed}"
            if _uses_llm_actor(cell):
                title += f" · points played by {cell.model}"
            found[stem] = Group(title, cell, env_cls, stem)
        names.setdefault(stem, []).append((labels[cell.cell_id] + (f" · {cell.model}" if cell.model else ""), cell))
    for stem, named in names.items():
        # A method's cells at several temperatures share the points: the temperature, then the id, tells them apart.
        counts = pd.Series([n for n, _ in named]).value_counts()
        for name, cell in named:
            if counts[name] > 1:
                name += f" T={cell.temperature:g}"
            if name in found[stem].cells:
                name += f" [{cell.cell_id[:8]}]"
            found[stem].cells[name] = cell.cell_id
    return list(found.values()), rows


def _points_of(group: Group, results: Path) -> list[EvalPoint]:
    points = stored_points(group.cell, group.env_cls, results)
    if points is None:
        raise UsageError(
            f"the points of {group.title} are not stored under {Path(results) / 'points'} ({group.points_name}.json); "
            "`qval run` on the suite stores them (no cell is recomputed)"
        )
    return points


def _label_frame(points: list[EvalPoint], values: list[list[float]]) -> pd.DataFrame:
    """(sample_id, candidate, ref_q) rows: ``values[i]`` holds one label per candidate of ``points[i]``."""
    return pd.DataFrame(
        [(p.point_id, c.index, float(v)) for p, row in zip(points, values) for c, v in zip(p.candidates, row)],
        columns=["sample_id", "candidate", "ref_q"],
    )


def _rho(rows: pd.DataFrame, labels: pd.DataFrame, points: pd.Index) -> pd.Series:
    """One cell's per-point ρ against ``labels``, on ``points`` (NaN where undefined)."""
    joined = rows[["sample_id", "candidate", "score"]].merge(labels, on=["sample_id", "candidate"], how="left")
    if joined["ref_q"].isna().any():
        missing = joined.loc[joined["ref_q"].isna(), "sample_id"].iloc[0]
        raise UsageError(
            f"cell rows name evaluation point {missing!r}, which the stored points lack: the points file no longer "
            "matches the results; re-run `qval run` on the suite"
        )
    return per_state_spearman_by_state(joined).reindex(points)


def label_noise(
    results: Path, suite: str, label_sets: list[LabelSet], seed: int = 0, max_steps: int | None = None
) -> dict:
    """The whole comparison as one JSON-ready document (``to_markdown`` renders it)."""
    found, rows = groups(results, suite)
    usable = [g for g in found if len(g.cells) >= 2]
    if not usable:
        listed = "; ".join(f"{g.title}: {', '.join(g.cells)}" for g in found)
        raise UsageError(
            f"label-noise compares the order of methods, and suite '{suite}' has fewer than 2 methods on every set "
            f"of points ({listed}); list 2 or more in its qalign.methods and run it"
        )
    out, unlabelled = [], {}
    for group in usable:
        try:
            out.append(_group_doc(group, rows, results, label_sets, seed, max_steps))
        except NotRelabellable as exc:
            unlabelled[group.title] = str(exc)
    skipped = [g.title for g in found if len(g.cells) < 2]
    return {
        "suite": suite,
        "statistic": STATISTIC,
        "reference_policy": "optimal in exact Q*, ε = 0 (per group: how ties between optimal actions go)",
        "label_seed": seed,
        "bootstrap": {"resamples": N_BOOT, "seed": 0, "unit": "state"},
        "groups": out,
        "skipped_groups": skipped,
        "unlabelled_groups": unlabelled,  # group → why its points cannot be relabelled
    }


def _group_doc(
    group: Group, rows: pd.DataFrame, results: Path, label_sets: list[LabelSet], seed: int, max_steps: int | None
) -> dict:
    points = _points_of(group, results)
    env = group.env_cls(group.env_cls.Params.model_validate(group.cell.dataset_params))
    gamma = float(group.cell.settings["gamma"])
    q = env.reference_q(gamma)
    for p in points:  # the points store a state id; relabelling is honest only if it restores that state
        try:  # TextWorld numbers states as a run reaches them: a fresh instance knows none of them (KeyError)
            restored = env.describe(p.state) == p.observation
        except KeyError:
            restored = False
        if not restored:
            raise NotRelabellable(
                f"the stored state of point {p.point_id} does not restore to its observation in a fresh "
                f"{group.cell.dataset}: it cannot be relabelled from stored points"
            )
    steps = max_steps or int(group.cell.settings.get("reference", {}).get("max_steps", 200))
    index = pd.Index([p.point_id for p in points])
    states = pd.Series([str(p.state) for p in points], index=index)
    by_cell = {name: rows[rows["cell_id"] == cid] for name, cid in group.cells.items()}
    exact_labels = _label_frame(points, [[q[p.state][c.index] for c in p.candidates] for p in points])
    exact = pd.DataFrame({name: _rho(r, exact_labels, index) for name, r in by_cell.items()})
    comparisons = []
    policy_name, policy = mc_labels.reference_policy(env, q)
    for rollouts in sorted({ls.rollouts for ls in label_sets}):
        spec = mc_labels.label_spec(group.points_name, gamma, rollouts, steps, seed, policy_name)
        returns = mc_labels.mc_returns(env, q, points, spec, results, policy)
        for ls in (x for x in label_sets if x.rollouts == rollouts):
            values = [[mc_labels.aggregate(r, ls.agg) for r in returns[p.point_id]] for p in points]
            labels = _label_frame(points, values)
            mc = pd.DataFrame({name: _rho(r, labels, index) for name, r in by_cell.items()})
            comparisons.append(compare_orders(exact, mc, states, ls))
    return {
        "group": group.title,
        "points": len(points),
        "states": int(states.nunique()),
        "methods": list(group.cells),
        "suite_labels": group.cell.settings.get("reference", {}).get("method", "exact"),
        "gamma": gamma,
        "rollout_max_steps": steps,
        "reference_policy": policy_name,
        "comparisons": [c.to_json() for c in comparisons],
    }


def _num(x) -> str:
    return "–" if x is None else f"{x:.3f}"


def to_markdown(doc: dict) -> str:
    lines = [f"# Label noise: suite {doc['suite']}", "", doc["statistic"] + ".", ""]
    lines.append(
        f"Monte-Carlo labels as QVal's: restore the state, force the candidate, then follow the reference policy "
        f"(optimal, ε = 0); return Σ γ^t r_t, max or mean over N rollouts (label seed "
        f"{doc['label_seed']}). Bootstrap: {doc['bootstrap']['resamples']} resamples of states."
    )
    for g in doc["groups"]:
        lines += [
            "",
            f"## {g['group']}: {len(g['methods'])} methods, {g['points']} points ({g['states']} states)",
            "",
            f"Rollouts: {g['reference_policy']}, at most {g['rollout_max_steps']} steps, γ = {g['gamma']:g}; the "
            f"suite's own labels: {g['suite_labels']}.",
            "",
            "| labels | n points (states) | Kendall τ-b [95% CI] | flipped pairs (exact order → MC order) | "
            "order by mean ρ, exact | order by mean ρ, MC |",
            "|---|---|---|---|---|---|",
        ]
        notes = []
        for c in g["comparisons"]:
            title = f"MC {c['rollouts']}×{c['agg']}"
            if c["undefined"]:
                tau = f"undefined: {c['undefined']}"
            else:
                tau = f"{_num(c['kendall_tau_b'])} [{_num(c['ci_low'])}, {_num(c['ci_high'])}]"
            flips = "; ".join(f"{f['exact_above']} > {f['mc_above']} → reversed" for f in c["flipped_pairs"])
            exact = order_text(c["mean_rho_exact"]) if c["mean_rho_exact"] else "–"
            mc = order_text(c["mean_rho_mc"]) if c["mean_rho_mc"] else "–"
            lines.append(f"| {title} | {c['n']} ({c['n_states']}) | {tau} | {flips or 'none'} | {exact} | {mc} |")
            for method, why in c["left_out"].items():
                notes.append(f"- {title}: {method} left out ({why})")
            for a, b in c["tie_changes"]:
                notes.append(f"- {title}: {a} and {b} tie under one label set only")
        if notes:
            lines += ["", *notes]
    for title, why in doc["unlabelled_groups"].items():
        lines += ["", f"Left out: {title}: {why}"]
    if doc["skipped_groups"]:
        lines += ["", "Left out (fewer than 2 methods on these points): " + "; ".join(doc["skipped_groups"])]
    return "\n".join(lines) + "\n"
