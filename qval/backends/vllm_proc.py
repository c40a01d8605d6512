#!/usr/bin/env python
"""Host ONE vLLM offline ``LLM`` engine and serve requests over a JSON-lines protocol.

Run it with the vLLM venv's python (it imports only the stdlib and vllm):

    VENV/bin/python vllm_proc.py

stdin : one JSON object per line (a request).
proto : one JSON object per line per request, written to the *original* stdout fd.  That fd is
        duplicated at startup and fd 1 is then pointed at stderr, so anything vLLM (or anybody)
        prints to stdout ends up on stderr and cannot corrupt the protocol.

Requests
    {"op": "init", "model": PATH, "dtype": "float32", "seed": 0, "max_model_len": 2048,
     "speculative": null | {speculative_config}, "engine_args": {...extra LLM kwargs...},
     "scoring": bool (an engine for Q-alignment scoring: on CPU, 32-token prefix-cache blocks unless given)}
        -> {"ok": true, "init_s": float, "vllm_version": str, "engine_mode": "inproc"|"multiproc",
            "threads": int|null (the OpenMP threads the engine's worker runs with, as torch reports them),
            "prefix_caching": bool, "block_size": int}
    {"op": "generate", "prompt_token_ids": [...], "max_tokens": int, "temperature": float, "seed": int}
        -> {"ok": true, "token_ids": [...], "finish_reason": str, "wall_s": float,
            "ttft_s": float|null, "decode_s": float|null, "spec": null | {...}, "num_prompt_tokens": int,
            "engine_timing": {...} | null}
    {"op": "prompt_logprobs", "prompts": [[...], ...], "starts": [int, ...]}
        -> {"ok": true, "logprobs": [[float, ...], ...], "cached": [int, ...], "recomputed": int}
        The log-prob of every token of prompt i from index starts[i] on (starts[i] >= 1), all prompts in one
        llm.generate call that reads the prefix cache (see op_prompt_logprobs).
    {"op": "generate_batch", "requests": [{"prompt_token_ids", "max_tokens", "temperature", "seed"}, ...]}
        -> {"ok": true, "outputs": [{"token_ids": [...], "finish_reason": str, "cached": int}, ...]}
        Several prompts, each with its own sampling settings and seed, in one llm.generate call.
    {"op": "next_logprobs", "prompts": [[...], ...]}
        -> {"ok": true, "vocab_size": int, "logprobs": [base64 of float32 little-endian, ...], "cached": [int, ...]}
        The full next-token distribution after each prompt: raw model log-probs over the whole vocabulary
        (the engine must run with max_logprobs=-1; logprobs_mode raw_logprobs, vLLM's default).
    {"op": "ping"}      -> {"ok": true, "pid": int, "engine": bool}
    {"op": "shutdown"}  -> {"ok": true}, then exit 0.   EOF on stdin also exits 0.
    Any exception       -> {"ok": false, "error": "Type: message", "traceback": "..."} and keep serving.

Timing fields of "generate" (all seconds):
    wall_s   time.perf_counter() around the llm.generate() call (the harness clock).
    ttft_s   first-token timestamp of the engine core minus the call start.  The engine core stamps
             its outputs with time.monotonic(); on Linux perf_counter() and monotonic() are the same
             clock (CLOCK_MONOTONIC, system-wide, so also valid for the multi-process engine); we take
             the call start with time.monotonic() right next to perf_counter() and subtract.
    decode_s last-token timestamp minus first-token timestamp (engine core, RequestStateStats).
    engine_timing  the raw numbers: queued->scheduled, scheduled->first token (prefill),
             queued->first token (engine-side TTFT), frontend TTFT (first_token_latency, wall clock,
             measured by the output processor), and call start -> queued.
    These come from RequestOutput.metrics (vllm.v1.metrics.stats.RequestStateStats), which is only
    filled when the engine runs with disable_log_stats=False (we always pass that).
"""

import os
import sys

