"""The Q-alignment track: its suite section, how it expands into cells, how a worker runs one, and its board."""

from __future__ import annotations

from itertools import product
from typing import Annotated, Any, Literal

from pydantic import Field, model_validator

from ..cell import Cell, make_cell
from ..section import PluginRefs, Strict, TrackSection
from ..tracks import SampleTable, Track
from .signals import RANKS_ACTIONS, scorer_signal
from .tables import QALIGN_GUIDED, QALIGN_SAMPLES, QALIGN_STATE_VALUES

GUIDED = "qalign_guided"  # the kind of guided-episode cells
QALIGN_ROW_FORMAT = 2  # part of every Q-alignment cell's identity: bump when its rows gain what a metric needs
GUIDED_ROW_FORMAT = 1  # part of every guided cell's identity: bump when its rows change


class PointsConfig(Strict):
    episodes: int = Field(default=10, ge=1, le=100_000)
    epsilon: float = Field(default=0.3, ge=0.0, le=1.0)
    max_points_per_episode: int = Field(default=5, ge=1, le=10_000)
    max_steps: int = Field(default=50, ge=1, le=10_000)
    discard_early: int = Field(default=0, ge=0, le=10_000)  # QVal drops the first and last turns of a trajectory
    discard_late: int = Field(default=0, ge=0, le=10_000)
    max_candidates: int | None = Field(default=None, ge=2, le=1_000)  # None: every legal action is a candidate
    behaviour: Literal["optimal", "llm"] = "optimal"  # llm: the cell's model acts (ε-noisy), as QVal's LLM actors


class ReferenceConfig(Strict):
    method: Literal["exact", "mc"] = "exact"  # mc: Monte-Carlo rollouts of the reference policy
    rollouts: int = Field(default=16, ge=1, le=100_000)
    agg: Literal["mean", "max"] = "max"  # QVal's headline label is the max over rollouts
    max_steps: int = Field(default=200, ge=1, le=100_000)
    policy: Literal["optimal", "llm"] = "optimal"  # who plays the Monte-Carlo rollouts: scripted optimal or the LLM

    @model_validator(mode="after")
    def _llm_needs_mc(self):
        if self.policy == "llm" and self.method != "mc":
            raise ValueError("an LLM reference policy needs Monte-Carlo labels: set method: mc")
        return self


class GuidedConfig(Strict):
    """Scorer-guided episodes (qval/qalign/guided.py), run only when a guided metric is listed."""

    episodes: int = Field(default=20, ge=1, le=100_000)
    max_steps: int | None = Field(default=None, ge=1, le=100_000)  # None: the env's own limit, else points.max_steps
    best_of_n: int | None = Field(default=None, ge=1, le=1_000)  # None: every legal action is a candidate


Agg = Literal["max", "mean"]


def _both_aggs() -> list[Agg]:
    return ["max", "mean"]


class LabelNoiseConfig(Strict):
    """The report's label-noise comparison (qval/qalign/label_noise.py, as `qval label-noise`): the stored scores
    against exact Q* and against QVal-style Monte-Carlo labels. Read by the report only: no cell's id changes."""

    rollouts: list[Annotated[int, Field(ge=1, le=100_000)]] = Field(
        default_factory=lambda: [1, 16], min_length=1, max_length=16
    )
    agg: list[Agg] = Field(default_factory=_both_aggs, min_length=1, max_length=2)
    seed: int = Field(default=0, ge=0, le=2**31 - 1)  # of the rollouts (the labels are stored per seed)
    max_steps: int | None = Field(default=None, ge=1, le=100_000)  # None: reference.max_steps

    @model_validator(mode="after")
    def _counts(self):
        if len(set(self.rollouts)) < len(self.rollouts) or len(set(self.agg)) < len(self.agg):
            raise ValueError("rollouts and agg list each value once")
        return self


