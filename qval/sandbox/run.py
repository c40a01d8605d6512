"""run_program: all calls of one program through as few children as possible; sandbox_report."""

from __future__ import annotations

import dataclasses
import sys
import time
from typing import Any

from .limits import ALLOWED_MODULES, Limits, check_limits
from .process import ChildRun, want_uid_drop
from .result import Result, death_result, skipped_total

_DEFAULT_LIMITS = Limits()  # frozen: one shared default is safe


def _death(run: ChildRun, limits: Limits) -> Result:
    return death_result(run.stop_reason, run.returncode, run.cpu_used, run.stderr, limits)


def run_program(
    source: str,
    calls: list[dict[str, Any]],
    limits: Limits = _DEFAULT_LIMITS,
    *,
    modules: tuple[str, ...] = ALLOWED_MODULES,
    _audit_hook: bool = True,
    _namespaces: bool = True,
) -> list[Result]:
    """Run ``source`` once in a sandboxed child and return ``score(**call)`` per call.

    Never raises for anything the untrusted program does; every call gets a
    :class:`Result`.  A call that times out / crashes the child costs a fresh child
    for the remaining calls (at most ``limits.max_restarts`` times).
    ``_audit_hook`` / ``_namespaces`` exist only so tests can check the kernel layers
    on their own; leave them on.
    """
    if not isinstance(source, str):
        raise TypeError("source must be str")
    check_limits(limits)
    calls = [dict(c) for c in calls]  # must be JSON-serialisable (TypeError otherwise)
    n = len(calls)
    results: list[Result | None] = [None] * n
    if n == 0:
        return []
    total_deadline = time.monotonic() + limits.total_wall_seconds
    idx = 0
    restarts = 0
    while idx < n:
        if time.monotonic() >= total_deadline:
            for j in range(idx, n):
                results[j] = skipped_total(limits)
            break
        run = ChildRun(source, calls[idx:], idx, limits, total_deadline, modules, _audit_hook, _namespaces)
        chan = run.channel
        for i, r in chan.results.items():
            results[i] = r
        if chan.load_error is not None:
            for j in range(idx, n):
                results[j] = dataclasses.replace(chan.load_error)
            break
        if not chan.loaded:
            if run.stop_reason == "timeout" and chan.layers:
                r = Result(
                    None, f"timeout: loading the program exceeded {limits.wall_seconds_per_call:g}s (killed)", "timeout"
                )
            elif run.stop_reason == "total":
                r = _death(run, limits)
            else:
                r = _death(run, limits)
                r.error = f"load failed: {r.error}"
            for j in range(idx, n):
                results[j] = dataclasses.replace(r)
            break
        nxt = run.next_index
        if nxt >= n:
            break
        last = chan.results.get(nxt - 1)
        if last is not None and last.kind == "cpu":
            # child reported its own CPU exhaustion and exited; continue afresh
            idx = nxt
        else:
            dead = results[nxt] = _death(run, limits)
            idx = nxt + 1
            if dead.kind == "timeout" and run.stop_reason == "total":
                for j in range(idx, n):
                    results[j] = skipped_total(limits)
                break
        restarts += 1
        if idx < n and restarts > limits.max_restarts:
            for j in range(idx, n):
                results[j] = Result(None, f"skipped: child restarted {restarts - 1} times (max_restarts)", "skipped")
            break
    return [r if r is not None else Result(None, "crashed: no result", "crash") for r in results]


_REPORT_CACHE: dict[str, Any] | None = None


def sandbox_report(refresh: bool = False) -> dict[str, Any]:
    """Which defense layers are active on this machine (runs a trivial program)."""
    global _REPORT_CACHE
    if _REPORT_CACHE is not None and not refresh:
        return dict(_REPORT_CACHE)
    src = "def score(observation, action, task):\n    return 1.0\n"
    t0 = time.monotonic()
    drop = want_uid_drop()
    total = time.monotonic() + 30
    run = ChildRun(
        src, [{"observation": "", "action": "", "task": ""}], 0, Limits(), total, ALLOWED_MODULES, True, True
    )
    first = run.channel.results.get(0)
    report: dict[str, Any] = dict(run.channel.layers)
    report["working"] = bool(first and first.value == 1.0)
    report["running_as_root"] = drop
    report["platform"] = sys.platform
    report["python"] = sys.version.split()[0]
    report["startup_plus_one_call_ms"] = round((time.monotonic() - t0) * 1000, 1)
    _REPORT_CACHE = report
    return dict(report)