# This file runs as a script from inside the qval package folder, whose modules must not shadow vllm's.
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != os.path.dirname(os.path.abspath(__file__))]

# ---- 1. protect the protocol channel before anything can print ------------------------------
_proto = os.fdopen(os.dup(1), "w", buffering=1, encoding="utf-8")
os.dup2(2, 1)  # stray prints (vLLM logs, warnings) now go to stderr

# ---- 2. environment, before vllm is imported ---------------------------------------------------
os.environ.setdefault("VLLM_LOGGING_STREAM", "ext://sys.stderr")
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")
os.environ.setdefault("NUMBA_NUM_THREADS", "1")  # in-process engine + ngram: numba vs OpenMP collapse
os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")  # in-process engine: ~3 s init

import array  # noqa: E402
import base64  # noqa: E402
import gc  # noqa: E402
import json  # noqa: E402
import time  # noqa: E402
import traceback  # noqa: E402

import vllm  # noqa: E402
from vllm import LLM, SamplingParams  # noqa: E402
from vllm.inputs import TokensPrompt  # noqa: E402

_llm = None  # the one engine


def _patch_kernel_rebind_scan() -> None:
    """Work around a vLLM 0.32 bug that breaks re-initialising an engine in the same process.

    vllm/triton_utils/dispatcher.py::_rebind_kernels (called from register_kernels during every
    worker init, via platforms/cpu.py::register_triton_kernel_overrides) scans every module
    attribute and does ``vars(value).get("kernel")`` for anything with a ``__dict__``.  Once numba
    is imported (the n-gram proposer imports it), ``llvmlite.binding.ffi.lib`` is in sys.modules;
    its ``__getattr__`` fabricates a ``__dict__`` that is not a mapping, so the next LLM() in this
    process dies with ``AttributeError: '_lib_fn_wrapper' object has no attribute 'get'``.
    In-process mode only (the multi-process engine core is a fresh process every time).
    Fix: shadow ``vars`` in that module with a version that returns {} for non-mappings.
    """
    try:
        import builtins
        from collections.abc import Mapping

        from vllm.triton_utils import dispatcher as _disp
    except Exception:  # noqa: BLE001 - layout changed: nothing to patch
        return
    if not hasattr(_disp, "_rebind_kernels"):
        return

    def _safe_vars(*args):
        d = builtins.vars(*args)
        return d if isinstance(d, Mapping) else {}

    _disp.vars = _safe_vars


_patch_kernel_rebind_scan()


def _send(obj) -> None:
    _proto.write(json.dumps(obj, separators=(",", ":")) + "\n")
    _proto.flush()


def _shutdown_engine() -> None:
    global _llm
    if _llm is None:
        return
    llm, _llm = _llm, None
    try:
        llm.llm_engine.engine_core.shutdown()  # stops EngineCore (+ worker procs in multiproc mode)
    except Exception:  # noqa: BLE001 - best effort
        traceback.print_exc(file=sys.stderr)
    del llm
    gc.collect()


def _torch_threads(*_args) -> int:
    import torch

    return torch.get_num_threads()


def _engine_threads() -> int | None:
    """The threads the engine's worker really decodes with (its torch/OpenMP pool), asked of the worker itself: in the
    multi-process engine that is another process, whose count vLLM's CPU binding may have set."""
    try:
        counts = _llm.collective_rpc(_torch_threads)
        return int(counts[0]) if counts else None
    except Exception:  # noqa: BLE001 - an engine that cannot run a callable: unknown rather than a guess
        traceback.print_exc(file=sys.stderr)
        return None


def _on_cpu() -> bool:
    try:
        from vllm.platforms import current_platform

        return bool(current_platform.is_cpu())
    except Exception:  # noqa: BLE001 - no platform to ask: keep vLLM's defaults
        return False


