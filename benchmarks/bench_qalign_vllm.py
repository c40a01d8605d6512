"""Q-alignment scoring on vLLM's offline engine vs the transformers request layer (issue #17): points/s, scores.

The qval-v1-mini grid's model-based scorers on the first ``POINTS_PER_ENV`` points of each environment, scored
twice in one process: through ``LLMRequests`` (transformers, shared: memo, prefix KV reuse, batched continuations;
how qval runs a local model) and through ``VLLMRequests`` (qval's ``vllm`` child: prompt log-probs over the prefix
cache, the full next-token distribution, batched generation). The same SmolLM2-135M-Instruct fp32 folder, the same
points, the same CPU threads (the worker's: ``vllm_source.worker_threads``, and the count the engine reports is
checked). Per scorer the two arms run back to back, the first arm alternating between scorers, so drift and other
users' load hit both; each arm has its own memo (nothing is answered from the other's work).

Figures: points/s per arm over all scorers (a point scored by one scorer counts once) and per scorer, their ratio
(vLLM ÷ transformers), forward tokens per arm, and per scorer the largest score difference. The check: every
scorer whose scores come from log-probs only (LOGPROB_SCORERS) agrees within TOLERANCE, and the engine ran with the
worker's threads. Generation-based scorers are reported, not judged: at T = 0 a near-tie can flip one greedy token
on either side, and a sampled one (codegen) draws vLLM's samples, not torch's.

``--smoke``: two log-prob scorers on one environment, one point; skipped, with the reason printed, when vLLM's
interpreter is absent (``$QVAL_VLLM_PYTHON`` or the venv ``qval setup-vllm-cpu`` builds); at full size that venv
is built when missing, as ``bench_engine_vs_vllm.py`` does. There is no goal: the figure is measured, not judged.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
from bench_engine_vs_vllm import vllm_python  # a sibling script: benchmarks/ is on sys.path (run_all, or as a script)

from qval.backends.vllm_source import VLLMModel, worker_threads
from qval.qalign.llm import LLMRequests
from qval.qalign.points import collect_points
from qval.qalign.scorers.base import ScorerContext, build_scorer
from qval.suite import load_suite

POINTS_PER_ENV = 2
SUITE = Path(__file__).resolve().parent.parent / "suites" / "qval-v1-mini.yaml"
SMOKE_SCORERS = ("action-logprob", "next-state-entropy")
LOGPROB_SCORERS = {
    "action-logprob",
    "next-state-entropy",
    "self-certainty",
    "verifier",
    "delta-belief",
    "sdpo",
    "sdpo-gt",
}
TOLERANCE = 1e-3  # as tests/test_vllm_backend.py: fp32 both sides, measured differences there are <= 4e-5


def _score(model, layer, cls, params, env_points, gamma) -> tuple[list[float], float]:
    """Every candidate's score (NaN for a failure) over all environments, and the seconds it took."""
    scores, start = [], time.perf_counter()
    for env, points in env_points:
        scorer = build_scorer(cls, params, ScorerContext(env=env, model=model, gamma=gamma, request_layer=layer))
        scorer.prepare(points)
        for out in scorer.score_batch(points):
            if isinstance(out, BaseException):
                raise out
            scores += [float(s) if isinstance(s, (int, float)) else np.nan for s in out]
    return scores, time.perf_counter() - start


def _compare(a: list[float], b: list[float]) -> dict:
    x, y = np.asarray(a, float), np.asarray(b, float)
    both = ~np.isnan(x) & ~np.isnan(y)
    diff = np.abs(x[both] - y[both])
    return {
        "max_abs_diff": float(diff.max()) if diff.size else 0.0,
        "identical_share": round(float(np.mean((x == y) | (np.isnan(x) & np.isnan(y)))), 3) if x.size else 1.0,
        "failed_on_one_side": int(np.sum(np.isnan(x) != np.isnan(y))),
    }