class QAlignSection(TrackSection):
    envs: PluginRefs = Field(min_length=1)
    methods: PluginRefs = Field(min_length=1)
    gamma: float = Field(default=0.95, gt=0.0, le=1.0)
    points: PointsConfig = Field(default_factory=PointsConfig)
    reference: ReferenceConfig = Field(default_factory=ReferenceConfig)
    guided: GuidedConfig = Field(default_factory=GuidedConfig)
    label_noise: LabelNoiseConfig | None = None  # off unless set: Monte-Carlo rollouts cost time at report time
    metrics: list[str] = Field(
        default_factory=lambda: [
            "per_state_spearman",
            "pairwise_accuracy",
            "top1",
            "pooled_spearman",
            "pooled_kendall",
        ],
        min_length=1,
    )
    main_metric: str = "per_state_spearman"
    # Seconds one point may take to score: a hung plugin fails that point (recorded), the run goes on.
    timeout_per_point_s: float = Field(default=600.0, gt=0.0, le=86_400.0)


def _lists_guided(section: QAlignSection) -> bool:
    """Whether the section lists a metric of guided episodes (suite validation has loaded every listed one)."""
    from ..errors import PluginError
    from ..registry import REGISTRY

    def kind(name: str) -> str | None:
        try:
            return REGISTRY.get("metrics", name).track
        except PluginError:
            return None

    return any(kind(name) == GUIDED for name in section.metrics)