def op_init(req: dict) -> dict:
    _shutdown_engine()
    spec = req.get("speculative")
    kwargs = dict(
        model=req["model"],
        dtype=req.get("dtype", "float32"),
        enforce_eager=True,
        seed=req.get("seed", 0),
        max_model_len=req.get("max_model_len", 2048),
        disable_log_stats=False,  # needed for get_metrics() and RequestOutput.metrics timestamps
    )
    if spec:
        kwargs["speculative_config"] = dict(spec)
        kwargs["per_request_spec_decode_metrics"] = "detailed"
    kwargs.update(req.get("engine_args") or {})
    if req.get("scoring") and "block_size" not in kwargs and _on_cpu():
        # The prefix cache shares whole blocks, and the CPU backend's default block is 128 tokens: a state's prompt
        # shorter than that would be computed anew for each candidate. 32 is the CPU attention's smallest block.
        kwargs["block_size"] = 32
    global _llm
    t0 = time.perf_counter()
    _llm = LLM(**kwargs)
    init_s = time.perf_counter() - t0
    mp = os.environ.get("VLLM_ENABLE_V1_MULTIPROCESSING", "1").strip().lower() not in ("0", "false")
    return {
        "ok": True,
        "init_s": init_s,
        "vllm_version": vllm.__version__,
        "engine_mode": "multiproc" if mp else "inproc",
        "threads": _engine_threads(),
        **_cache_info(),
    }


def _cache_info() -> dict:
    """What the scorers' request layer reports of the engine: whether prompts share cached prefixes, and in what
    units (vLLM caches whole blocks)."""
    try:
        cache = _llm.llm_engine.vllm_config.cache_config
        return {"prefix_caching": bool(cache.enable_prefix_caching), "block_size": int(cache.block_size)}
    except Exception:  # noqa: BLE001 - a layout this version lacks: unknown rather than a guess
        return {}


def _spec_dict(m) -> dict | None:
    if m is None:
        return None
    acc = list(m.per_step_accepted)
    dra = list(m.per_step_drafted)
    hist = list(m.histogram)
    return {
        "per_step_accepted": acc,
        "per_step_drafted": dra,
        "num_drafts": sum(hist),  # verify steps with >=1 proposed token
        "num_draft_tokens": int(m.num_draft_tokens),
        "num_accepted_tokens": sum(j * c for j, c in enumerate(hist)),
        "acceptance_histogram": hist,
        "num_spec_tokens": int(m.num_spec_tokens),
    }


def op_generate(req: dict) -> dict:
    if _llm is None:
        raise RuntimeError("no engine: send an 'init' request first")
    ids = req["prompt_token_ids"]
    if not isinstance(ids, list) or not all(isinstance(t, int) for t in ids):
        raise TypeError("prompt_token_ids must be a list of ints")
    params = SamplingParams(
        max_tokens=int(req["max_tokens"]),
        temperature=float(req.get("temperature", 0.0)),
        seed=req.get("seed"),
        ignore_eos=False,
    )
    prompt = TokensPrompt(prompt_token_ids=ids)
    t0_mono = time.monotonic()
    t0 = time.perf_counter()
    outs = _llm.generate([prompt], params, use_tqdm=False)
    wall_s = time.perf_counter() - t0
    out = outs[0]
    comp = out.outputs[0]
    ttft_s = decode_s = None
    engine_timing = None
    st = getattr(out, "metrics", None)
    if st is not None and getattr(st, "first_token_ts", 0.0):
        ftt, ltt = st.first_token_ts, st.last_token_ts
        ttft_s = ftt - t0_mono
        decode_s = ltt - ftt
        engine_timing = {
            "call_to_queued_s": (st.queued_ts - t0_mono) if st.queued_ts else None,
            "queued_to_scheduled_s": (st.scheduled_ts - st.queued_ts) if st.scheduled_ts and st.queued_ts else None,
            "prefill_s": (ftt - st.scheduled_ts) if st.scheduled_ts else None,
            "engine_ttft_s": (ftt - st.queued_ts) if st.queued_ts else None,
            "frontend_ttft_s": st.first_token_latency or None,
            "num_generation_tokens": st.num_generation_tokens,
        }
    return {
        "ok": True,
        "token_ids": list(comp.token_ids),
        "finish_reason": comp.finish_reason,
        "wall_s": wall_s,
        "ttft_s": ttft_s,
        "decode_s": decode_s,
        "spec": _spec_dict(getattr(comp, "spec_decode_metrics", None)),
        "num_prompt_tokens": len(ids),
        "engine_timing": engine_timing,
    }


