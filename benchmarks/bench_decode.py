"""Decoding-engine goals, measured side by side in one process on the real SmolLM2 (ratios, not absolute times).

1. ar_vs_generate: our AR baseline's throughput ÷ HF `generate` (greedy, KV cache), goal ≥ 0.97.
2. draft_vs_assisted: our draft-model speculation ÷ HF assisted generation with the same draft model and draft
   length (greedy, constant schedule), identical outputs required, goal ≥ 1.0.
3. engine_overhead: share of an AR decode step spent outside the model forward, goal ≤ 2%.

Calls are interleaved (ours, theirs, ours, …) over several prompts and repeats, so drift hits both sides.
"""

import json
import time

import torch

from qval.decode.drafters import ModelDrafter, int8_copy
from qval.decode.engine import Engine
from qval.models import kv
from qval.models.base import ModelParams
from qval.models.packaged import SmolLM2Instruct

PROMPTS = [
    "Summarize in two sentences: the city council met on Tuesday to discuss the new park, the budget and the road.",
    "Write a Python function that checks whether a string is a palindrome, with a docstring.",
    "Explain why the sky is blue to a ten-year-old.",
    "List five fruits and their colours, one per line, as 'fruit: colour'.",
]


def _sync() -> None:
    """On a GPU, wait for queued kernels, so a clock read after a call times the call (gpu_check.py)."""
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()


def _timed(fn):
    _sync()
    start = time.perf_counter()
    out = fn()
    _sync()
    return out, time.perf_counter() - start


def ar_vs_generate(model, engine, max_new=64, repeats=3):
    ours_t = theirs_t = ours_n = theirs_n = 0.0
    for _ in range(repeats):
        for text in PROMPTS:
            ids = model.chat_ids([{"role": "user", "content": text}])
            trace, t = _timed(lambda: engine.decode(engine.prefill(ids), None, max_new))
            ours_t, ours_n = ours_t + t, ours_n + len(trace.token_ids)
            out, t = _timed(
                lambda: model.model.generate(
                    torch.tensor([ids], device=model.model.device), max_new_tokens=max_new, do_sample=False
                )
            )
            theirs_t, theirs_n = theirs_t + t, theirs_n + out.shape[1] - len(ids)
    ratio = (ours_n / ours_t) / (theirs_n / theirs_t)
    return {
        "benchmark": "ar_vs_generate",
        "ours_tok_s": round(ours_n / ours_t, 2),
        "hf_generate_tok_s": round(theirs_n / theirs_t, 2),
        "ratio": round(ratio, 3),
        "goal": ">= 0.97",
        "ok": ratio >= 0.97,
    }


def draft_vs_assisted(model, engine, max_new=64, k=4, repeats=2):
    draft = int8_copy(model.model)
    draft.generation_config.num_assistant_tokens = k
    draft.generation_config.num_assistant_tokens_schedule = "constant"
    draft.generation_config.assistant_confidence_threshold = 0.0
    drafter = ModelDrafter(draft, k)
    ours_t = theirs_t = ours_n = theirs_n = 0.0
    identical = True
    for _ in range(repeats):
        for text in PROMPTS:
            ids = model.chat_ids([{"role": "user", "content": text}])
            trace, t = _timed(lambda: engine.decode(engine.prefill(ids), drafter, max_new))
            ours_t, ours_n = ours_t + t, ours_n + len(trace.token_ids)
            out, t = _timed(
                lambda: model.model.generate(
                    torch.tensor([ids], device=model.model.device),
                    assistant_model=draft,
                    max_new_tokens=max_new,
                    do_sample=False,
                )
            )
            theirs = out[0, len(ids) :].tolist()
            theirs_t, theirs_n = theirs_t + t, theirs_n + len(theirs)
            identical &= theirs[: len(trace.token_ids)] == trace.token_ids
    ratio = (ours_n / ours_t) / (theirs_n / theirs_t)
    return {
        "benchmark": "draft_vs_assisted",
        "draft": "int8 copy of the target",
        "num_draft": k,
        "ours_tok_s": round(ours_n / ours_t, 2),
        "hf_assisted_tok_s": round(theirs_n / theirs_t, 2),
        "identical_outputs": identical,
        "ratio": round(ratio, 3),
        "goal": ">= 1.0 and identical",
        "ok": identical and ratio >= 1.0,
    }


def engine_overhead(model, engine, max_new=64, repeats=3):
    """Engine AR decode time vs the same forwards issued bare (same tokens, same cache growth)."""
    engine_t = bare_t = 0.0
    for _ in range(repeats):
        for text in PROMPTS:
            ids = model.chat_ids([{"role": "user", "content": text}])
            state = engine.prefill(ids)
            trace, t = _timed(lambda: engine.decode(state, None, max_new))
            engine_t += t
            state = engine.prefill(ids)
            tokens = trace.token_ids[:-1]
            device = model.model.device

            def bare():
                # Bare: the forward the engine runs (qval's or transformers', by the cache it built) and nothing else.
                with torch.inference_mode():
                    for tok in tokens:
                        out = kv.forward(model.model, torch.tensor([[tok]], device=device), state.cache)
                        out.logits[0].float().argmax(dim=-1).tolist()

            _, t = _timed(bare)
            bare_t += t
    share = max(0.0, (engine_t - bare_t) / engine_t)
    return {
        "benchmark": "engine_overhead",
        "engine_s": round(engine_t, 3),
        "bare_forward_s": round(bare_t, 3),
        "overhead_share": round(share, 4),
        "goal": "<= 0.02",
        "ok": share <= 0.02,
    }


def main(smoke: bool = False) -> list[dict]:
    torch.manual_seed(0)
    size = dict(max_new=8, repeats=1) if smoke else {}
    model = SmolLM2Instruct(ModelParams()).load(device="cpu")
    engine = Engine(model.model, model.eos_token_ids)
    warm = model.chat_ids([{"role": "user", "content": "warm up"}])
    engine.decode(engine.prefill(warm), None, 16)  # warm-up, not recorded
    rows = [
        ar_vs_generate(model, engine, **size),
        draft_vs_assisted(model, engine, **size),
        engine_overhead(model, engine, **size),
    ]
    for row in rows:
        row["size"] = "smoke" if smoke else "full"
        row["forward"] = engine.forward  # the target forward the engine ran (qval's own on SmolLM2)
        row["checks"] = row.get("identical_outputs", True) is True
    return rows


if __name__ == "__main__":
    for row in main():
        print(json.dumps(row), flush=True)
