"""Expand a suite into cells (content-hash ids) and group them into shards by model.

A cell's identity is everything that changes its outputs; runtime knobs (workers, output folder) stay out.
Decode cells carry the hardware class, because timing is an output of theirs.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from itertools import product
from pathlib import Path
from typing import Any

from .errors import UsageError
from .fingerprint import hardware_class
from .identity import IDENTITY_VERSION, content_hash
from .suite import Suite

QALIGN_ROW_FORMAT = 2  # part of every Q-alignment cell's identity: bump when its rows gain what a metric needs
PLAN_VERSION = 1
BASELINE_POLICY = "ar"


@dataclass
class Cell:
    cell_id: str
    track: str  # "qalign" | "decode"
    model: str | None  # display name; None for methods that use no model
    model_identity: dict | None
    method: str  # scorer or policy name
    method_params: dict
    family: str
    dataset: str  # env or dataset name
    dataset_params: dict
    temperature: float | None  # None only for imported cells whose source recorded none
    seed: int | None
    settings: dict  # track-level knobs that change outputs
    baseline_cell_id: str | None = None

    dataset_label: str = ""  # display only: the name plus its non-default params (and the limit, if any)

    @property
    def limit(self) -> int | None:
        """At most this many samples (points, prompts), the first ones in the dataset's order; None: all."""
        return self.settings.get("limit")


def _label(name: str, params: dict, defaults: dict) -> str:
    """``frozenlake(map=8x8)``: non-default params only, so two configurations stay apart without noise."""

    def show(v):
        return "+".join(map(str, v)) if isinstance(v, (list, tuple)) else str(v)

    shown = {k: v for k, v in sorted(params.items()) if defaults.get(k, object()) != v}
    return name + ("(" + ",".join(f"{k}={show(v)}" for k, v in shown.items()) + ")" if shown else "")


@dataclass
class Shard:
    index: int
    model: str | None
    model_source: dict | None  # {"source": name, "params": {...}} to rebuild the ModelSource in a worker
    exclusive: bool  # timed cells: run alone so other work does not distort the clock
    cell_ids: list[str] = field(default_factory=list)


@dataclass
class Plan:
    plan_id: str
    suite: str
    suite_path: str
    suite_sha: str
    description: str
    config: dict
    cells: dict[str, Cell]
    shards: list[Shard]

    def to_json(self) -> dict:
        return {
            "plan_version": PLAN_VERSION,
            "identity_version": IDENTITY_VERSION,
            "plan_id": self.plan_id,
            "suite": self.suite,
            "suite_path": self.suite_path,
            "suite_sha": self.suite_sha,
            "description": self.description,
            "config": self.config,
            "cells": [asdict(c) for c in self.cells.values()],
            "shards": [asdict(s) for s in self.shards],
        }

    @classmethod
    def from_json(cls, data: dict) -> Plan:
        if data.get("plan_version") != PLAN_VERSION:
            raise UsageError(
                f"plan manifest version {data.get('plan_version')} is not supported (expected {PLAN_VERSION})"
            )
        cells = {c["cell_id"]: Cell(**c) for c in data["cells"]}
        shards = [Shard(**s) for s in data["shards"]]
        return cls(
            data["plan_id"],
            data["suite"],
            data["suite_path"],
            data["suite_sha"],
            data["description"],
            data["config"],
            cells,
            shards,
        )

    def write(self, results: Path) -> Path:
        """Write the manifest durably (fsync, then rename) with the next sequence number of the folder: the plan
        written last defines a suite's cells, whatever the files' clocks say."""
        path = Path(results) / "plans" / f"{self.plan_id}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        data = {
            **self.to_json(),
            "sequence": 1 + max((plan_sequence(p) for p in path.parent.glob("*.json")), default=0),
        }
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        try:
            with open(tmp, "w") as f:
                f.write(json.dumps(data, indent=1))
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return path

    @classmethod
    def read(cls, path: Path) -> Plan:
        try:
            return cls.from_json(json.loads(Path(path).read_text()))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise UsageError(f"cannot read plan manifest {path}: {exc}") from None


def plan_sequence(path: Path) -> int:
    """The sequence number a plan manifest was written with (0 for unreadable manifests and those from before
    sequences were recorded)."""
    try:
        value = json.loads(Path(path).read_text()).get("sequence", 0)
        return int(value) if isinstance(value, int) else 0
    except (OSError, ValueError, AttributeError):
        return 0