def _token_lists(value, what: str) -> list:
    if not isinstance(value, list) or not all(
        isinstance(ids, list) and ids and all(isinstance(t, int) for t in ids) for ids in value
    ):
        raise TypeError(f"{what} must be a list of non-empty lists of ints")
    return value


def _score_prompts(prompts: list, read_cache: bool) -> list:
    """One engine call that scores the prompts' own tokens (prompt_logprobs=0: each token's log-prob, nothing else).

    vLLM never reads the prefix cache for such a request unless told (``skip_reading_prefix_cache`` defaults to True
    with prompt_logprobs), because a cached token has no log-prob: its row is left unfilled (uninitialised memory)."""
    params = SamplingParams(
        max_tokens=1,
        temperature=0.0,
        prompt_logprobs=0,
        detokenize=False,
        flat_logprobs=True,
        skip_reading_prefix_cache=not read_cache,
    )
    return _llm.generate([TokensPrompt(prompt_token_ids=ids) for ids in prompts], params, use_tqdm=False)


def _prompt_token_logprobs(out, ids: list, start: int) -> list:
    flat = out.prompt_logprobs  # FlatLogprobs: position t holds the log-prob of prompt token t (position 0 is None)
    values = []
    for t in range(start, len(ids)):
        found = [j for j in range(flat.start_indices[t], flat.end_indices[t]) if flat.token_ids[j] == ids[t]]
        if not found:
            raise RuntimeError(f"vLLM returned no log-prob for prompt token {t} ({ids[t]})")
        values.append(float(flat.logprobs[found[0]]))
    return values


def op_prompt_logprobs(req: dict) -> dict:
    """Log-probs of prompt tokens from ``starts[i]`` on, read from a prefix-cached prefill.

    The prefix cache is read, so a shared prompt prefix (every continuation of one state) is computed once, also
    within this one call (blocks are cached as they are scheduled). The rows of cached tokens are not computed, so
    a prompt whose cache hit reaches past ``starts[i] - 1`` (the row that predicts the first wanted token: a hit
    is whole blocks, and another prompt may share the first continuation tokens) is scored again without the cache.
    """
    if _llm is None:
        raise RuntimeError("no engine: send an 'init' request first")
    prompts = _token_lists(req["prompts"], "prompts")
    starts = [int(s) for s in req["starts"]]
    if len(starts) != len(prompts) or not all(1 <= s <= len(ids) for s, ids in zip(starts, prompts)):
        raise ValueError("starts must give, per prompt, an index in [1, len(prompt)]")
    outs = _score_prompts(prompts, read_cache=True)
    cached = [int(o.num_cached_tokens or 0) for o in outs]
    computed = sum(len(ids) - c for ids, c in zip(prompts, cached))
    redo = [i for i, (c, s) in enumerate(zip(cached, starts)) if c > s - 1]
    if redo:
        for i, out in zip(redo, _score_prompts([prompts[i] for i in redo], read_cache=False)):
            outs[i], cached[i] = out, 0
            computed += len(prompts[i])
    return {
        "ok": True,
        "logprobs": [_prompt_token_logprobs(o, ids, s) for o, ids, s in zip(outs, prompts, starts)],
        "cached": cached,
        "computed": computed,
        "recomputed": len(redo),
    }


