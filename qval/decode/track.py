"""The decoding track: its suite section, how it expands into cells (each policy beside a same-run AR baseline), how
a worker runs a group of cells sharing that baseline, and its board."""

from __future__ import annotations

from itertools import product
from typing import Annotated, Literal

from pydantic import BeforeValidator, Field

from ..cell import Cell, make_cell
from ..fingerprint import hardware_class
from ..registry import REGISTRY
from ..section import PluginRef, PluginRefs, TrackSection, as_refs
from ..tracks import SampleTable, Track
from .tables import DECODE_SAMPLES

BASELINE_POLICY = "ar"


class PolicyRef(PluginRef):
    # A policy that only makes sense for some of the suite's models (a cross-tokenizer drafter for one target, a
    # layer choice for one depth) names them; its cells exist for those models only. None: every model.
    models: list[str] | None = Field(default=None, min_length=1)


class DecodeSection(TrackSection):
    datasets: PluginRefs = Field(min_length=1)
    policies: Annotated[list[PolicyRef], BeforeValidator(as_refs)] = Field(min_length=1)
    max_new_tokens: int = Field(default=128, ge=1, le=1_000_000)
    # At T > 0: "rejection" = the standard min(1, p/q) rule, each cell with its own random stream; "coupled" =
    # position-seeded Gumbel sampling shared by all cells + exact-match verification (token-exact vs AR).
    sampling: Literal["rejection", "coupled"] = "rejection"
    warmup: int = Field(default=1, ge=0, le=100)
    hardware: str = "auto"  # timing depends on it, so it is part of decode cell identity
    # The target's forward pass: "qval" = qval's own over a preallocated cache where it covers the model
    # (models/fast_llama.py: Llama, Mistral, Qwen2; others fall back to transformers'), "transformers" = transformers'
    # forward and DynamicCache (the engine before issue #17). Part of the cell identity: it changes every timing.
    forward: Literal["qval", "transformers"] = "qval"
    metrics: list[str] = Field(default_factory=lambda: ["speedup", "acceptance_length", "lossless"], min_length=1)
    main_metric: str = "speedup"