class QAlignTrack(Track):
    """Scores of (state, action) pairs against reference Q-values, without a training run."""

    title = "Q-alignment (scores vs reference Q)"
    position = 10
    Section = QAlignSection
    axes = {"envs": "envs", "methods": "scorers"}
    tables = (
        SampleTable("qalign", "qalign_samples", QALIGN_SAMPLES, "qval.qalign.metrics:VIEW", "candidate", (), "states"),
        # Imported QVal summaries hold per-state values only: shown on the same board as the computed cells.
        SampleTable("qalign_state", "qalign_state_values", QALIGN_STATE_VALUES, "qval.qalign.metrics:STATE_VIEW"),
        # Scorer-guided episodes: cells of their own, so adding a guided metric to a finished suite scores no point
        # again; the board shows them on their points cell's row (results.leaderboard).
        SampleTable(
            GUIDED, "qalign_guided_episodes", QALIGN_GUIDED, "qval.qalign.guided_metrics:VIEW", "step", (), "rows"
        ),
    )
    paired_metric = "per_state_spearman"
    figures = ("ranking", "family", "heatmap", "usefulness")
    # The usefulness figure and table read these whether or not the suite lists them (absent: nothing drawn).
    report_metrics = ("per_state_spearman", "guided_success", "guided_regret")

    def needs_model(self, suite, section: QAlignSection) -> list[str]:
        classes = {id(ref): cls for ref, cls, _ in suite.resolved.get("qalign.methods", [])}
        needs = [
            f"qalign.methods[{i}] '{ref.name}'"
            for i, ref in enumerate(section.methods)
            if getattr(classes.get(id(ref)), "uses_model", False)
        ]
        if section.points.behaviour == "llm":
            needs.append("qalign.points.behaviour: llm")
        if section.reference.policy == "llm":
            needs.append("qalign.reference.policy: llm")
        return needs

    def problems(self, suite, section: QAlignSection, metrics):
        from .signals import section_problems

        classes = {id(ref): cls for ref, cls, _ in suite.resolved.get("qalign.methods", [])}
        methods = [(i, ref.name, classes[id(ref)]) for i, ref in enumerate(section.methods) if id(ref) in classes]
        return section_problems(methods, metrics, section)

    def expand(self, suite, section: QAlignSection, limit: int | None) -> list[Cell]:
        # rows 2: rows carry is_behaviour (QVal's pooled statistics need it); cells from before are recomputed.
        settings = {
            "gamma": section.gamma,
            "points": section.points.model_dump(),
            "reference": section.reference.model_dump(),
            "rows": QALIGN_ROW_FORMAT,
        }
        # With an LLM actor (behaviour or Monte-Carlo reference), the points themselves depend on the model.
        llm_points = section.points.behaviour == "llm" or section.reference.policy == "llm"
        # No models: every method is model-free (load_suite checked), one cell per grid point all the same.
        models: list[tuple[str | None, Any]] = list(suite.models) or [(None, None)]
        guided = _lists_guided(section)
        guided_settings = {
            "gamma": section.gamma,
            "guided": section.guided.model_dump(),
            # the step limit when neither guided.max_steps nor the env gives one
            "fallback_max_steps": section.points.max_steps,
            "rows": GUIDED_ROW_FORMAT,
        }
        cells = []
        for (mname, src), (_, scls, sparams), (_, ecls, eparams), temp, seed in product(
            models,
            suite.resolved["qalign.methods"],
            suite.resolved["qalign.envs"],
            section.temperatures,
            suite.config.seeds,
        ):
            uses_model = getattr(scls, "uses_model", False) or llm_points
            signal = scorer_signal(scls)
            # A scorer's signal decides which metrics apply to its cell (qalign/signals.py); only a non-Q one is
            # written, so every Q cell keeps the id it had before signals existed.
            own = settings if signal == "q" else {**settings, "signal": signal}
            # Model-free methods (oracle, random) do not depend on the model or on temperature: one cell each.
            cells.append(
                make_cell(
                    self.name,
                    mname if uses_model else None,
                    src.identity() if uses_model and src is not None else None,
                    scls,
                    sparams.model_dump(),
                    ecls,
                    eparams.model_dump(),
                    temp if uses_model else 0.0,
                    seed,
                    own,
                    limit,
                )
            )
            # The episodes depend on the scorer alone (no behaviour policy, no Monte-Carlo labels); a state value
            # cannot choose between actions, so a V scorer has none.
            if guided and signal in RANKS_ACTIONS:
                scorer_model = getattr(scls, "uses_model", False)
                cells.append(
                    make_cell(
                        GUIDED,
                        mname if scorer_model else None,
                        src.identity() if scorer_model and src is not None else None,
                        scls,
                        sparams.model_dump(),
                        ecls,
                        eparams.model_dump(),
                        temp if scorer_model else 0.0,
                        seed,
                        guided_settings,
                        limit,
                    )
                )
        return cells

    def run(self, cells, model, writers, report, section):
        from ..timeouts import PluginTimeout
        from .guided import run_guided_cell
        from .task import run_qalign_cell

        outcomes: dict[str, Any] = {}
        for cell in cells:
            run_cell = run_guided_cell if cell.track == GUIDED else run_qalign_cell
            try:
                outcomes[cell.cell_id] = run_cell(
                    cell, model, writers[cell.cell_id], report, section.get("timeout_per_point_s")
                )
            except (Exception, PluginTimeout) as exc:  # noqa: BLE001 - any plugin error fails this cell only
                outcomes[cell.cell_id] = exc
        return outcomes

    def board(self, results, suite, section, rows):
        from .. import results as R
        from .board import by_state, family_aggregates
        from .label_noise_board import label_noise_doc
        from .model_stability import model_stability
        from .report_tables import LABEL_NOISE, MODEL_STABILITY

        states = by_state(results, suite, section["main_metric"])
        out: dict[str, Any] = {}
        extras: dict[str, Any] = {}
        if states is not None:
            out.update(by_state=states, families=family_aggregates(rows, states, section["main_metric"]))
            # The order of methods across models, by the same per-point values (with their states) as the paired
            # tests.
            extras[MODEL_STABILITY] = model_stability(rows, R.units(results, suite, section["main_metric"]))
        if section.get("label_noise") is not None:  # off by default; results of older suites lack the key
            setting = LabelNoiseConfig.model_validate(section["label_noise"]).model_dump()
            extras[LABEL_NOISE] = label_noise_doc(results, suite, setting, section.get("reference"))
        if extras:
            out["extras"] = extras
        return out

    def report_tables(self, board, analysis):
        from .report_tables import report_tables

        return report_tables(board, analysis)

    def paired_units(self, results, suite):
        from .board import units_by_cell

        return units_by_cell(results, suite, self.paired_metric)
