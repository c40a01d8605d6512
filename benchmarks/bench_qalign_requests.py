"""Goal: the request layer (memo, shared prefixes, batched continuations) forwards fewer model tokens than a naive
per-method loop, and scores more points per second, on the qval-v1-mini grid's model-based methods.

Both arms score the same points with the same scorers on the same loaded model, side by side in one process:
``shared`` is how qval runs; ``naive`` forwards every request in full (no memo, no prefix reuse, one continuation
per forward). Scores must be identical (to float tolerance), so the saving is free. The points are the first
``POINTS_PER_ENV`` of each qval-v1-mini environment, to keep the naive arm affordable on a CPU.
"""

import json
import time
from pathlib import Path

import numpy as np

from qval.qalign.llm import LLMRequests
from qval.qalign.points import collect_points
from qval.qalign.scorers.base import ScorerContext, build_scorer
from qval.suite import load_suite

POINTS_PER_ENV = 2
SUITE = Path(__file__).resolve().parent.parent / "suites" / "qval-v1-mini.yaml"


def _grid():
    suite = load_suite(SUITE)
    envs = [(ref.name, cls, params) for ref, cls, params in suite.resolved["qalign.envs"]]
    scorers = [(ref.name, cls, params) for ref, cls, params in suite.resolved["qalign.methods"] if cls.uses_model]
    return suite, scorers, envs


def _score_all(model, layer, scorers, env_points, gamma):
    scores, start = [], time.perf_counter()
    for _, cls, params in scorers:
        for env, points in env_points:
            # every scorer built here shares this layer, as every scorer of a worker shares the model's
            scorer = build_scorer(cls, params, ScorerContext(env=env, model=model, gamma=gamma, request_layer=layer))
            scorer.prepare(points)
            for out in scorer.score_batch(points):
                scores.append([np.nan if not isinstance(s, (int, float)) else float(s) for s in out])
    return scores, time.perf_counter() - start


def main(smoke: bool = False) -> dict:
    suite, scorers, envs = _grid()
    points_per_env = POINTS_PER_ENV
    if smoke:  # two scorers on two environments, one point each: the code path, not the figure
        scorers, envs, points_per_env = scorers[:2], envs[:2], 1
    cfg = suite.config.qalign
    model = suite.models[0][1].load()
    env_points = []
    for _, env_cls, params in envs:
        env = env_cls(params)
        points = collect_points(env, env.reference_q(cfg.gamma), seed=0, **cfg.points.model_dump())[:points_per_env]
        env_points.append((env, points))
    n_points = sum(len(p) for _, p in env_points) * len(scorers)
    naive_layer, shared_layer = LLMRequests(model, shared=False), LLMRequests(model, shared=True)
    _score_all(model, LLMRequests(model, shared=True), scorers[:1], env_points[:1], cfg.gamma)  # warm-up
    naive, naive_s = _score_all(model, naive_layer, scorers, env_points, cfg.gamma)
    shared, shared_s = _score_all(model, shared_layer, scorers, env_points, cfg.gamma)
    same = all(np.allclose(a, b, rtol=1e-4, atol=1e-4, equal_nan=True) for a, b in zip(naive, shared))
    computed, naive_tokens = shared_layer.counter.computed, naive_layer.counter.computed
    return {
        "benchmark": "qalign_requests",
        "size": "smoke" if smoke else "full",
        "checks": same,
        "scorers": [s[0] for s in scorers],
        "scored_points": n_points,
        "forward_tokens_naive": naive_tokens,
        "forward_tokens_shared": computed,
        "token_ratio_naive_over_shared": round(naive_tokens / computed, 2),
        "memo_hits": shared_layer.counter.memo_hits,
        "points_per_s_naive": round(n_points / naive_s, 3),
        "points_per_s_shared": round(n_points / shared_s, 3),
        "speed_ratio": round(naive_s / shared_s, 2),
        "identical_scores": same,
        "goal": "token ratio >= 1.3, speed ratio >= 1.1, identical scores",
        "ok": same and naive_tokens / computed >= 1.3 and naive_s / shared_s >= 1.1,
    }


if __name__ == "__main__":
    print(json.dumps(main()))