def make_cell(
    track: str,
    model: str | None,
    model_identity: dict | None,
    method_cls,
    method_params,
    dataset_cls,
    dataset_params,
    temperature: float,
    seed: int,
    settings: dict,
    limit: int | None = None,
) -> Cell:
    """The one place a sample limit (`qval run --limit N`) enters a cell: its settings, so its id differs from the
    full cell's (a first look is never taken for the full result, nor the full run for done), and its label, so
    every table says so. Unlimited cells carry no key, so their ids are unchanged."""
    if limit is not None:
        settings = {**settings, "limit": limit}
    identity = {
        "v": IDENTITY_VERSION,
        "track": track,
        "model": model_identity,
        "method": {"name": method_cls.name, "version": method_cls.version, "params": method_params},
        "dataset": {"name": dataset_cls.name, "version": dataset_cls.version, "params": dataset_params},
        "temperature": temperature,
        "seed": seed,
        "settings": settings,
    }
    return Cell(
        cell_id=content_hash(identity),
        track=track,
        model=model,
        model_identity=model_identity,
        method=method_cls.name,
        method_params=method_params,
        family=getattr(method_cls, "family", "policy"),
        dataset=dataset_cls.name,
        dataset_params=dataset_params,
        temperature=temperature,
        seed=seed,
        settings=settings,
        dataset_label=_label(dataset_cls.name, dataset_params, dataset_cls.Params().model_dump())
        + (f" limit={limit}" if limit is not None else ""),
    )


def check_limit(limit) -> int | None:
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise UsageError(f"--limit must be a whole number >= 1 (samples per cell), got {limit!r}")
    return limit


def build_plan(suite: Suite, limit: int | None = None) -> Plan:
    """The suite's cells; ``limit`` caps the samples of every cell (Q-alignment points, decoding prompts)."""
    check_limit(limit)
    cfg = suite.config
    cells: dict[str, Cell] = {}
    model_sources = {name: src for name, src in suite.models}
    # No models: every method is model-free (load_suite checked), one cell per grid point all the same.
    models: list[tuple[str | None, Any]] = list(suite.models) or [(None, None)]

    if cfg.qalign is not None:
        q = cfg.qalign
        # rows 2: rows carry is_behaviour (QVal's pooled statistics need it); cells from before are recomputed.
        settings = {
            "gamma": q.gamma,
            "points": q.points.model_dump(),
            "reference": q.reference.model_dump(),
            "rows": QALIGN_ROW_FORMAT,
        }
        # With an LLM actor (behaviour or Monte-Carlo reference), the points themselves depend on the model.
        llm_points = q.points.behaviour == "llm" or q.reference.policy == "llm"
        for (mname, src), (_, scls, sparams), (_, ecls, eparams), temp, seed in product(
            models,
            suite.resolved["qalign.methods"],
            suite.resolved["qalign.envs"],
            q.temperatures,
            cfg.seeds,
        ):
            uses_model = getattr(scls, "uses_model", False) or llm_points
            # Model-free methods (oracle, random) do not depend on the model or on temperature: one cell each.
            cell = make_cell(
                "qalign",
                mname if uses_model else None,
                src.identity() if uses_model and src is not None else None,
                scls,
                sparams.model_dump(),
                ecls,
                eparams.model_dump(),
                temp if uses_model else 0.0,
                seed,
                settings,
                limit,
            )
            cells.setdefault(cell.cell_id, cell)

    if cfg.decode is not None:
        d = cfg.decode
        settings = {
            "max_new_tokens": d.max_new_tokens,
            "hardware": hardware_class() if d.hardware == "auto" else d.hardware,
        }
        if d.sampling != "rejection":  # only when set, so the ids of existing (rejection-sampling) cells stay
            settings["sampling"] = d.sampling
        from .registry import REGISTRY

        policies = list(suite.resolved["decode.policies"])
        if not any(getattr(cls, "name", None) == BASELINE_POLICY for _, cls, _ in policies):
            ar_cls = REGISTRY.get("policies", BASELINE_POLICY)
            policies.insert(0, (None, ar_cls, ar_cls.Params()))  # type: ignore[arg-type]  # no suite entry: AR added  # speedup always needs the same-run AR baseline
        for (mname, src), (_, dcls, dparams), temp, seed in product(
            suite.models, suite.resolved["decode.datasets"], d.temperatures, cfg.seeds
        ):
            row = [
                make_cell(
                    "decode",
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
                for _, pcls, pparams in policies
            ]
            baseline = next(c for c in row if c.method == BASELINE_POLICY)
            for cell in row:
                if cell is not baseline:
                    cell.baseline_cell_id = baseline.cell_id
                cells.setdefault(cell.cell_id, cell)

    shards: dict[str | None, Shard] = {}
    for cell in cells.values():
        shard = shards.get(cell.model)
        if shard is None:
            src = model_sources.get(cell.model) if cell.model else None
            shard = Shard(
                len(shards), cell.model, {"source": src.name, "params": src.params.model_dump()} if src else None, False
            )
            shards[cell.model] = shard
        shard.cell_ids.append(cell.cell_id)
        shard.exclusive = shard.exclusive or cell.track == "decode"
    plan_id = content_hash({"suite": suite.name, "cells": sorted(cells)}, length=12)
    config = cfg.model_dump(mode="json")
    if limit is not None:
        config["limit"] = limit  # recorded with the suite, beside the per-cell labels
    return Plan(
        plan_id,
        suite.name,
        str(suite.path),
        suite.sha,
        cfg.description,
        config,
        cells,
        list(shards.values()),
    )
