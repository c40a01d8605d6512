"""Eureka: an iterative search over model-written scoring programs, with the model as judge (QVal's ``eureka``).

Each of ``iterations`` rounds, in ``prepare`` (once per cell):

1. the model writes ``candidates`` programs ``score(observation, action, task)`` (sampled, seeded), shown the
   current best program and the judge's feedback from the round before;
2. each program runs in the sandbox (``qval.sandbox``, as ``codegen``) on every candidate of every point; one
   that does not load (syntax error, no ``score``) is rejected and named to the judge with its reason;
3. the model, greedy, judges the loaded programs plus the current best, shuffled and numbered, from their
   predictions only: per program, over every candidate of every point, the count of scores and failures, min,
   max, mean, std and whether the values collapsed to one, and its predictions on ``judge_points`` sampled points (the behaviour's action there). It
   answers ``<winner>``, ``<rationale>`` and ``<feedback>``;
4. the winner becomes the current best; the reflection for the next round is the rationale, the feedback, the
   winner's diagnostics and its first runtime error.

As QVal, a round whose programs all fail to load, or whose judge names no valid winner, ends the search with the
current best; in the first round there is none, and then every candidate of the cell fails with that reason. The
winner's scores are the method's scores. Every round (programs, load errors, statistics, judge reply, winner) is
kept in the cell's artifacts.

Differs from QVal (say so when comparing): the program is qval's ``score(observation, action, task)``, as qval's
``codegen``, where QVal's ``signal_function(state, action, next_state)`` sees the next state and may return named
reward components (shown to the judge); the judge is the scored model itself and its reply is started with
``<winner>`` so that a small model answers in the format (QVal's judge is the run's backbone, thinking, unprimed);
qval's prompts are its own, shorter versions of QVal's sections.
"""

from __future__ import annotations

import math
import random
import re
from dataclasses import dataclass, field

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from ...prompts import load_prompt
from ...sandbox import Result
from .base import Failed
from .code import program_results
from .llm_base import LLMScorer
from .parsing import extract_code

_WINNER = re.compile(r"<winner>\s*(\d+)\s*</winner>", re.I | re.S)


def _tag(text: str, name: str) -> str:
    found = re.search(rf"<{name}>\s*(.*?)\s*</{name}>", text, re.I | re.S)
    return found.group(1).strip() if found else ""


class EurekaParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    iterations: int = Field(default=16, ge=1, le=64)  # QVal's search_iterations
    candidates: int = Field(default=8, ge=1, le=64)  # programs written per iteration (QVal's num_samples)
    judge_points: int = Field(default=8, ge=1, le=64)  # points whose predictions the judge sees (QVal's)
    sample_temperature: float = Field(default=0.7, gt=0.0, le=2.0)  # programs; the judge is greedy, as QVal's
    max_new_tokens: int = Field(default=200, ge=16, le=8192)  # per program
    judge_max_new_tokens: int = Field(default=128, ge=4, le=4096)
    seconds_per_call: float = Field(default=1.0, gt=0.0, le=60.0)
    memory_mb: int = Field(default=512, ge=64, le=16384)


@dataclass
class _Program:
    source: str
    results: list[list[Result]] = field(default_factory=list)  # per point, per candidate
    rejected: str | None = None  # why it did not load

    def values(self) -> list[float]:
        return [r.value for runs in self.results for r in runs if r.ok and r.value is not None]

    def stats(self) -> dict:
        values = self.values()
        total = sum(len(runs) for runs in self.results)
        if not values:
            return {"scores": 0, "failures": total, "min": None, "max": None, "mean": None, "std": None}
        lo, hi = min(values), max(values)
        return {
            "scores": len(values),
            "failures": total - len(values),
            "min": lo,
            "max": hi,
            "mean": float(np.mean(values)),
            "std": float(np.std(values)),
            "collapsed": len(values) > 1 and hi - lo < 1e-9,
        }

    def first_error(self) -> str | None:
        return next((r.error for runs in self.results for r in runs if not r.ok), None)


