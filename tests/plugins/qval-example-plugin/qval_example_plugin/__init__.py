"""A third-party scorer package, as a user would write one."""

import time

from pydantic import BaseModel, ConfigDict

from qval.models import transcript
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


class TranscriptScorer(Scorer):
    """Stands in for a model-calling scorer that asks the model while preparing its cell (as codegen writes its
    programs there) and scores two points per call, with no model loaded: it records its "requests" where a request
    layer would (qval.models.transcript), so the transcripts' bookkeeping is tested in seconds."""

    name = "example-transcript"
    family = "other"
    batch_points = 2

    def prepare(self, points):
        transcript.note_request(
            "generate", lambda: f"write a scorer for {len(points)} points", lambda: "def score", False
        )

    def score_batch(self, points):
        ids = " ".join(p.point_id for p in points)
        transcript.note_request("generate", lambda: f"score points {ids}", lambda: "the reference Q", False)
        return [[c.ref_q for c in p.candidates] for p in points]


class HostileParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    mode: str = "fine"


class _NeverFloat:
    def __float__(self):
        while True:
            pass


class _RaisingFloat:
    def __float__(self):
        raise RuntimeError("my __float__ raised")

    def __repr__(self):
        raise RuntimeError("my __repr__ raised")


class HostileScorer(Scorer):
    """One misbehaviour per ``mode``, for the reliability tests: each must fail only what it touches (a point, a
    cell), never hang the run, crash the runner or leave a process behind."""

    name = "example-hostile"
    family = "baseline"
    Params = HostileParams

    def score(self, point):
        import json
        import os
        import signal
        import subprocess
        import sys

        mode, n = self.params.mode, len(point.candidates)
        first = point.point_id == getattr(self, "_first", point.point_id)
        self._first = getattr(self, "_first", point.point_id)
        if mode == "print-event":  # forged progress events on stdout, then a flood of lines
            for _ in range(2000):
                print(json.dumps({"event": "cell_start", "cell": None, "total": "many", "done": []}), flush=True)
        elif mode == "c-call":  # one long C call: SIGALRM cannot interrupt it
            sum(range(10**14))
        elif mode == "no-alarm":  # a plugin that disables the time limit, then hangs
            signal.signal(signal.SIGALRM, signal.SIG_IGN)
            while True:
                pass
        elif mode == "never-float":
            return [_NeverFloat()] * n
        elif mode == "raising-float":
            return [_RaisingFloat()] * n
        elif mode == "huge":
            return [10**400] * n
        elif mode == "setsid-child" and first:  # a child in its own session that would outlive the run
            subprocess.Popen(
                [sys.executable, "-c", "import time; time.sleep(300)"],
                start_new_session=True,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        elif mode == "spam":  # floods the shard log
            chunk = "x" * 1023 + "\n"
            for _ in range(4096):
                sys.stderr.write(chunk)
        elif mode == "mutate":  # changes the reference Q it was given, then scores with it
            for c in point.candidates:
                object.__setattr__(c, "ref_q", float(c.index))
            return [float(c.index) for c in point.candidates]
        elif mode == "exit" and not first:  # the worker process ends mid-cell, reporting success
            os._exit(0)
        elif mode == "slow":  # deterministic and slow: the chaos test kills runs while it scores
            import time

            time.sleep(0.04)
            return [c.ref_q * 0.5 + 0.01 * c.index for c in point.candidates]
        return [c.ref_q for c in point.candidates]
