"""The outcome of one ``score(**call)``, and the messages for a child that stopped early."""

from __future__ import annotations

import dataclasses
import math
import signal

from .limits import Limits


@dataclasses.dataclass
class Result:
    """Outcome of one ``score(**call)``.

    ``kind`` is one of: ok, exception, bad_return, timeout, memory, cpu, output,
    crash, load, skipped.
    """

    value: float | None = None
    error: str | None = None
    kind: str = "ok"
    output: str = ""  # captured print() output of this call (truncated)

    @property
    def ok(self) -> bool:
        return self.error is None


def death_result(
    stop_reason: str | None, returncode: int | None, cpu_used: float, stderr: bytes, limits: Limits
) -> Result:
    """Why did the child stop before answering the current call?

    ``stop_reason`` is the parent's own reason for killing it (timeout|total|output|
    protocol) or None when the child died by itself; then its exit status, CPU time
    and stderr tell why."""
    if stop_reason == "timeout":
        return Result(None, f"timeout: call exceeded {limits.wall_seconds_per_call:g}s (killed)", "timeout")
    if stop_reason == "total":
        return Result(None, f"timeout: total wall limit of {limits.total_wall_seconds:g}s exceeded", "timeout")
    if stop_reason == "output":
        return Result(None, f"output limit exceeded (max_output_bytes={limits.max_output_bytes})", "output")
    if stop_reason == "protocol":
        return Result(None, "crashed: invalid message on the result channel", "crash")
    rc = returncode
    if cpu_used >= max(1, math.ceil(limits.cpu_seconds)) - 0.05:
        return Result(None, f"cpu limit exceeded ({limits.cpu_seconds:g}s CPU per process)", "cpu")
    sig = None
    if rc is not None and rc < 0:
        sig = -rc
    elif rc is not None and rc > 128:
        sig = rc - 128  # relayed through the PID-namespace parent
    tail = stderr.decode("utf-8", "replace").strip()[-300:]
    if b"MemoryError" in stderr or b"Cannot allocate memory" in stderr:
        return Result(None, f"memory limit: process died ({tail})", "memory")
    if sig is not None:
        try:
            name = signal.Signals(sig).name
        except ValueError:
            name = str(sig)
        return Result(None, "crashed: killed by {}{}".format(name, (": " + tail) if tail else ""), "crash")
    return Result(None, "crashed: exit code {}{}".format(rc, (": " + tail) if tail else ""), "crash")


def skipped_total(limits: Limits) -> Result:
    return Result(None, f"skipped: total wall limit of {limits.total_wall_seconds:g}s exceeded", "skipped")
