"""Contract checks for plugin authors: ``check_scorer(MyScorer)``, ``check_policy(MyPolicy, model)``, ….

Each check returns a ``CheckReport`` listing every rule it verified (``print(check_scorer(MyScorer))``), or raises
``ContractError`` (an AssertionError) saying which rule the plugin breaks, with the rules it passed before that.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ValidationError

from .metrics.base import Metric


@dataclass
class CheckReport:
    """What one contract check verified: one line per rule the plugin passed, in the order they were checked."""

    kind: str  # "scorer", "policy", …
    plugin: str  # the class's qualified name
    passed: list[str] = field(default_factory=list)

    def ok(self, rule: str) -> None:
        self.passed.append(rule)

    def __str__(self) -> str:
        n = len(self.passed)
        head = f"{self.kind} {self.plugin}: {n} check{'' if n == 1 else 's'} passed"
        return "\n".join([head, *(f"  ok  {rule}" for rule in self.passed)])


class ContractError(AssertionError):
    """A broken rule. An AssertionError, so ``pytest`` shows it as a failed assertion; ``report`` holds the rules
    that passed before it."""

    def __init__(self, message: str, report: CheckReport):
        super().__init__(message)
        self.report = report


def _run_check(kind: str, cls: Any, body: Callable[[CheckReport], None]) -> CheckReport:
    report = CheckReport(kind, getattr(cls, "__qualname__", repr(cls)))
    try:
        body(report)
    except ContractError:
        raise
    except (AssertionError, ValidationError) as exc:
        raise ContractError(str(exc), report) from exc
    return report


def _check_common(cls: Any, base: type, report: CheckReport | None = None) -> None:
    report = report or CheckReport("plugin", getattr(cls, "__qualname__", repr(cls)))
    is_plugin = isinstance(cls, type) and issubclass(cls, base)
    assert is_plugin, f"{cls!r} must subclass {base.__name__}"
    report.ok(f"subclasses {base.__name__}")
    assert isinstance(cls.name, str), f"{cls.__name__}.name must be a string (its entry-point name, or empty)"
    report.ok(f"name is a string ({cls.name!r}; empty = set from the entry point)")
    assert isinstance(cls.version, str) and cls.version, f"{cls.__name__}.version must be a non-empty string"
    report.ok(f"version is a non-empty string ({cls.version!r}; part of cell identity)")
    assert issubclass(cls.Params, BaseModel), f"{cls.__name__}.Params must be a pydantic model"
    assert cls.Params.model_config.get("extra") == "forbid", (
        f"{cls.__name__}.Params must forbid unknown keys (model_config = ConfigDict(extra='forbid'))"
    )
    report.ok(f"Params ({cls.Params.__name__}) is a pydantic model that forbids unknown keys")
    # Every param needs a default so a suite can name the plugin alone; a plugin that cannot have defaults (a
    # served-only policy needs a server URL) gives valid example params instead.
    example = getattr(cls, "example_params", None)
    cls.Params.model_validate(example or {})
    report.ok("Params validate from " + ("its example_params" if example else "their defaults alone"))


def check_scorer(cls, model=None, n_points: int = 6, params: dict | None = None) -> CheckReport:
    """A scorer returns one finite float (or a Failed with a reason) per candidate, deterministically for a fixed
    seed. ``params`` overrides defaults (e.g. fewer tokens to keep a contract check quick)."""
    return _run_check("scorer", cls, lambda report: _scorer_rules(report, cls, model, n_points, params))


def _scorer_rules(report: CheckReport, cls, model, n_points: int, params: dict | None) -> None:
    from .qalign.envs.toy_text import FrozenLakeEnv
    from .qalign.points import collect_points
    from .qalign.scorers.base import FAMILIES, Failed, Scorer, ScorerContext, build_scorer

    _check_common(cls, Scorer, report)
    assert cls.family in FAMILIES, f"{cls.__name__}.family must be one of {FAMILIES}"
    report.ok(f"family {cls.family!r} is one of {', '.join(FAMILIES)}")
    assert not (cls.uses_model and model is None), f"{cls.__name__} uses a model: pass one to check_scorer"
    report.ok(
        f"uses_model={cls.uses_model}" + (f", checked on model {getattr(model, 'name', model)!r}" if model else "")
    )
    env = FrozenLakeEnv(FrozenLakeEnv.Params())
    points = collect_points(
        env, env.reference_q(0.95), episodes=3, epsilon=0.3, max_points_per_episode=2, max_steps=20, seed=0
    )[:n_points]
    # A scorer whose defaults are a GPU-sized run (eureka's 16 x 8 search) names CPU-sized example_params.
    example = getattr(cls, "example_params", None)
    given = params if params is not None else example or {}
    validated = cls.Params.model_validate(given)
    context = ScorerContext(env=env, model=model, seed=0, temperature=0.0)
    first, second = build_scorer(cls, validated, context), build_scorer(cls, validated, context)
    shown = "params " + (repr(given) if given else "defaults")
    report.ok(f"built twice from its Params ({shown}) and a ScorerContext (frozenlake 4x4, seed 0)")
    first.prepare(points)
    second.prepare(points)
    report.ok(f"prepare() accepted the cell's {len(points)} points")
    n_scores = n_failed = 0
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
                n_failed += 1
            else:
                assert isinstance(s, (int, float)) and math.isfinite(s), (
                    f"{cls.__name__} returned a non-finite or non-numeric score: {scores}"
                )
        n_scores += len(scores)
        again = second.score_batch([point])[0]
        assert not isinstance(again, BaseException) and list(again) == scores, (
            f"{cls.__name__} is not deterministic for a fixed seed"
        )
    report.ok(f"one score per candidate on each of {len(points)} points ({n_scores} scores, no exception)")
    report.ok(f"every score is a finite number or a Failed with a reason ({n_failed} Failed)")
    report.ok("deterministic: a second instance with the same seed gave identical scores")


def check_policy(cls, model, max_new_tokens: int = 24) -> CheckReport:
    """A policy's drafts keep greedy and coupled-sampling decoding token-identical to AR (the engine guarantees it
    if drafts are valid token ids), its drafter proposes in-vocabulary token ids, and a tree draft is well formed."""
    return _run_check("policy", cls, lambda report: _policy_rules(report, cls, model, max_new_tokens))


def _policy_rules(report: CheckReport, cls, model, max_new_tokens: int) -> None:
    from .cell import LOSSY_FAMILY
    from .decode.engine import Engine
    from .decode.policies import DecodePolicy

    _check_common(cls, DecodePolicy, report)
    if cls.served_only:  # it configures a server: it must say what the server needs, and refuse to draft itself
        from .backends.served import PolicyNotServable

        policy = cls(cls.Params.model_validate(cls.example_params))
        assert isinstance(policy.served_config("openai"), dict), "a served-only policy configures the openai backend"
        report.ok("served-only: served_config('openai') gives the server's configuration")
        try:
            policy.drafter(model)
        except (ValueError, PolicyNotServable):
            report.ok("served-only: refuses to build a drafter of its own")
            return
        raise AssertionError(f"{cls.__name__} is served-only but built a drafter")
    policy = cls(cls.Params())
    drafter = policy.drafter(model)
    report.ok("built from default Params; drafter(model) is " + ("None (plain AR)" if drafter is None else "a Drafter"))
    engine = Engine(model.model, model.eos_token_ids)
    prompt = list(model.tokenizer("List the colours of the rainbow, then list them again: red, orange,")["input_ids"])
    if drafter is not None:
        draft = drafter.propose(prompt)
        vocab = model.model.config.vocab_size
        assert all(isinstance(t, int) and 0 <= t < vocab for t in draft.tokens), "drafts must be token ids"
        report.ok(f"propose() drafts in-vocabulary token ids ({len(draft.tokens)} on the check prompt)")
        if draft.parents is not None:
            from .decode.tree import Tree

            try:
                Tree(draft.tokens, draft.parents)  # raises if a parent does not come before its child
            except ValueError as exc:
                raise AssertionError(f"{cls.__name__} proposed a malformed tree: {exc}") from exc
            assert draft.probs is None, "a tree draft is deterministic: it carries no probs"
            report.ok("tree draft: one parent per token, each parent before its children")
    ar = engine.decode(engine.prefill(prompt), None, max_new_tokens)
    out = engine.decode(engine.prefill(prompt), drafter, max_new_tokens)
    if cls.family == LOSSY_FAMILY:
        # Declared lossy: its outputs may differ from AR's by design; that it keeps the lossless rules' bookkeeping
        # is still checked below, and its quality is measured by task_accuracy.
        assert len(out.token_ids) <= max_new_tokens, f"{cls.__name__} emitted more than max_new_tokens"
        same = sum(a == b for a, b in zip(out.token_ids, ar.token_ids))
        report.ok(f"declared lossy (family {LOSSY_FAMILY!r}): not required to match AR ({same} tokens agree)")
    else:
        assert out.token_ids == ar.token_ids, f"{cls.__name__} is not lossless at T=0"
        report.ok(f"lossless at T=0: {len(out.token_ids)} tokens identical to plain AR decoding")
        coupled_ar = engine.decode(engine.prefill(prompt), None, max_new_tokens, 1.0, coupled_seed=7)
        coupled = engine.decode(engine.prefill(prompt), drafter, max_new_tokens, 1.0, coupled_seed=7)
        assert coupled.token_ids == coupled_ar.token_ids, f"{cls.__name__} is not lossless under coupled sampling"
        report.ok(f"lossless at T=1 with coupled sampling: {len(coupled.token_ids)} tokens identical to AR's")
    assert sum(out.accepted_per_step) + out.target_steps + 1 >= len(out.token_ids), "acceptance bookkeeping is off"
    report.ok(f"acceptance bookkeeping adds up ({sum(out.accepted_per_step)} accepted in {out.target_steps} steps)")


def check_env(cls) -> CheckReport:
    return _run_check("env", cls, lambda report: _env_rules(report, cls))


def _env_rules(report: CheckReport, cls) -> None:
    from .qalign.envs.base import Environment

    _check_common(cls, Environment, report)
    import numpy as np

    env = cls(cls.Params())
    q = env.reference_q(0.95)
    report.ok("built from default Params; reference_q(0.95) computed")
    rng = np.random.default_rng(0)
    state = env.reset(rng)
    steps = 0
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
        steps += 1
        if done:
            break
    report.ok(f"{steps} greedy steps: text actions, one finite reference Q per action, text state and task")


def check_dataset(cls) -> CheckReport:
    return _run_check("dataset", cls, lambda report: _dataset_rules(report, cls))


def _dataset_rules(report: CheckReport, cls) -> None:
    from .decode.datasets import Dataset

    _check_common(cls, Dataset, report)
    samples = cls(cls.Params()).samples()
    assert samples, f"{cls.__name__} yields no samples"
    ids = [s.sample_id for s in samples]
    assert len(set(ids)) == len(ids), "sample ids must be unique (they are the resume key)"
    report.ok(f"{len(samples)} samples with unique ids")
    assert all(s.turns and all(isinstance(t, str) and t for t in s.turns) for s in samples), "turns must be text"
    report.ok("every sample has non-empty text turns")


def check_metric(cls) -> CheckReport:
    return _run_check("metric", cls, lambda report: _metric_rules(report, cls))


def _metric_rules(report: CheckReport, cls) -> None:
    from .tracks import sample_tables

    assert isinstance(cls, type) and issubclass(cls, Metric), f"{cls!r} must subclass Metric"
    report.ok("subclasses Metric")
    assert cls.name, f"{cls.__name__} needs a name (the column it writes)"
    kinds = sorted(sample_tables())
    assert cls.track in kinds, f"{cls.__name__}.track must be one of {kinds} (a track's sample tables)"
    report.ok(f"name {cls.name!r} on track {cls.track!r}")
    assert cls.label, f"{cls.__name__} needs a label saying what the number is"
    report.ok("has a label saying what the number is")
    assert isinstance(cls.version, int), f"{cls.__name__}.version must be an int (bump it when the definition changes)"
    report.ok(f"version is an int ({cls.version})")
    assert isinstance(cls.reads, tuple) and all(isinstance(c, str) for c in cls.reads), (
        f"{cls.__name__}.reads must be a tuple of column names"
    )
    report.ok(f"reads {', '.join(cls.reads) if cls.reads else 'every column'}")


def check_track(cls) -> CheckReport:
    return _run_check("track", cls, lambda report: _track_rules(report, cls))


def _track_rules(report: CheckReport, cls) -> None:
    import importlib

    from .section import TrackSection
    from .tracks import Track

    assert isinstance(cls, type) and issubclass(cls, Track), f"{cls!r} must subclass qval.tracks.Track"
    report.ok("subclasses Track")
    assert issubclass(cls.Section, TrackSection) and cls.Section is not TrackSection, (
        f"{cls.__name__}.Section must be its own subclass of qval.section.TrackSection (its suite section)"
    )
    report.ok(f"declares its suite section ({cls.Section.__name__})")
    assert all(axis in cls.Section.model_fields for axis in cls.axes), f"{cls.__name__}.axes names fields of Section"
    report.ok(f"axes {', '.join(cls.axes) or 'none'} are fields of its section")
    assert cls.tables, f"{cls.__name__}.tables must declare at least one sample table"
    for table in cls.tables:
        names = set(table.schema.names)
        missing = {"cell_id", "sample_id", "error"} - names
        assert not missing, f"sample table {table.table!r} lacks {sorted(missing)} (every table has them)"
        module, _, attr = table.view.partition(":")
        view = getattr(importlib.import_module(module), attr)
        assert {"cell_id", "sample_id"} <= set(view.columns), f"the view of {table.table!r} lacks cell_id/sample_id"
        report.ok(f"sample table {table.table!r} has cell_id, sample_id, error and a metric view")
    assert cls.run is not Track.run and cls.expand is not Track.expand, f"{cls.__name__} must define expand and run"
    report.ok("defines expand and run")


def check_plugin(kind: str, cls, model=None) -> CheckReport:
    """Dispatch on the plugin kind (qval's own contract test over every registered plugin, and `qval plugins
    --check`). Policies are only checked in full with a model: without one, their declaration is."""
    from .decode.policies import DecodePolicy
    from .registry import singular

    if kind == "scorers":
        return check_scorer(cls, model)
    if kind == "policies":
        if model is not None:
            return check_policy(cls, model)
        return _run_check("policy", cls, lambda report: _check_common(cls, DecodePolicy, report))
    checks: dict[str, Callable[[Any], CheckReport]] = {
        "envs": check_env,
        "datasets": check_dataset,
        "metrics": check_metric,
        "tracks": check_track,
    }
    if kind in checks:
        return checks[kind](cls)

    def named(report: CheckReport) -> None:
        assert isinstance(cls, type) and getattr(cls, "name", None), f"{cls!r} needs a name"
        report.ok(f"is a class with a name ({cls.name!r})")

    return _run_check(singular(kind), cls, named)


def check_registered(spec: str, model_source: str = "smollm2-135m-instruct") -> tuple[CheckReport | None, str | None]:
    """`qval plugins --check [KIND:]NAME`: the contract check of an installed plugin, as (report, the broken rule or
    None). A scorer with ``uses_model`` and a policy that drafts are checked on ``model_source`` (default params,
    CPU), loaded only for them. An unknown name or a plugin that does not import raises PluginError."""
    from .registry import REGISTRY

    entry = REGISTRY.find(spec)
    cls = REGISTRY.get(entry.kind, entry.name)
    needs_model = (entry.kind == "scorers" and cls.uses_model) or (
        entry.kind == "policies" and not getattr(cls, "served_only", False)
    )
    model = None
    try:
        if needs_model:
            source = REGISTRY.get("models", model_source)
            model = source(source.Params()).load(device="cpu")
        return check_plugin(entry.kind, cls, model), None
    except ContractError as exc:
        return exc.report, str(exc)
    except Exception as exc:  # noqa: BLE001 - whatever the plugin's own code raised is the rule it broke
        return None, f"{type(exc).__name__}: {exc}"
    finally:
        if model is not None:
            model.close()


__all__ = [
    "CheckReport",
    "ContractError",
    "check_dataset",
    "check_env",
    "check_metric",
    "check_plugin",
    "check_policy",
    "check_registered",
    "check_scorer",
]
