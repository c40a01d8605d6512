"""Expand a suite into cells (content-hash ids) and group them into shards by model.

A cell's identity is everything that changes its outputs; runtime knobs (workers, output folder) stay out. Each
track expands its own section (qval.tracks.Track.expand); timed cells carry the hardware class in their settings,
because timing is an output of theirs.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .cell import Cell
from .errors import UsageError
from .identity import IDENTITY_VERSION, content_hash
from .suite import Suite

# 2: cells carry ``adaptive`` (Cell.adaptive). A plan of version 1 reads as before (its cells' flag None); an older
# qval refuses a version-2 plan with this message rather than failing on the unknown field.
PLAN_VERSION = 2
_READABLE_PLAN_VERSIONS = (1, 2)


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
        if data.get("plan_version") not in _READABLE_PLAN_VERSIONS:
            raise UsageError(
                f"plan manifest version {data.get('plan_version')} is not supported (expected {PLAN_VERSION}; "
                "a newer qval wrote it?)"
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
    timed: set[str] = set()  # tracks whose cells measure time

    for track, section in suite.sections():
        for cell in track.expand(suite, section, limit):
            cells.setdefault(cell.cell_id, cell)
        if track.timed:
            timed.add(track.name)

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
        shard.exclusive = shard.exclusive or cell.track in timed
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
