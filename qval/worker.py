"""A worker runs one shard of a plan: it loads the shard's model once and runs its cells.

Workers never open the database. They write Parquet parts and DONE/FAILED manifests, and report progress as JSON
lines on stdout (the runner's channel); logs go to stderr.

    python -m qval.worker --plan RESULTS/plans/ID.json --shard I --results RESULTS --run-id R
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
import traceback
from datetime import datetime, timezone
from pathlib import Path

from .fingerprint import fingerprint
from .plan import Plan
from .registry import REGISTRY
from .store.parts import PartWriter, is_done


def emit(event: str, **fields) -> None:
    print(json.dumps({"event": event, **fields}), flush=True)


def load_model(shard):
    if shard.model_source is None:
        return None
    source_cls = REGISTRY.get("models", shard.model_source["source"])
    return source_cls(source_cls.Params.model_validate(shard.model_source["params"])).load()


def run_shard(plan: Plan, shard_index: int, results: Path, run_id: str) -> int:
    from .decode.task import run_decode_cell
    from .qalign.task import run_qalign_cell

    shard = plan.shards[shard_index]
    todo = [plan.cells[c] for c in shard.cell_ids if not is_done(results, c)]
    if not todo:
        return 0
    fp = fingerprint()
    warmup = (plan.config.get("decode") or {}).get("warmup", 1)
    model = load_model(shard)  # once per shard
    errors = 0
    for cell in todo:
        writer = PartWriter(results, cell.cell_id, cell.track)
        started = time.time()
        manifest = {"cell_id": cell.cell_id, "run_id": run_id, "plan_id": plan.plan_id, "hardware": fp["hardware"],
                    "started_at": datetime.now(timezone.utc).isoformat()}
        try:
            if cell.track == "qalign":
                n, failed = run_qalign_cell(cell, model, writer, emit)
            else:
                n, failed = run_decode_cell(cell, model, writer, emit, warmup=warmup)
        except Exception as exc:  # the cell cannot run at all (plugin failed to load, bad params…)
            errors += 1
            writer.fail({**manifest, "error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()})
            emit("cell_failed", cell=cell.cell_id, error=f"{type(exc).__name__}: {exc}")
            print(traceback.format_exc(), file=sys.stderr)
            continue
        writer.finish({**manifest, "n_samples": n, "n_failed": failed, "seconds": time.time() - started})
        emit("cell_done", cell=cell.cell_id, n=n, failed=failed)
    return 1 if errors else 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="qval-worker", description=__doc__)
    ap.add_argument("--plan", required=True, type=Path)
    ap.add_argument("--shard", required=True, type=int)
    ap.add_argument("--results", required=True, type=Path)
    ap.add_argument("--run-id", required=True)
    args = ap.parse_args(argv)
    threads = os.environ.get("QVAL_TORCH_THREADS")
    if threads:
        import torch

        torch.set_num_threads(int(threads))
    plan = Plan.read(args.plan)
    return run_shard(plan, args.shard, args.results, args.run_id)


if __name__ == "__main__":
    sys.exit(main())
