"""Local runner (default): worker subprocesses on this machine.

Untimed shards run up to ``workers`` at a time and share the cores; shards with timed (decode) cells then run
one at a time with every core, so no other work distorts their clock.

Each worker is supervised: its progress events travel on a pipe of their own (a plugin that prints cannot forge
or block them), its output is pumped into a size-capped, rotated log, it dies with this process (PR_SET_PDEATHSIG),
a watchdog kills it when a Q-alignment point runs past its time limit without progress (a C call that SIGALRM
cannot interrupt, a plugin that disabled SIGALRM), and whatever processes it started are ended with it.
"""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil

from .. import orphans
from ..store.parts import FAILED, cell_dir, write_json_atomic
from .base import Runner

LOG_CAP_BYTES = int(os.environ.get("QVAL_LOG_CAP_BYTES", str(16 * 2**20)))  # per shard log; one rotation kept
# Seconds past a point's own time limit before the watchdog acts (the in-process SIGALRM limit goes first).
WATCHDOG_GRACE_S = float(os.environ.get("QVAL_WATCHDOG_GRACE_S", "60"))
WATCHDOG_EXIT = 1  # the exit status reported for a worker the watchdog killed


class LocalRunner(Runner):
    """The default runner: supervised worker subprocesses on this machine, untimed shards ``workers`` at a time, then
    each timed shard alone with every core.

    ``gpus=0,1`` gives each worker one device through ``CUDA_VISIBLE_DEVICES``, and never more workers at once than
    devices."""

    name = "local"
    options = {"gpus": str}  # e.g. gpus=0,1: each worker gets one device via CUDA_VISIBLE_DEVICES

    def _gpu_env(self, slot: int) -> dict:
        gpus = [g for g in self.opts.get("gpus", "").split(",") if g.strip()]
        return {"CUDA_VISIBLE_DEVICES": gpus[slot % len(gpus)].strip()} if gpus else {}

    def run(self, plan, plan_path, shards, run_id, on_event):
        log_dir = self.results / "logs" / run_id
        log_dir.mkdir(parents=True, exist_ok=True)
        shared = [i for i in shards if not plan.shards[i].exclusive]
        exclusive = [i for i in shards if plan.shards[i].exclusive]
        status: dict[int, int] = {}
        # The CPUs this process may run on (taskset, a cgroup cpuset), not the machine's: the workers' torch threads,
        # and the vLLM engine's (vllm_source.worker_threads), are split from these.
        cores = len(os.sched_getaffinity(0)) or 1
        # With GPUs, never run more workers at once than there are devices: each owns one.
        gpus = [g for g in self.opts.get("gpus", "").split(",") if g.strip()]
        per_batch = min(self.workers, len(gpus) or self.workers)
        for batch_start in range(0, len(shared), per_batch):
            batch = shared[batch_start : batch_start + per_batch]
            self._run_batch(batch, plan_path, run_id, log_dir, max(1, cores // len(batch)), on_event, status)
        for index in exclusive:
            self._run_batch([index], plan_path, run_id, log_dir, cores, on_event, status)
        return status

    def _run_batch(self, batch, plan_path, run_id, log_dir: Path, threads, on_event, status) -> None:
        workers: dict[int, _Supervised] = {}
        env = {**os.environ, "QVAL_TORCH_THREADS": str(threads), "PYTHONUNBUFFERED": "1", "QVAL_RUN_ID": run_id}
        try:
            for slot, index in enumerate(batch):
                workers[index] = _Supervised(
                    self.worker_command(plan_path, index, self.results, run_id),
                    {**env, **self._gpu_env(slot)},
                    log_dir / f"shard-{index}.log",
                    index,
                    on_event,
                )
            while workers.keys() - status.keys():
                for index, worker in workers.items():
                    if index not in status:
                        code = worker.step(self.results)
                        if code is not None:
                            status[index] = code
                time.sleep(0.2)
        finally:
            for worker in workers.values():  # Ctrl-C or an error here: never leave orphan workers behind
                worker.stop()


def supervise(command: list[str], env: dict, log_path: Path, index: int, on_event, results: Path) -> int:
    """Run one worker under supervision until it exits (the Ray runner's task body uses this)."""
    worker = _Supervised(command, env, log_path, index, on_event)
    try:
        while True:
            code = worker.step(results)
            if code is not None:
                return code
            time.sleep(0.2)
    finally:
        worker.stop()


class _Supervised:
    """One worker process with its event pipe, its log pump and its watchdog clock."""

    def __init__(self, command: list[str], env: dict, log_path: Path, index: int, on_event):
        self.index, self.on_event = index, on_event
        self.current_cell: str | None = None
        self.limit_s: float | None = None  # the running Q-alignment cell's time per batch of points
        self.last_progress = time.monotonic()
        read_events, write_events = os.pipe()
        read_log, write_log = os.pipe()
        orphans.ready()
        try:
            # Before exec, the kernel is told to kill the worker when this `qval run` dies (kill -9, SIGHUP), so no
            # orphaned worker goes on writing samples that a re-run also writes.
            self.proc = subprocess.Popen(
                command,
                stdout=write_log,
                stderr=write_log,
                stdin=subprocess.DEVNULL,
                pass_fds=(write_events,),
                env={**env, "QVAL_EVENT_FD": str(write_events)},
                preexec_fn=functools.partial(orphans.die_with_parent, os.getpid()),
            )
        finally:
            os.close(write_events)  # the child holds its own copies; EOF when it (and its children) exit
            os.close(write_log)
        self.ps = _process(self.proc.pid)
        self.threads = [
            threading.Thread(
                target=self._read_events,
                args=(os.fdopen(read_events, "r", encoding="utf-8", errors="replace"),),
                daemon=True,
            ),
            threading.Thread(target=_pump_log, args=(os.fdopen(read_log, "rb", buffering=0), log_path), daemon=True),
        ]
        for thread in self.threads:
            thread.start()

    def _read_events(self, stream) -> None:
        """Drain the event pipe to its end whatever arrives: a malformed event is dropped, never the reader."""
        with stream:
            for line in stream:
                try:
                    event = json.loads(line)
                except ValueError:
                    continue
                if not isinstance(event, dict):
                    continue
                self._progress(event)
                try:
                    self.on_event(self.index, event)
                except Exception as exc:  # noqa: BLE001 - a bad event must not stop the draining
                    print(f"qval: ignored a malformed worker event ({type(exc).__name__}: {exc})", file=sys.stderr)

    def _progress(self, event: dict) -> None:
        self.last_progress = time.monotonic()
        kind = event.get("event")
        if kind == "cell_start":
            self.current_cell = event.get("cell") if isinstance(event.get("cell"), str) else None
            limit = event.get("limit_s")
            self.limit_s = float(limit) if isinstance(limit, (int, float)) and limit > 0 else None
        elif kind in ("cell_done", "cell_failed"):
            self.current_cell, self.limit_s = None, None

    def step(self, results: Path) -> int | None:
        """One supervision step: the exit status once the worker has ended (its leftovers ended too), else None;
        a worker past its watchdog limit is killed here and its cell failed with the reason."""
        code = self.poll()
        if code is None and self.overdue():
            self.watchdog_kill(results)
            code = self.poll(wait=10)
            if code is not None:
                code = WATCHDOG_EXIT  # a failure, not a crash to retry: a retry would hang on the same point
        if code is not None:
            self.finish()
        return code

    def watchdog_kill(self, results: Path) -> None:
        cell, limit = self.current_cell, self.limit_s or 0.0
        reason = (
            f"killed by the watchdog: no progress for {limit + WATCHDOG_GRACE_S:.0f} s on cell {cell} (its "
            f"per-point time limit is {limit:g} s; a plugin stuck in a C call or one that disabled SIGALRM)"
        )
        self.kill_tree()
        if cell:
            try:  # the cell fails with the reason; a re-run retries it, its finished samples kept
                write_json_atomic(cell_dir(results, cell) / FAILED, {"cell_id": cell, "error": reason})
            except (OSError, ValueError):
                pass
            self.on_event(self.index, {"event": "cell_failed", "cell": cell, "error": reason})
        self.on_event(self.index, {"event": "worker_failed", "error": reason})

    def overdue(self) -> bool:
        return self.limit_s is not None and time.monotonic() - self.last_progress > self.limit_s + WATCHDOG_GRACE_S

    def poll(self, wait: float = 0.0) -> int | None:
        try:
            return self.proc.wait(timeout=wait) if wait else self.proc.poll()
        except subprocess.TimeoutExpired:
            return None

    def descendants(self) -> list[psutil.Process]:
        if self.ps is None:
            return []
        try:
            return self.ps.children(recursive=True)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            return []

    def kill_tree(self) -> None:
        _signal([*self.descendants(), *([self.ps] if self.ps else [])], "kill")

    def finish(self) -> None:
        """After the worker exits: end what it left running (a child it started with setsid keeps the event and log
        pipes open otherwise), then let the readers drain."""
        _signal(_orphans_of_run(self.proc.pid), "kill")
        for thread in self.threads:
            thread.join(timeout=5)

    def stop(self) -> None:
        if self.proc.poll() is None:
            _signal(self.descendants(), "terminate")
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill_tree()
                self.proc.wait(timeout=10)
        self.finish()


def _signal(processes: list[psutil.Process], how: str) -> None:
    """kill() or terminate() each process; one that is already gone (or not ours) is skipped."""
    for p in processes:
        try:
            getattr(p, how)()
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass


def _process(pid: int) -> psutil.Process | None:
    try:
        return psutil.Process(pid)
    except psutil.NoSuchProcess:
        return None


def _orphans_of_run(worker_pid: int) -> list[psutil.Process]:
    """Processes a finished worker left behind: they carry the environment marker the worker sets for what it starts
    (``QVAL_WORKER_PID``, see ``qval.worker.main``) although their parent is gone (reparented to init)."""
    out = []
    marker = str(worker_pid)
    for p in psutil.process_iter(["pid"]):
        try:
            if p.pid != worker_pid and p.environ().get("QVAL_WORKER_PID") == marker:
                out.append(p)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess, OSError):
            continue
    return out


def _pump_log(stream, path: Path) -> None:
    """Copy the worker's output into its shard log, capped at LOG_CAP_BYTES: past the cap the log is rotated once
    (``.1`` keeps the previous part), so a plugin that floods stderr never fills the disk."""
    out = open(path, "ab")
    try:
        with stream:
            while True:
                chunk = stream.read(65536)
                if not chunk:
                    break
                if out.tell() + len(chunk) > LOG_CAP_BYTES:
                    out.close()
                    os.replace(path, path.with_name(path.name + ".1"))
                    out = open(path, "ab")
                    out.write(b"[qval: log rotated: the earlier part is in " + path.name.encode() + b".1]\n")
                out.write(chunk)
                out.flush()
    finally:
        out.close()