def main(smoke: bool = False) -> list[dict]:
    row: dict = {"benchmark": "qalign_vllm", "size": "smoke" if smoke else "full"}
    python, skipped = vllm_python(smoke)
    if python is None:
        print(f"bench_qalign_vllm: skipped: {skipped}", file=sys.stderr, flush=True)
        return [{**row, "skipped": skipped, "ok": True, "checks": True}]
    suite = load_suite(SUITE)
    cfg = suite.config.qalign
    envs = list(suite.resolved["qalign.envs"])
    scorers = [(ref.name, cls, params) for ref, cls, params in suite.resolved["qalign.methods"] if cls.uses_model]
    points_per_env = POINTS_PER_ENV
    if smoke:  # the code path, not the figure
        scorers, envs, points_per_env = [s for s in scorers if s[0] in SMOKE_SCORERS], envs[:1], 1
    threads = worker_threads()
    torch.set_num_threads(threads)
    local = suite.models[0][1].load(device="cpu")
    source = VLLMModel(VLLMModel.Params(model=suite.models[0][1].name, python=python, threads=threads))
    served = source.load()
    env_points = []
    for _, env_cls, params in envs:
        env = env_cls(params)
        points = collect_points(env, env.reference_q(cfg.gamma), seed=0, **cfg.points.model_dump())[:points_per_env]
        env_points.append((env, points))
    try:
        served.scoring_engine()  # engine start is not timed
        warm = local.chat_ids([{"role": "user", "content": "warm up"}])
        for layer in (LLMRequests(local), served.make_requests()):
            layer.generate(warm, 4, 0.0, 0)  # warm-ups, on layers of their own (nothing memoised for the arms)
        arms = {"transformers": LLMRequests(local), "vllm": served.make_requests()}
        models = {"transformers": local, "vllm": served}
        seconds = {arm: 0.0 for arm in arms}
        per_scorer = []
        for i, (name, cls, params) in enumerate(scorers):
            order = ["transformers", "vllm"] if i % 2 == 0 else ["vllm", "transformers"]
            scores, took = {}, {}
            for arm in order:
                scores[arm], took[arm] = _score(models[arm], arms[arm], cls, params, env_points, cfg.gamma)
                seconds[arm] += took[arm]
            n = sum(len(p) for _, p in env_points)
            per_scorer.append(
                {
                    "scorer": name,
                    "points_per_s_transformers": round(n / took["transformers"], 3),
                    "points_per_s_vllm": round(n / took["vllm"], 3),
                    **_compare(scores["vllm"], scores["transformers"]),
                }
            )
        info = served.engine_info
    finally:
        served.close()
    n_points = sum(len(p) for _, p in env_points) * len(scorers)
    judged = [s for s in per_scorer if s["scorer"] in LOGPROB_SCORERS]
    within = all(s["max_abs_diff"] <= TOLERANCE and s["failed_on_one_side"] == 0 for s in judged)
    row.update(
        {
            "model": "smollm2-135m-instruct float32",
            "scorers": [s[0] for s in scorers],
            "scored_points": n_points,
            "threads": threads,
            "vllm_threads": info.get("threads"),
            "vllm_version": info.get("vllm_version"),
            "vllm_block_size": info.get("block_size"),
            "points_per_s_transformers": round(n_points / seconds["transformers"], 3),
            "points_per_s_vllm": round(n_points / seconds["vllm"], 3),
            "speed_ratio_vllm_over_transformers": round(seconds["transformers"] / seconds["vllm"], 3),
            "forward_tokens_transformers": arms["transformers"].counter.computed,
            "forward_tokens_vllm": arms["vllm"].counter.computed,
            "max_abs_diff_logprob_scorers": max((s["max_abs_diff"] for s in judged), default=0.0),
            "logprob_scorers_within_tolerance": within,
            "per_scorer": per_scorer,
            "load_avg1": round(os.getloadavg()[0], 2),
            "cpus": len(os.sched_getaffinity(0)),
        }
    )
    row["checks"] = within and row["vllm_threads"] == threads
    row["ok"] = True  # measured, not judged
    return [row]


if __name__ == "__main__":
    for result in main(smoke="--smoke" in sys.argv[1:]):
        print(json.dumps(result), flush=True)
