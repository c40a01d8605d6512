"""SLURM through submitit: one job array per plan, one array element per shard.

Preempted or timed-out elements are requeued (submitit's checkpoint protocol) and resume inside their cells,
since a shard skips finished samples. ``cluster=local`` runs the same code path in local subprocesses (CI).
Workers write parts only; this process ingests once the array is done.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import UsageError
from .base import Runner


class ShardJob:
    """The callable each array element runs. Picklable; ``checkpoint`` makes it requeueable."""

    def __init__(self, plan_path: Path, results: Path, run_id: str):
        self.plan_path, self.results, self.run_id = Path(plan_path), Path(results), run_id

    def __call__(self, shard: int) -> int:
        from ..plan import Plan
        from ..worker import run_shard

        return run_shard(Plan.read(self.plan_path), shard, self.results, self.run_id)

    def checkpoint(self, shard: int):
        import submitit

        return submitit.helpers.DelayedSubmission(self, shard)  # requeue; the shard resumes where it stopped


def make_executor(folder: Path, opts: dict, job_name: str):
    try:
        import submitit
    except ImportError:
        raise UsageError("the submitit runner needs submitit: pip install 'qval[slurm]'") from None
    cluster = opts.get("cluster", "slurm")
    executor = submitit.AutoExecutor(folder=folder, cluster=cluster)
    params = {
        "timeout_min": opts.get("timeout_min", 240),
        "name": job_name,
        "cpus_per_task": opts.get("cpus_per_shard", 8),
    }
    if cluster == "slurm":
        params.update(
            slurm_array_parallelism=opts.get("array_parallelism", 16), slurm_additional_parameters={"requeue": True}
        )
        if "partition" in opts:
            params["slurm_partition"] = opts["partition"]
        if opts.get("gpus_per_shard", 0):
            params["gpus_per_node"] = opts["gpus_per_shard"]
        if "mem_gb" in opts:
            params["mem_gb"] = opts["mem_gb"]
    executor.update_parameters(**params)
    return executor


class SubmititRunner(Runner):
    """SLURM through submitit: one job array per plan, one element per shard, requeued on preemption or timeout and
    resuming inside its cells.

    ``cluster=local`` runs the same code path in local subprocesses, without SLURM (what CI tests)."""

    name = "submitit"
    options = {
        "cluster": str,
        "partition": str,
        "gpus_per_shard": int,
        "cpus_per_shard": int,
        "timeout_min": int,
        "array_parallelism": int,
        "mem_gb": int,
    }

    def run(self, plan, plan_path, shards, run_id, on_event):
        if self.opts.get("cluster", "slurm") not in ("slurm", "local", "debug"):
            raise UsageError("runner option cluster must be slurm, local or debug")
        executor = make_executor(self.results / "submitit" / run_id, self.opts, f"qval-{plan.suite}")
        jobs = executor.map_array(ShardJob(plan_path, self.results, run_id), shards)
        status = {}
        for shard, job in zip(shards, jobs):
            try:
                status[shard] = int(job.result() or 0)
            except Exception as exc:  # a failed or cancelled element: reported, the others are still collected
                status[shard] = 1
                on_event(shard, {"event": "cell_failed", "cell": f"shard {shard}", "error": str(exc)[:500]})
                continue
            for cell_id in plan.shards[shard].cell_ids:
                on_event(shard, {"event": "cell_done", "cell": cell_id})
        return status
