"""PEARL's MODELLED speedup (``qval.decode.pearl.modelled_speedup``) next to the measured one, for a finished run.

α comes from the run's ``pearl`` cell (``acceptance_rate`` over its steps); the step costs are measured here, on this
machine, each in isolation (medians of ``--reps`` forwards over the KV-cached prompt): an AR step of the target at
the harness's thread count, a verification of γ tokens at PEARL's target_threads, a draft step of the int8 copy at
its draft_threads. Isolated costs leave out what running side by side costs (shared memory bandwidth, the GIL), so
the model is an upper bound on what this implementation can reach with these costs. Prints one JSON line.

    PYTHONPATH=$PWD python benchmarks/pearl_model.py RESULTS SUITE
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from qval import results as R
from qval.decode.drafters import int8_copy
from qval.decode.pearl import PearlParams, acceptance_rate, modelled_speedup
from qval.models import kv
from qval.models.base import ModelParams
from qval.models.packaged import SmolLM2Instruct


def _step_s(model, prompt: list[int], width: int, threads: int, reps: int) -> float:
    """Median seconds of one forward over ``width`` new tokens after the cached prompt, on ``threads`` threads."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with torch.inference_mode():
            cache = kv.new_cache(model)
            kv.forward(model, torch.tensor([prompt]), cache)
            times = []
            for _ in range(reps):
                start = time.perf_counter()
                kv.forward(model, torch.tensor([prompt[-width:]]), cache)
                times.append(time.perf_counter() - start)
                cache.crop(-width)
        return statistics.median(times)
    finally:
        torch.set_num_threads(before)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("results")
    ap.add_argument("suite")
    ap.add_argument("--reps", type=int, default=15)
    args = ap.parse_args()
    cells = R.cells(args.results, args.suite)
    pearl_cells = cells[cells["method"] == "pearl"]
    if pearl_cells.empty:
        raise SystemExit(f"suite {args.suite!r} in {args.results} has no pearl cell")
    cell = pearl_cells.iloc[0]
    identity = json.loads(cell["identity"]) if isinstance(cell["identity"], str) else cell["identity"]
    params = PearlParams.model_validate(identity.get("method_params") or {})
    samples = R.samples(args.results, "decode", args.suite)
    rows = samples[samples["cell_id"] == cell["cell_id"]]
    accepted = [a for row in rows["accepted"] for a in row]
    drafted = [d for row in rows["drafted"] for d in row]
    alpha = acceptance_rate(accepted, drafted)
    board = R.leaderboard(args.results, args.suite, "decode").set_index("method")

    model = SmolLM2Instruct(ModelParams()).load(device="cpu")
    prompt = model.chat_ids([{"role": "user", "content": "Summarise the history of the printing press in detail."}])
    threads = torch.get_num_threads()
    target_threads = params.target_threads or max(1, threads - params.draft_threads)
    ar_s = _step_s(model.model, prompt, 1, threads, args.reps)
    verify_s = _step_s(model.model, prompt, params.window, target_threads, args.reps)
    draft_s = _step_s(int8_copy(model.model), prompt, 1, params.draft_threads, args.reps)
    row = {
        "suite": args.suite,
        "alpha": alpha,
        "window": params.window,
        "threads": threads,
        "target_threads": target_threads,
        "draft_threads": params.draft_threads,
        "ar_step_s": ar_s,
        "verify_s": verify_s,
        "draft_step_s": draft_s,
        "pearl_modelled_speedup": None
        if alpha is None
        else modelled_speedup(alpha, params.window, draft_s, verify_s, ar_s),
        "measured_speedup": float(board.loc["pearl", "speedup"]) if "speedup" in board else None,
        "tokens_per_verify_step": float(board.loc["pearl", "mean_accepted_tokens"])
        if "mean_accepted_tokens" in board
        else None,
        "qval_modelled_speedup": float(board.loc["pearl", "modelled_speedup"]) if "modelled_speedup" in board else None,
    }
    print(json.dumps(row))


if __name__ == "__main__":
    main()
