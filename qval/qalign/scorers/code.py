"""Code family: the model writes a scoring function once per cell; the harness runs it on every candidate.

The model is asked for ``def score(observation: str, action: str, task: str) -> float`` from the task and one
example state. ``programs`` functions are sampled (seeded); each runs in the sandbox (``qval.sandbox``: separate
process, CPU/memory/time limits, no network, no writes outside a temp dir, no inherited environment). The score
of a candidate is the mean over the programs that returned a number for it (QVal's codegen-avg); ``program: i``
scores with program i alone (QVal's per-sample codegen). The programs are kept as cell artifacts.

Differs from QVal's codegen (label it so when comparing): QVal asks for ``signal_function(state, action,
next_state)``, runs it on the actor's action only, and shows no example state; qval's program sees no next state,
scores every candidate, and is shown one example state and the action list.
"""

from __future__ import annotations

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from ...prompts import load_prompt
from ...sandbox import Limits, Result, run_program
from ..points import EvalPoint
from .base import Failed
from .llm_base import LLMScorer
from .parsing import extract_code


class CodeParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    programs: int = Field(default=4, ge=1, le=64)
    program: int | None = Field(default=None, ge=0)  # score with this program alone
    sample_temperature: float = Field(default=0.7, gt=0.0, le=2.0)
    max_new_tokens: int = Field(default=200, ge=16, le=8192)
    seconds_per_call: float = Field(default=1.0, gt=0.0, le=60.0)
    memory_mb: int = Field(default=512, ge=64, le=16384)


class CodeScorer(LLMScorer):
    """Code family: the model writes ``score(observation, action, task)`` programs once per cell; the sandbox runs them
    on every candidate and averages.

    The model is asked only in ``prepare``: the programs, not the model, score the points. The mean over the
    ``programs`` that returned a number is QVal's codegen-avg; ``program: i`` scores with program i alone (its
    per-sample codegen). Differs from QVal's codegen, whose ``signal_function(state, action, next_state)`` also sees the
    next state, runs on the actor's action only and is shown no example state; qval's sees one example state and its
    action list."""

    name = "codegen"
    family = "code"
    version = "1-v1"
    Params = CodeParams
    batch_points = 32  # one sandbox run scores many points: process start-up is paid per batch, not per call

    def prepare(self, points):
        if self.params.program is not None and self.params.program >= self.params.programs:
            raise ValueError(f"program {self.params.program} does not exist: there are {self.params.programs}")
        example = points[0]
        user = load_prompt("code").format(
            task=example.task,
            observation=example.observation,
            actions=", ".join(repr(c.action) for c in example.candidates),
        )
        prompt = self.llm.chat(user)
        temperature = self.temperature if self.temperature > 0 else self.params.sample_temperature
        replies = self.llm.generate_many(
            [
                (prompt, self.params.max_new_tokens, temperature, self.sample_seed(example, "program", k))
                for k in range(self.params.programs)
            ]
        )
        self.sources = [extract_code(reply) for reply in replies]
        self.artifacts["programs"] = self.sources

    def score_batch(self, points):
        chosen = self.sources if self.params.program is None else [self.sources[self.params.program]]
        return run_programs(chosen, points, self.params.seconds_per_call, self.params.memory_mb)


def run_one(source: str, calls: list[dict], limits: Limits) -> list[Result]:
    """One program's results; should the sandbox's parent side ever raise on what a program sent, that program
    fails alone and the batch's other programs still score."""
    try:
        return run_program(source, calls, limits)
    except Exception as exc:  # noqa: BLE001 - a hostile program must not wipe the other programs' scores
        error = f"crashed: the sandbox could not read this program's results ({type(exc).__name__})"
        return [Result(None, error, "crash")] * len(calls)


def program_results(
    source: str, points: list[EvalPoint], seconds_per_call: float, memory_mb: int
) -> list[list[Result]]:
    """One sandbox run of a program over every candidate of the points: its results per point, per candidate."""
    calls = [{"observation": p.observation, "action": c.action, "task": p.task} for p in points for c in p.candidates]
    limits = Limits(
        cpu_seconds=seconds_per_call * len(calls) + 5,
        memory_mb=memory_mb,
        wall_seconds_per_call=seconds_per_call,
        total_wall_seconds=seconds_per_call * len(calls) + 30,
    )
    flat = run_one(source, calls, limits) if calls else []
    out, i = [], 0
    for p in points:
        out.append(flat[i : i + len(p.candidates)])
        i += len(p.candidates)
    return out


def run_programs(
    sources: list[str], points: list[EvalPoint], seconds_per_call: float, memory_mb: int
) -> list[list[float | Failed]]:
    """Per point, per candidate: the mean over the programs that returned a number for it (QVal's codegen-avg), or
    a Failed naming every program's error."""
    per_program = [program_results(source, points, seconds_per_call, memory_mb) for source in sources]
    out = []
    for k, p in enumerate(points):
        scores: list[float | Failed] = []
        for i in range(len(p.candidates)):
            results = [runs[k][i] for runs in per_program]
            values = [r.value for r in results if r.ok and r.value is not None]
            scores.append(
                float(np.mean(values))
                if values
                else Failed("no program scored it: " + "; ".join(sorted({str(r.error) for r in results}))[:300])
            )
        out.append(scores)
    return out
