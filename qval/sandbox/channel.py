"""The parent's side of the result channel: newline-delimited JSON from the child.

Everything the child sends is hostile input (untrusted code runs in it and may have
replaced ``json.dumps`` or written to the channel's fd itself).  So the bytes are
size-capped in total and per line, every message is validated field by field, calls must
arrive in order, and any violation fails this program only: never an exception in the
parent.  No processes here: :class:`Channel` is fed the bytes the parent read.
"""

from __future__ import annotations

import json
import math
from typing import Any

from .result import Result

#: Bytes allowed per result frame on top of the captured output.
FRAME_OVERHEAD = 4096

_ERROR_KINDS = ("exception", "bad_return", "timeout", "memory", "cpu")
_LOAD_ERROR_KINDS = ("load", "timeout", "memory", "cpu")


class Channel:
    """State of one child's result channel for calls ``start .. start + n - 1``."""

    def __init__(self, start: int, n: int, max_output_bytes: int) -> None:
        self.results: dict[int, Result] = {}
        self.layers: dict[str, bool] = {}
        self.load_error: Result | None = None
        self.loaded = False
        self.done = False
        self.expect = start  # index of the next call the child must answer
        self._end = start + n
        # whole-channel and per-line byte caps: the captured output plus a frame's worth
        # of JSON per call (and some slack for the stage messages)
        self._budget = max_output_bytes + FRAME_OVERHEAD * (n + 4) + 65536
        self._line_cap = max_output_bytes + FRAME_OVERHEAD + 65536
        self._received = 0
        self._buf = bytearray()

    def feed(self, data: bytes) -> tuple[str | None, bool]:
        """Take bytes read from the channel.

        Returns ``(stop, progress)``: ``stop`` is "output" (over a byte cap) or
        "protocol" (an invalid message) when the child must be killed, else None;
        ``progress`` is True when the program finished loading or a call, so the
        per-call deadline starts again.  Nothing is read after ``done``."""
        progress = False
        self._received += len(data)
        if self._received > self._budget:
            return "output", progress
        buf = self._buf
        buf += data
        while True:
            nl = buf.find(b"\n")
            if nl < 0:
                if len(buf) > self._line_cap:
                    return "output", progress
                return None, progress
            line = bytes(buf[:nl])
            del buf[: nl + 1]
            if len(line) > self._line_cap:
                return "output", progress
            # A nesting bomb ('[' * 60000) raises RecursionError, a 500-digit number
            # OverflowError in isfinite(): either is a protocol violation of this program
            # only, never an exception in the parent.
            try:
                msg = json.loads(line)
                status = self._handle(msg)
            except (ValueError, RecursionError, OverflowError, TypeError):
                return "protocol", progress
            if status == "bad":
                return "protocol", progress
            if status == "call":
                self.expect += 1
            if status in ("call", "loading", "ready"):
                progress = True
            if self.done:
                return None, progress

    def _handle(self, msg: Any) -> str:
        """Validate one message and record it; returns its kind or "bad"."""
        if not isinstance(msg, dict):
            return "bad"
        stage = msg.get("stage")
        if stage == "loading":
            layers = msg.get("layers")
            if not isinstance(layers, dict):
                return "bad"
            self.layers = {str(k): bool(v) for k, v in layers.items()}
            return "loading"
        if stage == "ready":
            self.loaded = True
            return "ready"
        if stage == "load_error":
            kind = msg.get("kind")
            e = msg.get("e")
            if kind not in _LOAD_ERROR_KINDS or not isinstance(e, str):
                return "bad"
            self.load_error = Result(None, e[:1000], kind, _str_or_empty(msg.get("o")))
            self.done = True
            return "load_error"
        if stage == "done":
            if self.expect != self._end:
                return "bad"
            self.done = True
            return "done"
        if stage is not None or not self.loaded:
            return "bad"
        i = msg.get("i")
        if type(i) is not int or i != self.expect or self.expect >= self._end:
            return "bad"
        out = _str_or_empty(msg.get("o"))
        if "v" in msg:
            v = msg["v"]
            if type(v) not in (int, float) or not math.isfinite(v):
                return "bad"
            self.results[i] = Result(float(v), None, "ok", out)
        else:
            e, kind = msg.get("e"), msg.get("kind")
            if not isinstance(e, str) or kind not in _ERROR_KINDS:
                return "bad"
            self.results[i] = Result(None, e[:1000], kind, out)
        return "call"


def _str_or_empty(x: object) -> str:
    return x if isinstance(x, str) else ""
