"""How busy the machine was while the harness timed something.

A timing taken while other processes compete for the cores measures the competition, not the policy: on a shared
2-core machine the same 64-token decode took 4 s or 74 s. So every timed decode turn records, over exactly its own
timed window, how many cores *other* processes used (machine CPU time minus this process tree's), the share of CPU
time the hypervisor stole, and the 1-minute load average. Reports flag cells timed under load, and ``qval run
--require-idle`` waits for, or refuses, a busy machine before timing.

Other qval workers of the same run count as other processes: they do compete for the cores.
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass

import psutil

from .errors import UsageError

# A turn counts as timed under load when other processes used more than this many cores on average during it, or
# the hypervisor stole more than this share of CPU time. Half a core is far above the background of an idle
# machine (a few hundredths of a core) and far below one competing busy process.
BUSY_OTHER_CORES = 0.5
BUSY_STEAL = 0.05
# Set by `qval run --require-idle` for its workers: seconds a worker may wait for an idle machine.
REQUIRE_IDLE_ENV = "QVAL_REQUIRE_IDLE_S"
RETIMES = 3  # times a worker re-times a turn that ran under load before it gives up on that sample


@dataclass(frozen=True)
class Snapshot:
    wall: float
    busy: float  # machine-wide non-idle CPU seconds (all cores), steal excluded
    steal: float
    total: float  # all CPU seconds of all cores
    own: float  # CPU seconds of this process and its children (threads included)


# CPU counters tick every 10 ms: over a shorter window than this, one reading can be off by more than the busy
# threshold. Shorter windows are recorded (a cell's load is their time-weighted mean) but never judged alone.
MIN_JUDGED_WINDOW_S = 0.25


@dataclass(frozen=True)
class Load:
    other_cores: float  # cores other processes kept busy on average during the window
    steal: float  # share of all CPU time stolen by the hypervisor during the window
    load_avg1: float  # 1-minute load average at the end of the window
    window_s: float = 1.0

    @property
    def busy(self) -> bool:
        if self.window_s < MIN_JUDGED_WINDOW_S:
            return False  # too short to tell: the cell-level mean judges it
        return self.other_cores > BUSY_OTHER_CORES or self.steal > BUSY_STEAL

    def as_row(self) -> dict:
        return {"load_other_cores": self.other_cores, "load_steal": self.steal, "load_avg1": self.load_avg1}


def _own_cpu(proc: psutil.Process) -> float:
    """CPU seconds of this process tree, waited-for children included (a child that exits inside a window would
    otherwise take its lifetime CPU out of "ours" and into "other")."""
    total = 0.0
    for p in [proc, *_children(proc)]:
        try:
            t = p.cpu_times()
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        total += t.user + t.system + getattr(t, "children_user", 0.0) + getattr(t, "children_system", 0.0)
    return total


def _our_cpus() -> list[int] | None:
    """The CPUs this process may run on (a SLURM job or taskset gets a subset): other jobs on other cores do not
    disturb our timings and are not counted."""
    try:
        return sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return None


def _children(proc: psutil.Process) -> list[psutil.Process]:
    try:
        return proc.children(recursive=True)
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return []


def snapshot(proc: psutil.Process | None = None) -> Snapshot:
    per_cpu = psutil.cpu_times(percpu=True)
    cpus = _our_cpus()
    if cpus is not None and all(i < len(per_cpu) for i in cpus):
        per_cpu = [per_cpu[i] for i in cpus]
    busy = steal = total = 0.0
    for times in per_cpu:
        s = getattr(times, "steal", 0.0)
        idle = times.idle + getattr(times, "iowait", 0.0)
        # guest time is already counted in user on Linux; summing the named fields would count it twice.
        t = sum(getattr(times, f) for f in times._fields if f not in ("guest", "guest_nice"))
        busy, steal, total = busy + t - idle - s, steal + s, total + t
    return Snapshot(time.monotonic(), busy, steal, total, _own_cpu(proc or psutil.Process()))


def between(start: Snapshot, end: Snapshot) -> Load:
    wall = max(end.wall - start.wall, 1e-9)
    other = max(0.0, (end.busy - start.busy) - (end.own - start.own)) / wall
    total = end.total - start.total
    steal = (end.steal - start.steal) / total if total > 0 else 0.0
    return Load(round(other, 4), round(max(0.0, steal), 4), round(os.getloadavg()[0], 3), wall)


def measure(seconds: float = 1.0) -> Load:
    """The load over a short window of its own (nothing of ours is running then)."""
    start = snapshot()
    time.sleep(seconds)
    return between(start, snapshot())


def wait_until_idle(timeout_s: float, say=None, window_s: float = 1.0) -> Load:
    """Block until one window shows an idle machine; raise MachineBusy after ``timeout_s`` (0: check once)."""
    say = say or (lambda msg: print(msg, file=sys.stderr, flush=True))
    deadline = time.monotonic() + timeout_s
    told = False
    while True:
        load = measure(window_s)
        if not load.busy:
            if told:
                say(f"machine idle again (other processes {load.other_cores:.2f} cores); timing resumes")
            return load
        if time.monotonic() >= deadline:
            raise MachineBusy(load, timeout_s)
        if not told:
            say(
                f"--require-idle: the machine is busy (other processes use {load.other_cores:.2f} cores, steal "
                f"{load.steal:.0%}, load average {load.load_avg1:.2f}); waiting up to {timeout_s:.0f} s before timing"
            )
            told = True
        time.sleep(min(5.0, max(0.0, deadline - time.monotonic())))


def require_idle_s() -> float | None:
    value = os.environ.get(REQUIRE_IDLE_ENV)
    try:
        return float(value) if value else None
    except ValueError:
        return None


class MachineBusy(UsageError):
    def __init__(self, load: Load, waited: float):
        self.load = load
        super().__init__(
            f"the machine stayed busy for {waited:.0f} s (other processes use {load.other_cores:.2f} cores, steal "
            f"{load.steal:.0%}, load average {load.load_avg1:.2f}); --require-idle refuses to time under load. Stop "
            f"the other work, or raise --idle-timeout"
        )
