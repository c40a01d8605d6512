"""Run one decoding cell. The harness owns timing: it brackets prefill and decode around the engine."""
from __future__ import annotations

import hashlib
import time
import zlib

from ..plan import Cell
from ..registry import REGISTRY
from .engine import Engine


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()


def _prompt_ids(tokenizer, messages) -> list[int]:
    encoded = tokenizer.apply_chat_template(messages, add_generation_prompt=True)
    if hasattr(encoded, "keys") and "input_ids" in encoded:
        encoded = encoded["input_ids"]
    return list(encoded)


def generate_timed(engine: Engine, drafter, prompt_ids, max_new_tokens, temperature, generator, device):
    _sync(device)
    t0 = time.perf_counter()
    state = engine.prefill(prompt_ids)
    _sync(device)
    t1 = time.perf_counter()
    trace = engine.decode(state, drafter, max_new_tokens, temperature, generator)
    _sync(device)
    t2 = time.perf_counter()
    return trace, t1 - t0, t2 - t1, state


def prefill_features(state) -> dict:
    """Cheap features of the prefill's next-token distribution, computed after the timed region."""
    import torch

    logp = torch.log_softmax(state.next_logits.double(), dim=-1)
    probs = logp.exp()
    return {"prefill_entropy": float(-(probs * logp).sum()), "prefill_top_prob": float(probs.max())}


def run_decode_cell(cell: Cell, model, writer, emit, warmup: int = 1) -> tuple[int, int]:
    import torch

    dataset_cls = REGISTRY.get("datasets", cell.dataset)
    policy_cls = REGISTRY.get("policies", cell.method)
    samples = dataset_cls(dataset_cls.Params.model_validate(cell.dataset_params)).samples()
    policy = policy_cls(policy_cls.Params.model_validate(cell.method_params))
    drafter = policy.drafter(model)
    engine = Engine(model.model, model.eos_token_ids)
    max_new = cell.settings["max_new_tokens"]
    done = writer.done_sample_ids()
    todo = [s for s in samples if s.sample_id not in done]
    emit("cell_start", cell=cell.cell_id, total=len(samples), done=len(samples) - len(todo))
    if todo:  # warm-up generations are not recorded: the first calls pay for allocation and caching
        ids = _prompt_ids(model.tokenizer, [{"role": "user", "content": todo[0].turns[0]}])
        for _ in range(warmup):
            generate_timed(engine, drafter, ids, min(max_new, 32), 0.0, None, model.device)
    failed = 0
    for sample in todo:
        rows, messages = [], []
        for turn, text in enumerate(sample.turns):
            messages.append({"role": "user", "content": text})
            generator = torch.Generator().manual_seed(
                zlib.crc32(f"{cell.seed}:{sample.sample_id}:{turn}".encode()))
            try:
                ids = _prompt_ids(model.tokenizer, messages)
                trace, prefill_s, decode_s, state = generate_timed(engine, drafter, ids, max_new, cell.temperature,
                                                                   generator, model.device)
            except Exception as exc:  # one failing sample is recorded and the cell goes on
                rows = [{"sample_id": sample.sample_id, "turn": turn, "category": sample.category,
                         "error": f"{type(exc).__name__}: {exc}"}]
                failed += 1
                break
            messages.append({"role": "assistant",
                             "content": model.tokenizer.decode(trace.token_ids, skip_special_tokens=True)})
            rows.append({
                "sample_id": sample.sample_id, "turn": turn, "category": sample.category,
                "prompt_tokens": len(ids), "new_tokens": len(trace.token_ids), "target_steps": trace.target_steps,
                "drafted": trace.drafted_per_step, "accepted": trace.accepted_per_step,
                "prefill_s": prefill_s, "decode_s": decode_s, "stopped_on_eos": trace.stopped_on_eos,
                "output_sha": hashlib.sha256(str(trace.token_ids).encode()).hexdigest()[:16],
                "output_ids": trace.token_ids, "error": None, **prefill_features(state),
            })
        writer.add_sample(rows)
        emit("sample", cell=cell.cell_id)
    return len(samples), failed
