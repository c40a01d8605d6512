"""Suite files: strict YAML validation and expansion of the grid into cells.

Every error names the file, the field and the reason (``SuiteError``); nothing is written before a suite validates.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, get_args

import yaml
from pydantic import BaseModel, Field, ValidationError, create_model, field_validator

from .errors import PluginError, SuiteError
from .overrides import Origin, OverrideProblem, apply_overrides
from .registry import REGISTRY, close_matches
from .section import PluginRef, Strict
from .tracks import Track, all_tracks, board_kinds

NAME_RE = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"  # suite names become file names: no path separators


class ModelRef(Strict):
    source: str = Field(min_length=1)
    name: str | None = Field(default=None, pattern=NAME_RE)  # display alias; defaults to the source
    params: dict[str, Any] = Field(default_factory=dict)


class SuiteConfig(Strict):
    """What every suite has; suite_model() adds one optional section per installed track (qval.tracks)."""

    name: str = Field(pattern=NAME_RE)
    description: str = ""
    seeds: list[int] = Field(default_factory=lambda: [0], min_length=1)
    # Optional: a suite of model-free methods needs none; _resolve names the methods that do when it is missing.
    models: list[ModelRef] = Field(default_factory=list)

    @field_validator("models", mode="before")
    @classmethod
    def _models(cls, value):
        if isinstance(value, list):
            return [{"source": v} if isinstance(v, str) else v for v in value]
        return value

    @field_validator("seeds")
    @classmethod
    def _seeds(cls, values):
        if any(s < 0 for s in values):
            raise ValueError("seeds must be >= 0")
        if any(s > MAX_SEED for s in values):  # the results database stores seeds as INTEGER
            raise ValueError(f"seeds must be <= {MAX_SEED} (a 32-bit integer)")
        if len(set(values)) != len(values):
            raise ValueError("seeds repeat")
        return values


_MODELS: dict[tuple[str, ...], type[SuiteConfig]] = {}


def suite_model() -> type[SuiteConfig]:
    """SuiteConfig with an optional section per installed track, keyed by the track's name (built once per set of
    tracks): a suite is validated strictly, and a mistyped section name gets "did you mean" like any key."""
    tracks = all_tracks()
    key = tuple(t.name for t in tracks)
    if key not in _MODELS:
        fields: dict[str, Any] = {t.name: (t.Section | None, None) for t in tracks}
        _MODELS[key] = create_model("SuiteConfig", __base__=SuiteConfig, **fields)
    return _MODELS[key]


class Suite:
    """A validated suite: its config, resolved plugin classes and parsed params."""

    def __init__(self, path: Path, config: SuiteConfig, text: str):
        self.path, self.config = path, config
        self.sha = hashlib.sha256(text.encode()).hexdigest()[:16]
        self.models: list[tuple[str, Any]] = []  # (display name, ModelSource instance)
        self.resolved: dict[str, list[tuple[PluginRef, type, Any]]] = {}

    @property
    def name(self) -> str:
        return self.config.name

    def sections(self) -> list[tuple[Track, Any]]:
        """(track, its section) for every track section the suite has, in report order."""
        return [(t, s) for t in all_tracks() if (s := getattr(self.config, t.name, None)) is not None]


MAX_SEED = 2**31 - 1
MAX_SUITE_BYTES = 1_000_000  # a suite is a page of YAML, not a data file
MAX_YAML_NODES = 100_000  # nodes after alias expansion: a "billion laughs" document stops here
MAX_CELLS = 100_000  # cells one suite may expand to (QVAL_MAX_CELLS overrides): a typo in a grid is refused


class _StrictLoader(yaml.SafeLoader):
    """A safe loader that refuses duplicate keys (YAML says they are an error; PyYAML keeps the last one). The size
    after alias expansion is bounded before construction, by ``_count_nodes``."""

    def construct_mapping(self, node, deep=False):
        seen: dict = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            try:
                hash(key)
            except TypeError:
                continue  # the base constructor reports unhashable keys
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    "while constructing a mapping",
                    node.start_mark,
                    f"duplicate key {key!r} (first at line {seen[key] + 1}, again at line "
                    f"{key_node.start_mark.line + 1})",
                    key_node.start_mark,
                )
            seen[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep)


def _count_nodes(node, budget=MAX_YAML_NODES) -> int:
    """Nodes of the composed document counted with aliases expanded, stopping at the budget (an alias bomb is a
    small tree of shared nodes that expands exponentially)."""
    memo: dict[int, int] = {}

    def count(n) -> int:
        if id(n) in memo:
            return memo[id(n)]
        total = 1
        if isinstance(n, yaml.SequenceNode):
            for child in n.value:
                total += count(child)
                if total > budget:
                    break
        elif isinstance(n, yaml.MappingNode):
            for k, v in n.value:
                total += count(k) + count(v)
                if total > budget:
                    break
        memo[id(n)] = total
        return total

    return count(node)


def _parse_yaml(text: str):
    loader = _StrictLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        if _count_nodes(node) > MAX_YAML_NODES:
            raise yaml.constructor.ConstructorError(
                None, None, f"the document expands to more than {MAX_YAML_NODES} values (aliases?)", node.start_mark
            )
        return loader.construct_document(node)
    finally:
        loader.dispose()


def load_suite(path: str | Path, sets: Sequence[str] = (), models: Sequence[str] = ()) -> Suite:
    """Read, override (``--set PATH=VALUE``, ``--model NAME``: see qval.overrides), validate and resolve a suite."""
    path = Path(path)
    if not path.is_file():
        raise SuiteError(path, "<file>", "no such file")
    if path.stat().st_size > MAX_SUITE_BYTES:
        raise SuiteError(path, "<file>", f"larger than {MAX_SUITE_BYTES} bytes; a suite is a short YAML file")
    try:
        text = path.read_text(encoding="utf-8")
        data = _parse_yaml(text)
    except UnicodeDecodeError:
        raise SuiteError(path, "<file>", "not UTF-8 text") from None
    except RecursionError:
        raise SuiteError(path, "<file>", "invalid YAML: nested too deeply") from None
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        line = f" at line {where.line + 1}" if where is not None else ""
        raise SuiteError(path, "<file>", f"invalid YAML{line}: {getattr(exc, 'problem', exc)}") from None
    if not isinstance(data, dict):
        raise SuiteError(path, "<file>", "a suite must be a YAML mapping")
    origins: list[Origin] = []
    try:
        data, origins = apply_overrides(data, sets, models, _parse_yaml)
        model = suite_model()
        config = model.model_validate(data)
        names = [t.name for t in all_tracks()]
        if not any(getattr(config, name, None) is not None for name in names):
            raise SuiteError(path, "/".join(names), f"a suite needs at least one track section ({' or '.join(names)})")
        # The overrides are part of what was run: the recorded suite hash covers them.
        flags = [f"--model {m}" for m in models] + [f"--set {s}" for s in sets]
        suite = Suite(path, config, text + "".join(f"\n# {f}" for f in flags))
        _resolve(suite)
    except OverrideProblem as exc:
        raise SuiteError(path, exc.field, exc.reason) from None
    except ValidationError as exc:
        raise SuiteError.of(path, _from_flags(_problems(exc, "", suite_model()), origins)) from None
    except SuiteError as exc:
        raise SuiteError.of(path, _from_flags(exc.problems, origins)) from None
    _check_grid_size(suite)
    return suite


def _from_flags(problems: Problems, origins: list[Origin]) -> Problems:
    """Problems caused by a command-line override say which flag: the file alone would not explain them."""
    out = []
    for field, reason in problems:
        flags = [o.flag for o in origins if o.covers(field)]
        out.append((field, reason + (f" (from {', '.join(flags)})" if flags else "")))
    return out


def _check_grid_size(suite: Suite) -> None:
    """Refuse a grid too large to plan before expanding it (the product of the axes is cheap to compute)."""
    limit = int(os.environ.get("QVAL_MAX_CELLS", MAX_CELLS))
    cfg = suite.config
    models, seeds = max(1, len(cfg.models)), len(cfg.seeds)  # a model-free suite: one cell per grid point
    total = sum(track.grid_size(section, models, seeds) for track, section in suite.sections())
    if total > limit:
        raise SuiteError(
            suite.path,
            "<grid>",
            f"expands to about {total:,} cells, above the limit of {limit:,}; "
            "shrink the grid or set QVAL_MAX_CELLS to allow it",
        )


def _problems(exc: ValidationError, prefix: str, model: type[BaseModel] | None) -> list[tuple[str, str]]:
    """Every problem pydantic found, as (field, reason); an unknown key gets the closest field names of the model it
    was found in (``model``: the one validated), as unknown plugin names do."""
    out = []
    for err in exc.errors():
        loc = (prefix + _loc(err["loc"])).rstrip(".")
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown key"
            close = close_matches(str(err["loc"][-1]), _fields_at(model, err["loc"][:-1])) if err["loc"] else ""
            if close:
                msg += f"; did you mean {close}?"
        elif err["type"] == "missing":
            msg = "required field is missing"
        out.append((loc or "<root>", msg))
    return out


def _fields_at(model: type[BaseModel] | None, loc) -> list[str]:
    """Field names of the (nested) model at ``loc``, or [] where the path leaves models (a dict, a union tag)."""
    for part in loc:
        if model is None:
            return []
        if isinstance(part, int):
            continue
        field = model.model_fields.get(part)
        model = _model_in(field.annotation) if field is not None else None
    return list(model.model_fields) if model is not None else []


def _model_in(annotation) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in get_args(annotation):  # X | None, list[X]
        found = _model_in(arg)
        if found is not None:
            return found
    return None


def _loc(parts) -> str:
    out = ""
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out


Problems = list[tuple[str, str]]  # (field, reason): _resolve gathers them all, so one run shows every typo


def _resolve(suite: Suite) -> None:
    """Check every plugin name and its params; keep the resolved classes for planning."""
    cfg, path = suite.config, suite.path
    problems: Problems = []
    for i, ref in enumerate(cfg.models):
        source = _model_source(problems, f"models[{i}]", ref)
        if source is not None:
            suite.models.append((ref.name or ref.source, source))
    names = [n for n, _ in suite.models]
    if len(set(names)) != len(names):
        problems.append(("models", "two models share a name; give each a distinct 'name'"))
    for track_plugin, section in suite.sections():
        track = track_plugin.name
        for axis, kind in track_plugin.axes.items():
            resolved = []
            for i, ref in enumerate(getattr(section, axis)):
                cls = _load(problems, f"{track}.{axis}[{i}].name", kind, ref.name)
                params = _params(problems, f"{track}.{axis}[{i}].params", cls, ref.params)
                if cls is not None and params is not None:
                    resolved.append((ref, cls, params))
            keys = [(r.name, repr(sorted(p.model_dump().items()))) for r, _, p in resolved]
            if len(set(keys)) != len(keys):
                problems.append((f"{track}.{axis}", "the same entry appears twice"))
            suite.resolved[f"{track}.{axis}"] = resolved
        known, metric_classes = [], []
        for i, metric in enumerate(section.metrics):
            metric_cls = _load(problems, f"{track}.metrics[{i}]", "metrics", metric)
            # A track's board shows cells of several kinds (e.g. guided episodes beside Q-alignment's points).
            if metric_cls is not None and metric_cls.track not in board_kinds(track):
                problems.append((f"{track}.metrics[{i}]", f"metric '{metric}' belongs to the {metric_cls.track} track"))
            elif metric_cls is not None:
                known.append(metric)
                metric_classes.append((i, metric, metric_cls))
        problems.extend(track_plugin.problems(suite, section, metric_classes))
        # A mistyped metric also makes the default main_metric "unlisted": fixing the typo fixes both, so one line.
        if section.main_metric not in section.metrics and len(known) == len(section.metrics):
            close = close_matches(section.main_metric, known)
            hint = f"; did you mean {close}?" if close else ""
            problems.append((f"{track}.main_metric", f"'{section.main_metric}' is not one of {track}.metrics{hint}"))
    if not cfg.models:
        problems.extend(_needs_a_model(suite))
    if problems:
        raise SuiteError.of(path, problems)


def _needs_a_model(suite: Suite) -> Problems:
    """A suite without models runs only what needs none: name each entry that does (each track says which)."""
    needs = [need for track, section in suite.sections() for need in track.needs_model(suite, section)]
    if not needs:
        return []
    return [
        (
            "models",
            f"no models, but {'; '.join(needs)} need{'s' if len(needs) == 1 else ''} one: list one under `models:` "
            "in the suite (e.g. smollm2-135m-instruct) or pass --model NAME (methods such as oracle-q and random "
            "need none)",
        )
    ]


def _model_source(problems: Problems, where: str, ref: ModelRef):
    """The model source of one ``models`` entry, or None with its problems recorded. A source that names something
    missing (a model folder) is refused here, at plan time, rather than by a worker once the run has started."""
    cls = _load(problems, f"{where}.source", "models", ref.source)
    params = _params(problems, f"{where}.params", cls, ref.params)
    if cls is None or params is None:
        return None
    try:
        source = cls(params)
    except ValueError as exc:  # a source's own check of how its params combine
        problems.append((f"{where}.params", str(exc)))
        return None
    problem = source.check_source()
    if problem is not None:
        problems.append((f"{where}.params.{problem[0]}", problem[1]))
        return None
    return source


def _load(problems: Problems, field: str, kind: str, name: str):
    try:
        return REGISTRY.get(kind, name)
    except PluginError as exc:
        problems.append((field, str(exc)))
        return None


def _params(problems: Problems, field: str, cls, params: dict):
    if cls is None:
        return None
    try:
        return cls.Params.model_validate(params)
    except ValidationError as exc:
        problems.extend(_problems(exc, field + ".", cls.Params))
        return None