def op_generate_batch(req: dict) -> dict:
    """Several generations in one engine call (vLLM batches them), each with its own settings and seed; vLLM's
    seeded sampling does not depend on the batch (a per-request generator)."""
    if _llm is None:
        raise RuntimeError("no engine: send an 'init' request first")
    requests = req["requests"]
    prompts = _token_lists([r.get("prompt_token_ids") for r in requests], "prompt_token_ids")
    params = [
        SamplingParams(
            max_tokens=int(r["max_tokens"]),
            temperature=float(r.get("temperature", 0.0)),
            seed=r.get("seed"),
            detokenize=False,  # the caller decodes with its own tokenizer, as the transformers path does
        )
        for r in requests
    ]
    outs = _llm.generate([TokensPrompt(prompt_token_ids=ids) for ids in prompts], params, use_tqdm=False)
    return {
        "ok": True,
        "outputs": [
            {
                "token_ids": list(o.outputs[0].token_ids),
                "finish_reason": o.outputs[0].finish_reason,
                "cached": int(o.num_cached_tokens or 0),
            }
            for o in outs
        ],
    }


def op_next_logprobs(req: dict) -> dict:
    """The full next-token distribution after each prompt (vLLM's ``logprobs=-1``: every vocabulary entry), as
    float32 bytes in base64 (a JSON list of 49k floats is ~4x larger and slower to parse)."""
    if _llm is None:
        raise RuntimeError("no engine: send an 'init' request first")
    prompts = _token_lists(req["prompts"], "prompts")
    config = _llm.llm_engine.model_config
    if config.logprobs_mode != "raw_logprobs":
        # processed log-probs are after temperature, top-k/top-p: not the model's distribution
        raise ValueError(f"the engine returns {config.logprobs_mode}; the full distribution needs raw_logprobs")
    vocab = config.get_vocab_size()
    params = SamplingParams(max_tokens=1, temperature=0.0, logprobs=-1, detokenize=False, flat_logprobs=True)
    outs = _llm.generate([TokensPrompt(prompt_token_ids=ids) for ids in prompts], params, use_tqdm=False)
    encoded = []
    for out in outs:
        flat = out.outputs[0].logprobs
        lo, hi = flat.start_indices[0], flat.end_indices[0]
        dist = array.array("f", [float("-inf")]) * vocab
        for j in range(lo, hi):  # the vocabulary in rank order, plus the sampled token once more
            dist[flat.token_ids[j]] = flat.logprobs[j]
        if len(set(flat.token_ids[lo:hi])) != vocab:
            raise RuntimeError(f"vLLM returned {len(set(flat.token_ids[lo:hi]))} of {vocab} log-probs")
        if sys.byteorder != "little":
            dist.byteswap()
        encoded.append(base64.b64encode(dist.tobytes()).decode("ascii"))
    return {
        "ok": True,
        "vocab_size": vocab,
        "logprobs": encoded,
        "cached": [int(o.num_cached_tokens or 0) for o in outs],
    }


OPS = {
    "generate": op_generate,
    "prompt_logprobs": op_prompt_logprobs,
    "generate_batch": op_generate_batch,
    "next_logprobs": op_next_logprobs,
}


def main() -> int:
    for line in sys.stdin:
        line = line.strip()
        if not line:
            continue
        try:
            req = json.loads(line)
            if not isinstance(req, dict):
                raise TypeError("request must be a JSON object")
            op = req.get("op")
            if op == "init":
                resp = op_init(req)
            elif op in OPS:
                resp = OPS[op](req)
            elif op == "ping":
                resp = {"ok": True, "pid": os.getpid(), "engine": _llm is not None}
            elif op == "shutdown":
                _shutdown_engine()
                _send({"ok": True})
                return 0
            else:
                raise ValueError(f"unknown op {op!r}")
        except Exception as e:  # noqa: BLE001 - report and keep serving
            resp = {"ok": False, "error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc()}
        _send(resp)
    _shutdown_engine()  # EOF
    return 0


if __name__ == "__main__":
    rc = main()
    try:
        _proto.close()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
    # os._exit avoids hangs in interpreter teardown of leftover engine threads.
    os._exit(rc)
