"""Which engine lever gives what (issue #17): AR decode tokens/s of qval's engine, in one process on
SmolLM2-135M-Instruct fp32, on
- ``transformers_forward``: transformers' forward and DynamicCache (the engine before #17,
  ``decode.forward: transformers``);
- ``qval_forward_fused``: qval's forward (models/fast_llama.py: a preallocated cache, no per-call module machinery,
  q|k|v and gate|up fused into one product each, rotary embedding on q|k at once) with the weights in
  ``nn.Linear``'s [out, in] layout (``fast_llama.prepare(model, input_major=False)``);
- ``qval_forward``: the same with the wide projections and the LM head copied input-major (the default).

Each round decodes the same chat prompt on the three in turn, so drift hits all three; the figures are each side's
Σ tokens ÷ Σ decode seconds over the rounds, as a ratio to transformers' forward. The check: all three emit the
same greedy tokens. No goal (the goal is bench_engine_vs_vllm's): the table says where the time went.
"""

from __future__ import annotations

import json
import time

import torch

from qval.decode.engine import Engine
from qval.models import fast_llama
from qval.models.base import ModelParams
from qval.models.packaged import SmolLM2Instruct

PROMPT = [{"role": "user", "content": "Write a short story about a robot learning to paint."}]
LEVERS = ("transformers_forward", "qval_forward_fused", "qval_forward")


def _decode(engine: Engine, ids: list[int], max_new: int) -> tuple[list[int], float]:
    state = engine.prefill(ids)
    start = time.perf_counter()
    trace = engine.decode(state, None, max_new)
    return trace.token_ids, time.perf_counter() - start


def main(smoke: bool = False) -> dict:
    max_new, rounds = (8, 1) if smoke else (64, 3)
    torch.manual_seed(0)
    model = SmolLM2Instruct(ModelParams(dtype="float32")).load(device="cpu")
    ids = model.chat_ids(PROMPT)
    hf, ours = Engine(model.model, model.eos_token_ids, fast=False), Engine(model.model, model.eos_token_ids)

    def run(lever: str) -> tuple[list[int], float]:
        if lever != "transformers_forward":  # (re)made before the timed decode, as Engine() makes it
            fast_llama.prepare(model.model, input_major=lever == "qval_forward")
        return _decode(hf if lever == "transformers_forward" else ours, ids, max_new)

    for lever in LEVERS:  # warm-ups, not recorded
        run(lever)
    tokens = dict.fromkeys(LEVERS, 0)
    seconds = dict.fromkeys(LEVERS, 0.0)
    outputs: dict[str, list[int]] = {}
    for _ in range(rounds):
        for lever in LEVERS:
            out, elapsed = run(lever)
            outputs[lever] = out
            tokens[lever] += len(out) - 1  # the first token comes from the prefill
            seconds[lever] += elapsed
    rate = {lever: tokens[lever] / seconds[lever] for lever in LEVERS}
    return {
        "benchmark": "engine_levers",
        "size": "smoke" if smoke else "full",
        "model": "smollm2-135m-instruct float32",
        "threads": torch.get_num_threads(),
        "max_new_tokens": max_new,
        "rounds": rounds,
        **{f"{lever}_tok_s": round(rate[lever], 2) for lever in LEVERS},
        **{f"{lever}_vs_transformers": round(rate[lever] / rate[LEVERS[0]], 3) for lever in LEVERS[1:]},
        "identical_outputs": len({tuple(o) for o in outputs.values()}) == 1,
        "checks": len({tuple(o) for o in outputs.values()}) == 1,
    }


if __name__ == "__main__":
    print(json.dumps(main()))
