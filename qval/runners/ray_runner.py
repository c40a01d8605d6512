"""Ray: one Ray task per shard, each running the ordinary worker subprocess (``python -m qval.worker``).

The task is a thin supervisor: the worker is a child process, so a model engine that crashes or is OOM-killed
never takes the Ray worker down, and the worker never talks to Ray (its environment has no RAY_* variables and
``RAY_ADDRESS=local``, so an engine that uses Ray itself starts a private instance instead of joining this
cluster). A worker killed by a signal fails the task with ``ShardCrashed``, which Ray retries up to
``max_retries`` times; the retry resumes inside its cells because finished samples persist as parts. A worker
that exits with an error status (a plugin failed) is not retried: it would fail again.

Workers write parts, logs and progress lines under the results folder, which must be on a filesystem every node
shares (as with SLURM); this process tails the progress lines and ingests once every task is done.

    qval run suite.yaml --runner ray --runner-opt address=auto --runner-opt num_gpus=1
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sys
import threading
import time
from pathlib import Path

from qval.errors import UsageError
from qval.runners.base import Runner
from qval.runners.local import supervise

TAIL_BYTES = 4000
ATTEMPT_MARK = b"=== qval-ray attempt"


class ShardCrashed(RuntimeError):
    """The worker subprocess died from a signal (OOM killer, segfault, preemption): retryable."""

    def __init__(self, shard: int, returncode: int, tail: str):
        super().__init__(shard, returncode, tail)
        self.shard, self.returncode, self.tail = shard, returncode, tail

    def __str__(self) -> str:
        return f"shard {self.shard}: worker killed by signal {-self.returncode}"


def worker_env(base: dict[str, str], threads: int, gpu_ids: list[str] | None) -> dict[str, str]:
    """The worker's environment: no RAY_* (it must not join this cluster), Ray's GPU assignment kept."""
    env = {k: v for k, v in base.items() if not k.startswith("RAY_")}
    env.update(QVAL_TORCH_THREADS=str(threads), PYTHONUNBUFFERED="1", RAY_ADDRESS="local")
    if not gpu_ids:  # Ray leaves CUDA_VISIBLE_DEVICES alone for a task without GPUs: hide them all
        env["CUDA_VISIBLE_DEVICES"] = ""
    else:
        env["CUDA_VISIBLE_DEVICES"] = ",".join(gpu_ids)
    return env


def run_shard_task(plan_path: str, shard: int, results: str, run_id: str, threads: int) -> dict:
    """Body of the Ray task (runs on a cluster node). Returns the worker's exit status and stderr tail."""
    import ray

    log_dir = Path(results) / "logs" / run_id
    node = socket.gethostname()
    if not Path(plan_path).is_file():
        return {
            "shard": shard,
            "rc": 2,
            "node": node,
            "attempts": 1,
            "tail": f"plan {plan_path} is not visible on node {node}: the results folder must be on a "
            "filesystem shared by every node",
        }
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path, events_path = log_dir / f"shard-{shard}.log", log_dir / f"shard-{shard}.events.jsonl"
    gpu_ids = ray.get_runtime_context().get_accelerator_ids().get("GPU", [])
    env = worker_env(dict(os.environ), threads, gpu_ids)
    with open(log_path, "ab") as log:
        log.write(f"{ATTEMPT_MARK.decode()} on {node} pid {os.getpid()} gpus [{','.join(gpu_ids)}] ===\n".encode())
    # The same supervision as the local runner: events on their own pipe (appended to the events file the driver
    # reads), a capped log, the watchdog, and a worker that dies with this Ray worker (cancel, node drain).
    with open(events_path, "a", encoding="utf-8") as events:

        def record(_index, event):
            events.write(json.dumps(event) + "\n")
            events.flush()

        rc = supervise(
            Runner.worker_command(Path(plan_path), shard, Path(results), run_id),
            env,
            log_path,
            shard,
            record,
            Path(results),
        )
    raw = log_path.read_bytes()
    tail = raw[-TAIL_BYTES:].decode(errors="replace")
    if rc < 0:
        raise ShardCrashed(shard, rc, tail)
    return {"shard": shard, "rc": rc, "node": node, "attempts": raw.count(ATTEMPT_MARK), "tail": tail}


