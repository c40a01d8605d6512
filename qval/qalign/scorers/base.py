"""Base class of scorers. A scorer returns one score per candidate; higher means a better action.

What a score estimates is the scorer's ``signal``: ``"q"`` (the default) a value per (state, action), ``"advantage"``
a value per (state, action) relative to the state (A = Q − V), ``"v"`` one value per state (``StateValueScorer``:
the same value stands on every candidate's row). Metrics compare each signal only with its own reference (Q*, A*,
V*): qval/qalign/signals.py.

A score is a finite float, or ``Failed(reason)`` when the method could not produce one for that candidate (an
unparsable answer, a program that crashed). Failures are stored as NULL scores with the reason, never as zeros.

A scorer is built as ``cls(params, context)``: the ``ScorerContext`` carries everything of its cell it may use (the
environment, the model and its request layer, seed, temperature, gamma). ``build_scorer`` also builds scorers
written before the context, whose ``__init__`` takes ``(params, model, seed, temperature, gamma)``.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from ...errors import QvalError
from ...plugin_base import Plugin
from ..points import EvalPoint

if TYPE_CHECKING:
    from ...models.base import Model
    from ...models.requests import Requests
    from ..envs.base import Environment

Signal = Literal["q", "v", "advantage"]
FAMILIES = ("direct", "code", "intrinsic", "ranking", "self-distillation", "embedding", "other", "baseline")


@dataclass(frozen=True)
class Failed:
    reason: str


class ScoreError(Exception):
    """Raised by a scorer when a whole point cannot be scored; the message is recorded as the point's error."""


@dataclass(frozen=True)
class ScorerContext:
    """What a scorer gets of its cell. ``requests`` is the model's worker-wide request layer unless one is given
    (a benchmark comparing layers); a scorer that needs no model gets ``model=None``."""

    env: Environment | None = None
    model: Model | None = None
    seed: int = 0
    temperature: float = 0.0
    gamma: float = 0.95
    request_layer: Requests | None = None

    @property
    def requests(self) -> Requests:
        if self.request_layer is not None:
            return self.request_layer
        if self.model is None:
            raise QvalError("this scorer calls a model, but its cell has none")
        return self.model.requests()


class Scorer(Plugin):
    # Reports group methods by family; "baseline" is reserved for references (oracle, random, heuristic) that are
    # shown apart, so a scorer that names no family is "other", never a baseline.
    family: ClassVar[str] = "other"
    uses_model: ClassVar[bool] = False  # False: the cell does not depend on the model (one cell, not one per model)
    batch_points: ClassVar[int] = 1  # points handed to score_batch at once (resume granularity too)
    # What the scores estimate (see the module's docstring); it decides which metrics apply to the scorer's cells.
    signal: ClassVar[Signal] = "q"

    def __init__(
        self, params, context: ScorerContext | Any = None, seed: int = 0, temperature: float = 0.0, gamma: float = 0.95
    ):
        """``Scorer(params, context)``. The positional form from before the context, ``Scorer(params, model, seed,
        temperature, gamma)``, still works (its context has no env)."""
        if not isinstance(context, ScorerContext):
            context = ScorerContext(model=context, seed=seed, temperature=temperature, gamma=gamma)
        self.params, self.context = params, context
        self.env, self.model = context.env, context.model
        self.seed, self.temperature, self.gamma = context.seed, context.temperature, context.gamma
        self.artifacts: dict = {}  # what the method produced besides scores (e.g. written programs), kept per cell

    def prepare(self, points: list[EvalPoint]) -> None:
        """Called once per cell with all its points (also on resume) before any scoring."""

    def prepare_work(self) -> int:
        """How many points' time limits ``prepare`` may take: 1 unless it does the work of many (a search)."""
        return 1

    def score(self, point: EvalPoint) -> list[float | Failed]:
        raise NotImplementedError

    def score_batch(self, points: list[EvalPoint]) -> list[list[float | Failed] | BaseException]:
        """Scores of several points; override when a method gains from seeing them together. One point's error
        must not fail the others: return the exception in its place."""
        out: list[list[float | Failed] | BaseException] = []
        for point in points:
            try:
                out.append(self.score(point))
            except Exception as exc:  # noqa: BLE001 - a plugin's error, whatever it is, fails its point only
                out.append(exc)
        return out


class StateValueScorer(Scorer):
    """A scorer of states, not actions (signal "v"): ``value(point)`` is the state's value, and it is stored on every
    candidate's row of the point (one value per state; the rows of a point never disagree)."""

    signal: ClassVar[Signal] = "v"

    def value(self, point: EvalPoint) -> float | Failed:
        raise NotImplementedError

    def score(self, point: EvalPoint) -> list[float | Failed]:
        return [self.value(point)] * len(point.candidates)


def build_scorer(cls: type[Scorer], params, context: ScorerContext) -> Scorer:
    """``cls(params, context)``; a scorer whose ``__init__`` predates the context (its second parameter is
    ``model``) is built the old way and then given the context."""
    if not _takes_model_first(cls):
        return cls(params, context)
    scorer = cls(params, context.model, context.seed, context.temperature, context.gamma)
    scorer.context, scorer.env = context, context.env
    return scorer


def _takes_model_first(cls: type) -> bool:
    try:
        parameters = list(inspect.signature(cls).parameters)
    except (TypeError, ValueError):
        return False
    return len(parameters) > 1 and parameters[1] == "model"
