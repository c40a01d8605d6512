"""Cross-tokenizer drafting: qval's ``cross-tokenizer-draft`` ÷ transformers' universal assisted generation (UAG).

SmolLM2-135M-Instruct drafts for Gemma-3-270M (both from their packages, fp32, CPU) on bench_decode's prompts (in
qval's plain-text chat format, Gemma being a base model: identical prompt ids on both sides), greedy, the same
max_new_tokens, the same draft length (qval's ``num_draft`` = UAG's ``num_assistant_tokens``, constant schedule, no
confidence threshold), the same draft model object and the same thread count. UAG is Gemma's own
``generate(..., assistant_model=smollm, tokenizer=gemma_tok, assistant_tokenizer=smollm_tok)``. Calls alternate
(ours, UAG, ours, …) over prompts and repeats; the figure is Σ new tokens ÷ Σ seconds (prefill included on both
sides). Goal ≥ 1.0× with identical output tokens; qval's output is also checked against qval's own AR decode
(lossless), which the smoke run judges.

If UAG raises with these two models, the row says so (``uag_error``: the exception) and misses its goal instead of
crashing the run.
"""

from __future__ import annotations

import json

import torch
from bench_decode import PROMPTS, _timed

from qval.decode.cross_tokenizer import CrossTokenizerDraftPolicy, CrossTokenizerParams
from qval.decode.engine import Engine
from qval.models.base import ModelParams
from qval.models.packaged import Gemma3Base

GOAL = 1.0


def cross_vs_uag(target, max_new: int = 64, k: int = 4, repeats: int = 2, prompts: list[str] = PROMPTS) -> dict:
    drafter = CrossTokenizerDraftPolicy(CrossTokenizerParams(num_draft=k)).drafter(target)
    draft, draft_tokenizer = drafter.inner.model, drafter.bridge.dtok
    draft.generation_config.num_assistant_tokens = k
    draft.generation_config.num_assistant_tokens_schedule = "constant"
    draft.generation_config.assistant_confidence_threshold = 0.0
    engine = Engine(target.model, target.eos_token_ids)
    eos = sorted(target.eos_token_ids)

    def uag(ids: list[int]) -> list[int]:
        out = target.model.generate(
            torch.tensor([ids]),
            attention_mask=torch.ones(1, len(ids), dtype=torch.long),
            assistant_model=draft,
            tokenizer=target.tokenizer,
            assistant_tokenizer=draft_tokenizer,
            max_new_tokens=max_new,
            do_sample=False,
            eos_token_id=eos,
        )
        return out[0, len(ids) :].tolist()

    ours_t = theirs_t = ours_n = theirs_n = 0.0
    identical = lossless = True
    accepted = steps = 0
    error = None
    for _ in range(repeats):
        for text in prompts:
            ids = target.chat_ids([{"role": "user", "content": text}])
            trace, t = _timed(lambda: engine.decode(engine.prefill(ids), drafter, max_new))
            ours_t, ours_n = ours_t + t, ours_n + len(trace.token_ids)
            accepted, steps = accepted + sum(trace.accepted_per_step), steps + trace.target_steps
            lossless &= engine.decode(engine.prefill(ids), None, max_new).token_ids == trace.token_ids
            if error is not None:
                continue
            try:
                theirs, t = _timed(lambda: uag(ids))
            except Exception as exc:  # noqa: BLE001 - UAG's failure with this pair is the finding, reported as such
                error = f"{type(exc).__name__}: {exc}"
                continue
            theirs_t, theirs_n = theirs_t + t, theirs_n + len(theirs)
            identical &= theirs == trace.token_ids
    row = {
        "benchmark": "cross_vs_uag",
        "target": "gemma3-270m",
        "draft": "smollm2-135m-instruct",
        "num_draft": k,
        "max_new_tokens": max_new,
        "threads": torch.get_num_threads(),
        "ours_tok_s": round(ours_n / ours_t, 2),
        "ours_tokens_per_step": round((accepted + steps) / steps, 3) if steps else None,
        "lossless_vs_our_ar": lossless,
        "goal": f">= {GOAL} and identical",
    }
    if error is not None:
        return {**row, "uag_error": error, "ok": False, "checks_detail": "UAG did not run; qval's AR is the check"}
    ratio = (ours_n / ours_t) / (theirs_n / theirs_t)
    return {
        **row,
        "uag_tok_s": round(theirs_n / theirs_t, 2),
        "identical_outputs": identical,
        "ratio": round(ratio, 3),
        "ok": identical and ratio >= GOAL,
    }


def main(smoke: bool = False, size: dict | None = None) -> list[dict]:
    torch.manual_seed(0)
    size = size if size is not None else dict(max_new=8, repeats=1, prompts=PROMPTS[:1]) if smoke else {}
    target = Gemma3Base(ModelParams()).load(device="cpu")
    engine = Engine(target.model, target.eos_token_ids)
    warm = target.chat_ids([{"role": "user", "content": "warm up"}])
    engine.decode(engine.prefill(warm), None, 8)  # warm-up, not recorded
    row = cross_vs_uag(target, **size)
    row["size"] = "smoke" if smoke else "full" if size == {} else f"{len(size['prompts'])} prompts x {size['max_new']}"
    row["checks"] = row["lossless_vs_our_ar"] is True and row.get("identical_outputs", True) is True
    return [row]


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true", help="1 prompt, 8 tokens, 1 repeat")
    parser.add_argument("--prompts", type=int, help="the first N prompts only (a shorter measured run)")
    parser.add_argument("--max-new", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    custom = None
    if args.prompts is not None:
        custom = dict(max_new=args.max_new, repeats=args.repeats, prompts=PROMPTS[: args.prompts])
    for result in main(smoke=args.smoke, size=custom):
        print(json.dumps(result), flush=True)