def _score(result: Result) -> float | Failed:
    if result.ok and result.value is not None and math.isfinite(result.value):
        return float(result.value)
    return Failed(f"the winning program gave no number: {result.error or 'non-finite value'}")


def _number(value) -> str:
    return "n/a" if value is None else f"{value:.6g}"


def _diagnostics(stats: dict) -> str:
    return (
        f"- scores: {stats['scores']}\n- failures: {stats['failures']}\n- min: {_number(stats['min'])}\n"
        f"- max: {_number(stats['max'])}\n- mean: {_number(stats['mean'])}\n- std: {_number(stats['std'])}\n"
        f"- collapsed: {'yes' if stats.get('collapsed') else 'no'}"
    )


class EurekaScorer(LLMScorer):
    """QVal's eureka: ``iterations`` rounds of ``candidates`` model-written ``score(observation, action, task)``
    programs, run in the sandbox on every point and judged by the model (greedy) from their prediction statistics and
    their values on ``judge_points`` sampled points; the judge's winner, its rationale and feedback seed the next
    round, and the last winner scores the cell.

    Defaults are QVal's (16 × 8, 8 judged points); ``{iterations: 2, candidates: 2}`` is a CPU-sized search. A
    search with no loaded program or no valid judge verdict in its first round fails every candidate with that
    reason, as QVal returns NaN. Differs from QVal: qval's program signature (no next state, no reward
    components), the judge is the scored model with its reply started at ``<winner>``, and qval's own prompts."""

    name = "eureka"
    family = "code"
    version = "1-v1"
    Params = EurekaParams
    batch_points = 32  # one sandbox run scores many points, as codegen's
    # What `qval plugins --check eureka` runs: QVal's defaults write 128 programs and ask 16 judge calls, too many for
    # a contract check on a CPU.
    example_params = {"iterations": 2, "candidates": 2, "max_new_tokens": 64, "judge_max_new_tokens": 48}

    def prepare_work(self) -> int:
        """Each program written and each verdict asked may take as long as one point's direct prompt."""
        return self.params.iterations * (self.params.candidates + 1)

    def prepare(self, points):
        self.winner: _Program | None = None
        self.failure = "eureka found no program"
        self.rounds: list[dict] = []
        self.artifacts["iterations"] = self.rounds
        reflection = ""
        for iteration in range(1, self.params.iterations + 1):
            programs = self._write(points, iteration, reflection)
            loaded = [p for p in programs if p.rejected is None]
            record: dict = {
                "iteration": iteration,
                "programs": [{"code": p.source, "rejected": p.rejected} for p in programs],
            }
            self.rounds.append(record)
            if not loaded:
                record["stopped"] = "no program loaded"
                if self.winner is None:
                    self.failure = f"eureka: no program of iteration {iteration} loaded ({programs[0].rejected})"
                break
            verdict = self._judge(points, iteration, loaded, [p for p in programs if p.rejected], record)
            if verdict is None:
                if self.winner is None:
                    self.failure = f"eureka: the judge named no valid winner in iteration {iteration}"
                break
            self.winner, rationale, feedback = verdict
            reflection = self._reflection(self.winner, rationale, feedback)
        self.artifacts["program"] = self.winner.source if self.winner else None
        if self.winner is None:
            self.artifacts["failure"] = self.failure

    def _write(self, points, iteration: int, reflection: str) -> list[_Program]:
        example = points[0]
        incumbent = (
            f"\nThe current best function, from the previous iteration (start from it and improve it):\n"
            f"```python\n{self.winner.source}\n```\n"
            if self.winner
            else ""
        )
        user = load_prompt("eureka_generate").format(
            iteration=iteration,
            iterations=self.params.iterations,
            task=example.task,
            observation=example.observation,
            actions=", ".join(repr(c.action) for c in example.candidates),
            incumbent=incumbent,
            feedback=f"\nThe judge's feedback:\n{reflection}\n" if reflection else "",
        )
        prompt = self.llm.chat(user)
        temperature = self.temperature if self.temperature > 0 else self.params.sample_temperature
        replies = self.llm.generate_many(  # all candidates' programs are written before any runs
            [
                (prompt, self.params.max_new_tokens, temperature, self.sample_seed(example, "eureka", iteration, k))
                for k in range(self.params.candidates)
            ]
        )
        programs = []
        for reply in replies:
            source = extract_code(reply)
            program = _Program(
                source, program_results(source, points, self.params.seconds_per_call, self.params.memory_mb)
            )
            load = next((r for runs in program.results for r in runs if r.kind == "load"), None)
            program.rejected = load.error if load is not None else None
            programs.append(program)
        return programs

    def _judge(self, points, iteration: int, loaded: list[_Program], rejected: list[_Program], record: dict):
        """(winner, rationale, feedback), or None when the reply names no shown program."""
        shown = loaded + ([self.winner] if self.winner else [])
        random.Random(self.sample_seed(points[0], "eureka-order", iteration)).shuffle(shown)
        picked = sorted(
            random.Random(self.sample_seed(points[0], "eureka-points", iteration)).sample(
                range(len(points)), min(self.params.judge_points, len(points))
            )
        )
        summaries = "\n\n".join(f"Candidate {n}\n{_diagnostics(p.stats())}" for n, p in enumerate(shown, 1))
        rejected_text = "".join(
            f"\nRejected candidate {n}: it did not load ({p.rejected})" for n, p in enumerate(rejected, 1)
        )
        blocks = []
        for m, i in enumerate(picked, 1):
            point = points[i]
            # QVal shows the actor's action; a point without one shows its first candidate.
            c = next((j for j, cand in enumerate(point.candidates) if cand.index == point.behaviour_action), 0)
            cand = point.candidates[c]
            lines = [f"Candidate {n}: {self._value(p, i, c)}" for n, p in enumerate(shown, 1)]
            blocks.append(
                f"Point {m}\nState:\n{point.observation}\nAction: {cand.action}\nOutcome: {cand.outcome}\n"
                "Predictions:\n" + "\n".join(lines)
            )
        user = load_prompt("eureka_judge").format(
            gamma=self.gamma,
            task=points[0].task,
            summaries=summaries,
            rejected=rejected_text + "\n" if rejected_text else "",
            points="\n\n".join(blocks),
        )
        start = "<winner>"
        reply = start + self.llm.generate(
            self.llm.chat(user, assistant_start=start),
            self.params.judge_max_new_tokens,
            0.0,
            self.sample_seed(points[0], "eureka-judge", iteration),
        )
        record["candidates"] = [
            {"label": n, "code": p.source, "incumbent": p is self.winner, **p.stats()} for n, p in enumerate(shown, 1)
        ]
        record["judge_reply"] = reply
        found = _WINNER.search(reply)
        label = int(found.group(1)) if found else None
        if label is None or not 1 <= label <= len(shown):
            record["winner"] = None
            record["stopped"] = "the judge named no shown candidate" + (f" ({label})" if label is not None else "")
            return None
        record["winner"] = label
        return shown[label - 1], _tag(reply, "rationale"), _tag(reply, "feedback")

    @staticmethod
    def _value(program: _Program, point: int, candidate: int) -> str:
        result = program.results[point][candidate]
        return _number(result.value) if result.ok else "failed"

    @staticmethod
    def _reflection(winner: _Program, rationale: str, feedback: str) -> str:
        parts = [f"Judge's rationale: {rationale}"] if rationale else []
        parts += [f"Improvement feedback: {feedback}"] if feedback else []
        parts.append("Diagnostics of the current best function:\n" + _diagnostics(winner.stats()))
        if error := winner.first_error():
            parts.append(f"It raised this error on at least one point; fix the cause:\n{error}")
        return "\n\n".join(parts)

    def score_batch(self, points):
        if self.winner is None:
            return [[Failed(self.failure)] * len(p.candidates) for p in points]
        runs = program_results(self.winner.source, points, self.params.seconds_per_call, self.params.memory_mb)
        return [[_score(r) for r in per_point] for per_point in runs]