class RayRunner(Runner):
    """Ray: one task per shard, each supervising the ordinary worker subprocess (a crashing engine never takes a Ray
    worker down); timed shards run last.

    Each timed shard holds a whole node's CPUs, so nothing shares its clock. A worker killed by a signal is retried
    (``max_retries``) and resumes inside its cells; one that exits with an error is not. The results folder must be on a
    filesystem every node shares."""

    name = "ray"
    options = {
        "address": str,
        "num_cpus": float,
        "num_gpus": float,
        "exclusive_cpus": float,
        "memory_gb": float,
        "max_retries": int,
    }

    @classmethod
    def parse_options(cls, raw):
        opts = super().parse_options(raw)
        for key in ("num_cpus", "num_gpus", "exclusive_cpus", "memory_gb", "max_retries"):
            if key in opts and opts[key] < 0:
                raise UsageError(f"runner option {key} must be >= 0")
        return opts

    def _address(self) -> str:
        if "address" in self.opts:
            return self.opts["address"]
        return "auto" if os.environ.get("RAY_ADDRESS") else "local"

    def run(self, plan, plan_path, shards, run_id, on_event):
        try:
            import ray
        except ImportError:
            raise UsageError("the ray runner needs ray: pip install 'qval[ray]'") from None
        results, plan_path = self.results.resolve(), Path(plan_path).resolve()  # Ray workers have another cwd
        owns_connection = not ray.is_initialized()
        if owns_connection:
            address = self._address()
            kwargs = {"include_dashboard": False} if address == "local" else {}
            main = threading.current_thread() is threading.main_thread()
            sigterm = signal.getsignal(signal.SIGTERM) if main else None
            ray.init(address=address, log_to_driver=False, logging_level="WARNING", **kwargs)
            if main:  # ray.init installs sys.exit(15) for SIGTERM; keep the CLI's handler (exit 143, same unwinding)
                signal.signal(signal.SIGTERM, sigterm)
        try:
            return self._run(ray, plan, plan_path, results, shards, run_id, on_event)
        finally:
            if owns_connection:
                ray.shutdown()  # with address=local this also stops the instance it started

    def _run(self, ray, plan, plan_path, results, shards, run_id, on_event) -> dict[int, int]:
        (results / "logs" / run_id).mkdir(parents=True, exist_ok=True)
        tails = {i: _EventTail(results / "logs" / run_id / f"shard-{i}.events.jsonl") for i in shards}
        task = ray.remote(run_shard_task)
        common = {
            "num_gpus": self.opts.get("num_gpus", 0),
            "max_retries": self.opts.get("max_retries", 2),
            "retry_exceptions": [ShardCrashed],
        }
        if "memory_gb" in self.opts:
            common["memory"] = int(self.opts["memory_gb"] * 2**30)
        shared_cpus = self.opts.get("num_cpus", 1)
        # Timed shards run after the untimed ones, each holding a whole node's CPUs so nothing shares its clock.
        exclusive_cpus = self.opts.get("exclusive_cpus") or max(
            (n["Resources"].get("CPU", 0) for n in ray.nodes() if n["Alive"]), default=1
        )
        largest = {
            key: max((n["Resources"].get(key, 0) for n in ray.nodes() if n["Alive"]), default=0)
            for key in ("CPU", "GPU")
        }
        for key, wanted in (("CPU", max(shared_cpus, exclusive_cpus)), ("GPU", common["num_gpus"])):
            if wanted > largest[key]:  # Ray would queue the task silently until an autoscaler adds such a node
                print(
                    f"qval: no node of the Ray cluster has {wanted:g} {key}s (largest: {largest[key]:g}); "
                    "shards wait until one joins",
                    file=sys.stderr,
                )
        status: dict[int, int] = {}
        shared = [i for i in shards if not plan.shards[i].exclusive]
        exclusive = [i for i in shards if plan.shards[i].exclusive]
        for batch, cpus in ((shared, shared_cpus), (exclusive, exclusive_cpus)):
            if not batch:
                continue
            threads = max(1, int(cpus))
            refs = {
                task.options(num_cpus=cpus, name=f"qval-{plan.suite}-shard-{i}", **common).remote(
                    str(plan_path), i, str(results), run_id, threads
                ): i
                for i in batch
            }
            self._collect(ray, refs, tails, on_event, status)
        return status

    def _collect(self, ray, refs: dict, tails: dict, on_event, status: dict) -> None:
        pending = list(refs)
        try:
            while pending:
                # Poll, and sleep in Python: a signal that arrives inside ray.wait surfaces as SystemExit(1),
                # which would hide the CLI's exit status (143 on SIGTERM).
                done, pending = ray.wait(pending, num_returns=len(pending), timeout=0)
                if not done:
                    time.sleep(0.5)
                for shard, tail in tails.items():
                    tail.drain(shard, on_event)
                for ref in done:
                    shard = refs[ref]
                    tails[shard].drain(shard, on_event)  # the worker's last lines, before its status
                    status[shard] = self._outcome(ray, ref, shard, on_event, tails[shard].failures > 0)
        finally:
            for ref in pending:  # Ctrl-C or SIGTERM: stop the tasks (Ray kills each worker's process group)
                ray.cancel(ref, force=True)

    @staticmethod
    def _outcome(ray, ref, shard: int, on_event, reported: bool) -> int:
        try:
            result = ray.get(ref)
        except Exception as exc:  # retries exhausted, or the task could not run at all
            cause = getattr(exc, "cause", None) or exc
            tail = getattr(cause, "tail", "")
            error = f"{type(cause).__name__}: {cause}"
            on_event(
                shard,
                {
                    "event": "cell_failed",
                    "cell": f"shard {shard}",
                    "error": (error + ("\n" + tail[-500:] if tail else ""))[:1000],
                },
            )
            return 1
        if result["rc"] != 0 and not reported:  # e.g. the model failed to load: no cell said why, the log does
            on_event(
                shard,
                {
                    "event": "cell_failed",
                    "cell": f"shard {shard}",
                    "error": f"worker exited {result['rc']} on {result['node']}: {result['tail'][-500:]}",
                },
            )
        return result["rc"]


class _EventTail:
    """Progress lines a worker appends to a shared file; read whole lines only, reopening for NFS coherence."""

    def __init__(self, path: Path):
        self.path, self.offset, self.failures = path, 0, 0

    def drain(self, shard: int, on_event) -> None:
        try:
            with open(self.path, "rb") as f:
                f.seek(self.offset)
                chunk = f.read()
        except FileNotFoundError:
            return
        end = chunk.rfind(b"\n") + 1
        self.offset += end
        for line in chunk[:end].splitlines():
            try:
                event = json.loads(line)
            except ValueError:
                continue  # stray output from a library: not an event
            if isinstance(event, dict):
                self.failures += event.get("event") == "cell_failed"
                on_event(shard, event)
