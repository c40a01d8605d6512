"""Local runner (default): worker subprocesses on this machine.

Untimed shards run up to ``workers`` at a time and share the cores; shards with timed (decode) cells then run
one at a time with every core, so no other work distorts their clock.
"""
from __future__ import annotations

import json
import os
import subprocess
import threading
from pathlib import Path

from .base import Runner


class LocalRunner(Runner):
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
        cores = os.cpu_count() or 1
        # With GPUs, never run more workers at once than there are devices: each owns one.
        per_batch = min(self.workers, len([g for g in self.opts.get("gpus", "").split(",") if g.strip()]) or self.workers)
        for batch_start in range(0, len(shared), per_batch):
            batch = shared[batch_start:batch_start + per_batch]
            self._run_batch(batch, plan_path, run_id, log_dir, max(1, cores // len(batch)), on_event, status)
        for index in exclusive:
            self._run_batch([index], plan_path, run_id, log_dir, cores, on_event, status)
        return status

    def _run_batch(self, batch, plan_path, run_id, log_dir: Path, threads, on_event, status) -> None:
        procs, readers = {}, []
        env = {**os.environ, "QVAL_TORCH_THREADS": str(threads), "PYTHONUNBUFFERED": "1"}
        try:
            for slot, index in enumerate(batch):
                log = open(log_dir / f"shard-{index}.log", "ab")
                proc = subprocess.Popen(self.worker_command(plan_path, index, self.results, run_id),
                                        stdout=subprocess.PIPE, stderr=log, env={**env, **self._gpu_env(slot)})
                log.close()  # the child holds its own descriptor
                procs[index] = proc
                reader = threading.Thread(target=_read_events, args=(proc, index, on_event), daemon=True)
                reader.start()
                readers.append(reader)
            for index, proc in procs.items():
                status[index] = proc.wait()
        finally:
            for proc in procs.values():  # Ctrl-C or an error here: never leave orphan workers behind
                if proc.poll() is None:
                    proc.terminate()
                    try:
                        proc.wait(timeout=10)
                    except subprocess.TimeoutExpired:
                        proc.kill()
            for reader in readers:
                reader.join(timeout=5)


def _read_events(proc, index, on_event) -> None:
    for line in proc.stdout:
        try:
            event = json.loads(line)
        except ValueError:
            continue  # stray output from a library: not an event
        if isinstance(event, dict):
            on_event(index, event)
