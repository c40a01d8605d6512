"""Contract checks for plugin authors: ``check_scorer(MyScorer)``, ``check_policy(MyPolicy, model)``, ….

Each check raises AssertionError with a message saying which rule the plugin breaks.
"""

from __future__ import annotations

import math
from typing import Any

from pydantic import BaseModel

from .metrics.base import Metric


def _check_common(cls: Any, base: type) -> None:
    is_plugin = isinstance(cls, type) and issubclass(cls, base)
    assert is_plugin, f"{cls!r} must subclass {base.__name__}"
    assert isinstance(cls.name, str), f"{cls.__name__}.name must be a string (its entry-point name, or empty)"
    assert isinstance(cls.version, str) and cls.version, f"{cls.__name__}.version must be a non-empty string"
    assert issubclass(cls.Params, BaseModel), f"{cls.__name__}.Params must be a pydantic model"
    assert cls.Params.model_config.get("extra") == "forbid", (
        f"{cls.__name__}.Params must forbid unknown keys (model_config = ConfigDict(extra='forbid'))"
    )
    # Every param needs a default so a suite can name the plugin alone; a plugin that cannot have defaults (a
    # served-only policy needs a server URL) gives valid example params instead.
    cls.Params.model_validate(getattr(cls, "example_params", None) or {})


def check_scorer(cls, model=None, n_points: int = 6, params: dict | None = None) -> None:
    """A scorer returns one finite float (or a Failed with a reason) per candidate, deterministically for a fixed
    seed. ``params`` overrides defaults (e.g. fewer tokens to keep a contract check quick)."""
    from .qalign.envs.toy_text import FrozenLakeEnv
    from .qalign.points import collect_points
    from .qalign.scorers.base import (
        FAMILIES,
        Failed,
        Scorer,
        ScorerContext,
        build_scorer,
    )

    _check_common(cls, Scorer)
    assert cls.family in FAMILIES, f"{cls.__name__}.family must be one of {FAMILIES}"
    assert not (cls.uses_model and model is None), f"{cls.__name__} uses a model: pass one to check_scorer"
    env = FrozenLakeEnv(FrozenLakeEnv.Params())
    points = collect_points(
        env, env.reference_q(0.95), episodes=3, epsilon=0.3, max_points_per_episode=2, max_steps=20, seed=0
    )[:n_points]
    validated = cls.Params.model_validate(params or {})
    context = ScorerContext(env=env, model=model, seed=0, temperature=0.0)
    first, second = build_scorer(cls, validated, context), build_scorer(cls, validated, context)
    first.prepare(points)
    second.prepare(points)
    for point in points:
        outcome = first.score_batch([point])[0]
        if isinstance(outcome, BaseException):
            raise outcome
        scores = list(outcome)
        assert len(scores) == len(point.candidates), (
            f"{cls.__name__} returned {len(scores)} scores for {len(point.candidates)} candidates"
        )
        for s in scores:
            if isinstance(s, Failed):
                assert s.reason, f"{cls.__name__}: a Failed score must say why"
            else:
                assert isinstance(s, (int, float)) and math.isfinite(s), (
                    f"{cls.__name__} returned a non-finite or non-numeric score: {scores}"
                )
        again = second.score_batch([point])[0]
        assert not isinstance(again, BaseException) and list(again) == scores, (
            f"{cls.__name__} is not deterministic for a fixed seed"
        )


def check_policy(cls, model, max_new_tokens: int = 24) -> None:
    """A policy's drafts keep greedy decoding token-identical to AR (the engine guarantees it if drafts are
    valid token ids), and its drafter proposes in-vocabulary token ids."""
    from .decode.engine import Engine
    from .decode.policies import DecodePolicy

    _check_common(cls, DecodePolicy)
    if cls.served_only:  # it configures a server: it must say what the server needs, and refuse to draft itself
        from .backends.served import PolicyNotServable

        policy = cls(cls.Params.model_validate(cls.example_params))
        assert isinstance(policy.served_config("openai"), dict), "a served-only policy configures the openai backend"
        try:
            policy.drafter(model)
        except (ValueError, PolicyNotServable):
            return
        raise AssertionError(f"{cls.__name__} is served-only but built a drafter")
    policy = cls(cls.Params())
    drafter = policy.drafter(model)
    engine = Engine(model.model, model.eos_token_ids)
    prompt = list(model.tokenizer("List the colours of the rainbow, then list them again: red, orange,")["input_ids"])
    if drafter is not None:
        draft = drafter.propose(prompt)
        vocab = model.model.config.vocab_size
        assert all(isinstance(t, int) and 0 <= t < vocab for t in draft.tokens), "drafts must be token ids"
    ar = engine.decode(engine.prefill(prompt), None, max_new_tokens)
    out = engine.decode(engine.prefill(prompt), drafter, max_new_tokens)
    assert out.token_ids == ar.token_ids, f"{cls.__name__} is not lossless at T=0"
    assert sum(out.accepted_per_step) + out.target_steps + 1 >= len(out.token_ids), "acceptance bookkeeping is off"


def check_env(cls) -> None:
    from .qalign.envs.base import Environment

    _check_common(cls, Environment)
    import numpy as np

    env = cls(cls.Params())
    q = env.reference_q(0.95)
    rng = np.random.default_rng(0)
    state = env.reset(rng)
    for _ in range(5):  # a short walk: every visited state has a finite Q row over its legal actions
        actions = env.actions(state)
        assert actions and all(isinstance(a, str) for a in actions), "actions(state) must be non-empty text"
        row = np.asarray(q[state], dtype=float)
        assert row.shape == (len(actions),), "reference_q[state] must have one value per legal action"
        assert np.isfinite(row).all(), "reference Q must be finite"
        assert isinstance(env.describe(state), str) and env.task(state), (
            "an env must describe states and its task in text"
        )
        state, _, done = env.step(state, int(np.argmax(row)), rng)
        if done:
            break


def check_dataset(cls) -> None:
    from .decode.datasets import Dataset

    _check_common(cls, Dataset)
    samples = cls(cls.Params()).samples()
    assert samples, f"{cls.__name__} yields no samples"
    ids = [s.sample_id for s in samples]
    assert len(set(ids)) == len(ids), "sample ids must be unique (they are the resume key)"
    assert all(s.turns and all(isinstance(t, str) and t for t in s.turns) for s in samples), "turns must be text"


def check_metric(cls) -> None:
    from .store.tables import SAMPLE_TABLES

    assert issubclass(cls, Metric) and cls.name and cls.track in SAMPLE_TABLES, f"{cls!r} is not a Metric"
    assert cls.label, f"{cls.__name__} needs a label saying what the number is"


def check_plugin(kind: str, cls) -> None:
    """Dispatch on the plugin kind (used by qval's own contract test over every registered plugin)."""
    from .decode.policies import DecodePolicy

    checks = {
        "scorers": check_scorer,
        "envs": check_env,
        "datasets": check_dataset,
        "metrics": check_metric,
        "policies": lambda c: _check_common(c, DecodePolicy),
    }  # check_policy needs a model: see its docstring
    if kind in checks:
        checks[kind](cls)
    else:
        assert isinstance(cls, type) and getattr(cls, "name", None), f"{cls!r} needs a name"


__all__ = ["check_dataset", "check_env", "check_metric", "check_plugin", "check_policy", "check_scorer"]