class DecodeTrack(Track):
    """Decoding policies scored by acceptance length and speedup over a same-run AR baseline on the same engine."""

    title = "Decoding policies (vs same-run AR)"
    position = 20
    Section = DecodeSection
    axes = {"datasets": "datasets", "policies": "policies"}
    tables = (
        SampleTable(
            "decode", "decode_samples", DECODE_SAMPLES, "qval.decode.metrics:VIEW", "turn", ("output_ids",), "turns"
        ),
    )
    timed = True  # decode cells measure time: their shard runs alone
    paired_metric = "acceptance_length_per_sample"
    figures = ("ranking", "temperature", "acceptance", "tau_histogram", "headroom", "speed_quality")
    # Read by the temperature and speed-vs-quality figures and the load flag whether or not the suite lists them.
    report_metrics = ("speedup", "acceptance_length", "load_other_cores", "task_accuracy")

    def grid_size(self, section: DecodeSection, models: int, seeds: int) -> int:
        # Every policy is paired with the AR baseline, which the plan adds when the suite does not list it. An upper
        # bound when a policy names its models: the size check is a guard against runaway grids.
        return models * (len(section.policies) + 1) * len(section.datasets) * len(section.temperatures) * seeds

    def needs_model(self, suite, section: DecodeSection) -> list[str]:
        names = ", ".join(f"'{ref.name}'" for ref in section.policies)
        return [f"decode.policies {names} (decoding verifies against a target model)"]

    def problems(self, suite, section: DecodeSection, metrics):
        return self._model_problems(suite, section) + self._dataset_problems(suite, section)

    def _model_problems(self, suite, section: DecodeSection) -> list[tuple[str, str]]:
        """A policy's ``models`` must name models of the suite."""
        names = [name for name, _ in suite.models]
        problems: list[tuple[str, str]] = []
        for i, ref in enumerate(section.policies):
            unknown = [m for m in ref.models or [] if m not in names]
            if unknown:
                listed = ", ".join(names) or "none"
                problems.append(
                    (
                        f"decode.policies[{i}].models",
                        f"{', '.join(map(repr, unknown))} is not one of the suite's models ({listed}): name a model "
                        "under `models:` or drop it from this policy's `models`",
                    )
                )
            elif ref.models is not None and ref.name == BASELINE_POLICY:
                problems.append((f"decode.policies[{i}].models", "the AR baseline runs for every model"))
        return problems

    def _dataset_problems(self, suite, section: DecodeSection) -> list[tuple[str, str]]:
        """A policy that may not run on a listed dataset (``dataset_problem``: learned-length on the samples its
        selector was trained on) is refused with the suite's other problems."""
        index = {id(ref): i for i, ref in enumerate(section.policies)}
        out = []
        for ref, cls, params in suite.resolved.get("decode.policies", []):
            check = getattr(cls, "dataset_problem", None)
            if check is None:
                continue
            for _, dataset_cls, dataset_params in suite.resolved.get("decode.datasets", []):
                try:
                    reason = check(params, dataset_cls, dataset_params)
                except ValueError as exc:  # e.g. a selector file that vanished after its params were validated
                    reason = str(exc)
                if reason:
                    out.append((f"decode.policies[{index.get(id(ref), '?')}]", reason))
        return out

    def expand(self, suite, section: DecodeSection, limit: int | None) -> list[Cell]:
        settings = {
            "max_new_tokens": section.max_new_tokens,
            "hardware": hardware_class() if section.hardware == "auto" else section.hardware,
            "forward": section.forward,
        }
        if section.sampling != "rejection":  # only when set, so the ids of existing (rejection-sampling) cells stay
            settings["sampling"] = section.sampling
        policies = list(suite.resolved["decode.policies"])
        if not any(getattr(cls, "name", None) == BASELINE_POLICY for _, cls, _ in policies):
            # Speedup always needs the same-run AR baseline: added when the suite does not list it.
            ar_cls = REGISTRY.get("policies", BASELINE_POLICY)
            policies.insert(0, (None, ar_cls, ar_cls.Params()))  # type: ignore[arg-type]  # no suite entry
        cells: list[Cell] = []
        for (mname, src), (_, dcls, dparams), temp, seed in product(
            suite.models, suite.resolved["decode.datasets"], section.temperatures, suite.config.seeds
        ):
            row = [
                make_cell(
                    self.name,
                    mname,
                    src.identity(),
                    pcls,
                    pparams.model_dump(),
                    dcls,
                    dparams.model_dump(),
                    temp,
                    seed,
                    settings,
                    limit,
                )
                for ref, pcls, pparams in policies
                if ref is None or getattr(ref, "models", None) is None or mname in ref.models
            ]
            baseline = next(c for c in row if c.method == BASELINE_POLICY)
            for cell in row:
                if cell is not baseline:
                    cell.baseline_cell_id = baseline.cell_id
            cells += row
        return cells

    def groups(self, cells: list[Cell]) -> list[list[Cell]]:
        """Timed cells run in groups that share an AR baseline, interleaved sample by sample."""
        groups: dict[str, list[Cell]] = {}
        for cell in cells:
            groups.setdefault(cell.baseline_cell_id or cell.cell_id, []).append(cell)
        return list(groups.values())

    def run(self, cells, model, writers, report, section):
        from .task import run_decode_group

        return run_decode_group(cells, model, writers, report, warmup=section.get("warmup", 1))

    def board(self, results, suite, section, rows):
        from .board import sample_summary
        from .captured import CAPTURED, captured_rows
        from .knobs import start_knob_headroom

        # Knob headroom is computed only for the sweeps whose cells changed since the last report into the same
        # folder (knobs.py, through the report's cache), and, in a large report, by a worker process while the
        # report draws its figures (none of which reads it): a deferred part of the board.
        out: dict = {"deferred": {"knob_headroom": start_knob_headroom(results, suite)}}
        out["samples"] = sample_summary(results, suite)
        captured = captured_rows(results, suite)
        if captured:
            out["extras"] = {CAPTURED: captured}
        return out

    def report_tables(self, board, analysis):
        from .report_tables import report_tables

        return report_tables(board, analysis)

    def paired_units(self, results, suite):
        from .board import per_sample_tau, sample_summary

        return per_sample_tau(sample_summary(results, suite))

    def conditions(self, results, suite):
        from .board import cell_conditions

        return cell_conditions(results, suite)
