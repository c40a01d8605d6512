"""A third-party scorer package, as a user would write one."""
import time

from pydantic import BaseModel, ConfigDict

from qval.qalign.scorers.base import Failed, Scorer

MOVES = {"left": (0, -1), "down": (1, 0), "right": (0, 1), "up": (-1, 0)}


class GoalDistanceScorer(Scorer):
    """Heuristic: minus the Manhattan distance to the goal after the move (bottom-right corner)."""

    name = "example-goal-distance"
    family = "baseline"

    def score(self, point):
        rows = [r for r in point.observation.splitlines() if r and set(r) <= set("SFHGA")]
        (r, c) = next((i, row.index("A")) for i, row in enumerate(rows) if "A" in row)
        size = len(rows)
        out = []
        for cand in point.candidates:
            dr, dc = MOVES[cand.action]
            nr, nc = min(max(r + dr, 0), size - 1), min(max(c + dc, 0), size - 1)
            out.append(-float((size - 1 - nr) + (size - 1 - nc)))
        return out


class FlakyScorer(Scorer):
    """Misbehaves on purpose: raises, returns NaN or the wrong shape, or hangs on some points."""

    name = "example-flaky"
    family = "baseline"

    def score(self, point):
        kind = sum(map(ord, point.point_id)) % 5
        if kind == 4:
            while True:  # hangs, and swallows ordinary exceptions on the way
                try:
                    time.sleep(0.01)
                except Exception:
                    pass
        if kind == 0:
            raise RuntimeError("flaky scorer exploded")
        if kind == 1:
            return [float("nan")] * len(point.candidates)
        if kind == 2:
            return [1.0]
        return [c.ref_q for c in point.candidates]


class EchoParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reply: str = ""


class EchoScorer(Scorer):
    """Stands in for a model whose reply cannot be parsed: every candidate fails, quoting the reply (so reports
    must treat failure reasons, and method labels built from params, as untrusted text)."""

    name = "example-echo"
    family = "direct"
    Params = EchoParams

    def score(self, point):
        return [Failed(f"no number in the reply {self.params.reply!r}")] * len(point.candidates)
