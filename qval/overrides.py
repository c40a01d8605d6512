"""Command-line overrides of a suite file (`--set PATH=VALUE`, `--model NAME`), applied to the parsed YAML before
validation, so an override is checked by the same pydantic schema, with the same messages, as the file itself.

Each override remembers the field path it wrote (``Origin``): a problem found at or under that path is reported with
the flag that caused it, since the file alone would not explain it.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from .errors import UsageError

# A plugin list entry may be written as its bare name; --set reaching inside one needs the mapping it stands for.
_SHORTHAND = {"models": "source", "envs": "name", "methods": "name", "datasets": "name", "policies": "name"}
_PATH = re.compile(r"[^.\[\]\s]+(?:\.[^.\[\]\s]+|\[\d+\])*")
_PART = re.compile(r"[^.\[\]]+|\[\d+\]")


@dataclass(frozen=True)
class Origin:
    field: str  # as problems name fields: qalign.envs[0].params.map
    flag: str  # as the user typed it: --set qalign.envs.0.params.map=8x8

    def covers(self, field: str) -> bool:
        """Whether a problem at ``field`` may come from this override: the problem is at or under the overridden
        field (a bad value, an unknown key inside a mapping given as the value), above it (the unknown key the path
        itself created; a section set to null), or the override is inside the list entry the problem is in
        (``--set qalign.envs.0.name=taxi`` makes the entry's ``params.map`` an unknown key). Compared by path
        components, so ``a.0.b`` and ``a[0].b`` are one path; ``qalign/decode`` (either section) is each of them."""
        mine = _parts(self.field)
        for alternative in field.split("/"):
            theirs = _parts(alternative)
            entry = max((i + 1 for i, p in enumerate(theirs) if isinstance(p, int)), default=0)
            if _under(theirs, mine) or _under(mine, theirs) or (entry and _under(mine, theirs[:entry])):
                return True
        return False


def _parts(field: str) -> list[str | int]:
    """A field path's components, indexes as ints whichever way they were written."""
    return [int(p.strip("[]")) if p.startswith("[") or p.isdigit() else p for p in _PART.findall(field)]


def _under(path: list[str | int], prefix: list[str | int]) -> bool:
    return bool(prefix) and path[: len(prefix)] == prefix


class OverrideProblem(Exception):
    """An override that cannot be applied: (field, reason), reported like a problem of the file."""

    def __init__(self, field: str, reason: str):
        super().__init__(f"{field}: {reason}")
        self.field, self.reason = field, reason


def loc(parts: Sequence[str | int]) -> str:
    """The field path the way validation problems name it: ``qalign.envs[0].params``."""
    out = ""
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out


def parse_path(text: str) -> list[str | int]:
    """``qalign.envs.0.params.map`` or ``qalign.envs[0].params.map`` → ['qalign', 'envs', 0, 'params', 'map']."""
    if not _PATH.fullmatch(text):
        raise UsageError(
            f"--set {text!r}: not a dotted field path; write it as in the suite file, e.g. --set qalign.points.episodes=4"
        )
    return _parts(text)


def dotted(parts: Sequence[str | int]) -> str:
    """The path as --set takes it, for suggestions: ``qalign.envs.0.name``."""
    return ".".join(map(str, parts))


def apply_overrides(
    data: dict, sets: Sequence[str], models: Sequence[str], parse: Callable[[str], Any]
) -> tuple[dict, list[Origin]]:
    """A copy of the suite's data with ``--model`` (replaces ``models``) then each ``--set`` applied in order, and
    where each came from. ``parse`` reads a value as YAML (the suite loader's own strict parser)."""
    data = copy.deepcopy(data)
    origins: list[Origin] = []
    if models:
        data["models"] = []
        for i, text in enumerate(models):
            value = _value(parse, text, f"--model {text}", f"models[{i}]")
            # A mapping is a whole entry ({source: hf, params: {path: …}}); anything else is a source name.
            data["models"].append(value if isinstance(value, dict) else text)
            origins.append(Origin(f"models[{i}]", f"--model {text}"))
    for text in sets:
        path, sep, raw = text.partition("=")
        if not sep or not path.strip():
            raise UsageError(f"--set takes PATH=VALUE (e.g. --set qalign.points.episodes=4), got {text!r}")
        parts = parse_path(path.strip())
        field = loc(parts)
        value = _value(parse, raw, f"--set {text}", field)
        try:
            _put(data, parts, value, raw.strip())
        except OverrideProblem as exc:
            raise OverrideProblem(exc.field, f"{exc.reason} (from --set {text})") from None
        origins.append(Origin(field, f"--set {text}"))
    return data, origins


def _value(parse: Callable[[str], Any], raw: str, flag: str, field: str):
    try:
        return parse(raw)
    except Exception as exc:  # noqa: BLE001 - any YAML error is the user's value: say which flag
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise OverrideProblem(field, f"the value of {flag} is not valid YAML: {problem}") from None


def _put(data: dict, parts: list[str | int], value, raw: str) -> None:
    node: Any = data
    for depth, part in enumerate(parts):
        here = loc(parts[: depth + 1])
        last = depth == len(parts) - 1
        if isinstance(node, list):
            if not isinstance(part, int):
                # The index goes where the list is: qalign.envs.name → qalign.envs.0.name.
                example = dotted([*parts[:depth], 0, *parts[depth:]])
                raise OverrideProblem(loc(parts[:depth]), f"is a list: index it by position, e.g. {example}")
            if not 0 <= part < len(node):
                raise OverrideProblem(here, f"no entry {part}: the list has {len(node)} (indices from 0)")
        elif isinstance(node, dict):
            part = str(part) if isinstance(part, int) else part  # a mapping's keys are names, even 0
        else:
            raise OverrideProblem(loc(parts[:depth]), f"is a single value ({node!r}): --set cannot go inside it")
        if last:
            node[part] = value
            return
        child = node[part] if isinstance(node, list) else node.get(part)
        axis = parts[depth - 1] if isinstance(part, int) and depth else None
        if isinstance(child, str) and isinstance(axis, str) and axis in _SHORTHAND:
            child = {_SHORTHAND[axis]: child}  # `envs: [frozenlake]` entry 0 is {name: frozenlake}
        elif child is None and isinstance(parts[depth + 1], int):
            # An index into a list the file leaves out: which entries would the others be? Only the whole list says.
            raise OverrideProblem(
                here,
                f"is not in the file; set the whole list: --set {dotted(parts[: depth + 1])}={_listed(parts[depth + 2 :], raw)}",
            )
        elif child is None:
            child = {}  # a section or params mapping the file leaves out
        node[part] = child
        node = child


def _listed(rest: Sequence[str | int], raw: str) -> str:
    """The whole-list value to suggest for an absent list: ``[0.5]``, or ``[{name: x}]`` for ``models.0.name=x``."""
    if any(isinstance(p, int) for p in rest):
        return "[...]"  # a list inside the entry too: no one-line example would be the user's value
    value = raw
    for key in reversed(rest):
        value = f"{{{key}: {value}}}"
    return f"[{value}]"
