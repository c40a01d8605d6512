"""The `rollout` track: episodes of a uniformly random agent in qval's environments, scored by return and success.

Everything qval needs from a track is here: the suite section, how it expands into cells, how a worker runs them,
and the sample table the rows go to. Its metrics are in metrics.py.
"""

from __future__ import annotations

from itertools import product

import numpy as np
import pyarrow as pa
from pydantic import BaseModel, Field

from qval.cell import make_cell
from qval.registry import REGISTRY
from qval.section import PluginRefs, TrackSection
from qval.tracks import SampleTable, Track

ROWS = pa.schema(
    [
        ("cell_id", pa.string()),
        ("sample_id", pa.string()),  # one episode
        ("steps", pa.int32()),
        ("discounted_return", pa.float64()),
        ("success", pa.bool_()),
        ("error", pa.string()),
    ]
)


class RolloutSection(TrackSection):
    envs: PluginRefs = Field(min_length=1)
    episodes: int = Field(default=8, ge=1, le=10_000)
    max_steps: int = Field(default=100, ge=1, le=100_000)
    gamma: float = Field(default=0.95, gt=0.0, le=1.0)
    metrics: list[str] = Field(default_factory=lambda: ["mean_return", "success_rate"], min_length=1)
    main_metric: str = "mean_return"


class UniformRandomActor:
    """The agent of every rollout cell: a uniformly random legal action at each step."""

    name = "uniform-random"
    version = 1
    family = "baseline"

    class Params(BaseModel):
        pass


class RolloutTrack(Track):
    """Returns of a uniformly random agent: a yardstick for guided agents, and the example of a third track."""

    title = "Random rollouts (return and success of a uniformly random agent)"
    position = 30
    Section = RolloutSection
    axes = {"envs": "envs"}
    tables = (SampleTable("rollout", "rollout_samples", ROWS, "qval_example_track.metrics:VIEW"),)

    def expand(self, suite, section: RolloutSection, limit):
        settings = {"episodes": section.episodes, "max_steps": section.max_steps, "gamma": section.gamma}
        return [
            make_cell(
                self.name, None, None, UniformRandomActor, {}, env_cls, params.model_dump(), temp, seed, settings, limit
            )
            for (_, env_cls, params), temp, seed in product(
                suite.resolved["rollout.envs"], section.temperatures, suite.config.seeds
            )
        ]

    def run(self, cells, model, writers, report, section):
        return {cell.cell_id: _run_cell(cell, writers[cell.cell_id], report) for cell in cells}


def _run_cell(cell, writer, report):
    env_cls = REGISTRY.get("envs", cell.dataset)
    env = env_cls(env_cls.Params.model_validate(cell.dataset_params))
    settings = cell.settings
    episodes = min(settings["episodes"], cell.limit or settings["episodes"])
    done = writer.done_sample_ids()
    report("cell_start", cell=cell.cell_id, total=episodes, done=len(done))
    for episode in range(episodes):
        sample_id = f"episode-{episode:05d}"
        if sample_id in done:
            continue
        rng = np.random.default_rng([cell.seed or 0, episode])  # each episode its own stream: resumable
        state, total, discount, steps, success = env.reset(rng), 0.0, 1.0, 0, False
        while steps < settings["max_steps"]:
            action = int(rng.integers(len(env.actions(state))))
            state, reward, terminal = env.step(state, action, rng)
            total += discount * reward
            discount *= settings["gamma"]
            steps += 1
            if terminal:
                success = reward > 0
                break
        writer.add_sample(
            [
                {
                    "cell_id": cell.cell_id,
                    "sample_id": sample_id,
                    "steps": steps,
                    "discounted_return": total,
                    "success": success,
                    "error": None,
                }
            ]
        )
        report("sample", cell=cell.cell_id)
    return episodes, 0
