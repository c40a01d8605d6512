"""Typed plugin registry with lazy discovery through entry points.

Every plugin kind has one entry-point group (``qval.<kind>``). Entries are read at first use and kept
*unloaded*: ``qval list`` never imports torch. Built-in plugins are declared in qval's own pyproject, exactly
as a third-party package declares its own, so there is one discovery path for everything.

One name per plugin: the entry-point name is the plugin's name. A class may leave out ``name`` (``get`` sets it) or
repeat it; a class whose own ``name`` says otherwise is refused by ``get`` and reported by ``qval plugins``, so
everything keyed by ``cls.name`` (cells, shards, the worker's lookups) is keyed by the entry-point name.
"""

from __future__ import annotations

import importlib
import os
import re
import threading
from dataclasses import asdict, dataclass, field
from importlib import metadata
from typing import Any

from .errors import PluginError

KINDS = ("scorers", "policies", "envs", "datasets", "models", "metrics", "runners", "tracks")
AUTOLOAD_SWITCH = "QVAL_DISABLE_PLUGIN_AUTOLOAD"  # set to 1 to load qval's own plugins only
# Spelled out: dropping the last letter makes "policie" of "policies".
_SINGULAR = {
    "scorers": "scorer",
    "policies": "policy",
    "envs": "env",
    "datasets": "dataset",
    "models": "model",
    "metrics": "metric",
    "runners": "runner",
    "tracks": "track",
}


def singular(kind: str) -> str:
    """One plugin of this kind, for messages: 'policies' → 'policy'."""
    return _SINGULAR.get(kind, kind)


@dataclass
class PluginEntry:
    kind: str
    name: str
    target: str  # "package.module:Object"
    distribution: str
    version: str
    _obj: Any = field(default=None, repr=False)
    _error: str | None = field(default=None, repr=False)

    def load(self) -> Any:
        """Import the plugin object; a failure is a hard error naming the plugin and its distribution."""
        if self._obj is None:
            module_name, _, attr = self.target.partition(":")
            try:
                obj = importlib.import_module(module_name)
                for part in attr.split(".") if attr else []:
                    obj = getattr(obj, part)
            except Exception as exc:  # any import-time failure of third-party code
                self._error = f"{type(exc).__name__}: {exc}"
                raise PluginError(
                    f"{singular(self.kind)} plugin '{self.name}' from {self.distribution} {self.version} "
                    f"failed to load ({self.target}): {self._error}"
                ) from exc
            self._obj = obj
        return self._obj

    def listing(self) -> dict[str, Any]:
        """What `qval list` shows (and --json prints): a description and the params of a plugin that imports; for
        one that does not, ``error`` says why and there is nothing else to show."""
        error = self.check()
        obj = None if error else self.load()
        return {
            "kind": self.kind,
            "name": self.name,
            "distribution": self.distribution,
            "version": self.version,
            "description": (describe(obj) or None) if obj is not None else None,
            "params": [asdict(p) for p in param_specs(obj)] if obj is not None else None,
            "error": error,
        }

    def check(self) -> str | None:
        """Try to load; return the error text instead of raising (for listings)."""
        try:
            self.load()
        except PluginError:
            return self._error
        return None


def _name_and_version(dist: metadata.Distribution | None, named: dict[int, tuple[object, str, str]]) -> tuple[str, str]:
    if dist is None:
        return "unknown", "?"
    # By identity: the entry points of one distribution share its object, which the entry keeps alive (so that no
    # other object can take its id).
    if id(dist) not in named:
        named[id(dist)] = (dist, dist.name, dist.version)
    _, name, version = named[id(dist)]
    return name, version


class Registry:
    """All plugin kinds, discovered once per process from entry-point groups."""

    def __init__(self) -> None:
        self._entries: dict[str, dict[str, PluginEntry]] | None = None
        self._lock = threading.Lock()

    def _discover(self) -> dict[str, dict[str, PluginEntry]]:
        with self._lock:
            if self._entries is not None:
                return self._entries
            only_builtin = os.environ.get(AUTOLOAD_SWITCH, "") not in ("", "0")
            entries: dict[str, dict[str, PluginEntry]] = {k: {} for k in KINDS}
            seen: set[tuple[str, str, str]] = set()
            # A distribution's name and version, read once: each read parses its METADATA (qval's holds the whole
            # README), and per entry point that was a third of a second of every command's start.
            named: dict[int, tuple[object, str, str]] = {}
            declared = metadata.entry_points()  # every distribution's, read once for all kinds
            for kind in KINDS:
                for ep in declared.select(group=f"qval.{kind}"):
                    dist, version = _name_and_version(ep.dist, named)
                    if only_builtin and dist != "qval":
                        continue
                    # The same distribution can be visible twice on sys.path (editable + site); not a clash.
                    key = (kind, ep.name, dist)
                    if key in seen:
                        continue
                    seen.add(key)
                    if ep.name in entries[kind]:
                        other = entries[kind][ep.name]
                        raise PluginError(
                            f"{singular(kind)} name '{ep.name}' is declared twice: by {other.distribution} "
                            f"{other.version} ({other.target}) and by {dist} {version} ({ep.value}); "
                            "uninstall one of them or rename the entry point"
                        )
                    entries[kind][ep.name] = PluginEntry(kind, ep.name, ep.value, dist, version)
            self._entries = entries
            return entries

    def reset(self) -> None:
        """Forget discovered entries (after installing a plugin into the running interpreter)."""
        with self._lock:
            self._entries = None

    def register(self, kind: str, name: str, obj: Any, distribution: str = "local") -> None:
        """Register an object directly (tests, ``--plugin`` files). Clashes are errors here too."""
        entries = self._discover()[self._kind(kind)]
        if name in entries:
            raise PluginError(f"{singular(kind)} name '{name}' is already registered by {entries[name].distribution}")
        entry = PluginEntry(kind, name, f"<object {obj!r}>", distribution, "-")
        entry._obj = obj
        entries[name] = entry

    def unregister(self, kind: str, name: str) -> None:
        self._discover()[self._kind(kind)].pop(name, None)

    def _kind(self, kind: str) -> str:
        if kind not in KINDS:
            raise PluginError(f"unknown plugin kind '{kind}'; choose one of: {', '.join(KINDS)}")
        return kind

    def names(self, kind: str) -> list[str]:
        return sorted(self._discover()[self._kind(kind)])

    def entries(self, kind: str | None = None) -> list[PluginEntry]:
        kinds = [self._kind(kind)] if kind else list(KINDS)
        found = self._discover()
        return [found[k][n] for k in kinds for n in sorted(found[k])]

    def entry(self, kind: str, name: str) -> PluginEntry:
        entries = self._discover()[self._kind(kind)]
        if name not in entries:
            close = close_matches(name, entries)
            hint = f"; did you mean {close}?" if close else f"; known: {', '.join(sorted(entries)) or 'none'}"
            raise PluginError(f"unknown {singular(kind)} '{name}'{hint}")
        return entries[name]

    def find(self, spec: str) -> PluginEntry:
        """The plugin named ``NAME`` or ``KIND:NAME`` (needed only when two kinds share the name)."""
        kind, sep, name = spec.rpartition(":")
        if sep:
            return self.entry(kind, name)
        found = [e for e in self.entries() if e.name == name]
        if len(found) == 1:
            return found[0]
        if found:
            kinds = ", ".join(f"{e.kind}:{name}" for e in found)
            raise PluginError(f"'{name}' names plugins of several kinds; say which: {kinds}")
        close = close_matches(name, {e.name for e in self.entries()})
        raise PluginError(f"no plugin is called '{name}'" + (f"; did you mean {close}?" if close else ""))

    def get(self, kind: str, name: str) -> Any:
        entry = self.entry(kind, name)
        obj = entry.load()
        problem = self.name_problem(entry)
        if problem:
            raise PluginError(problem)
        return obj

    def name_problem(self, entry: PluginEntry) -> str | None:
        """Why the loaded plugin's own ``name`` disagrees with its entry-point name, or None. Loads the plugin (an
        import failure raises PluginError). A class that declares no name of its own (an empty one, or only its base
        class's) gets the entry-point name here.

        Metrics: a metric's ``name`` is also the column it writes, so a metric may carry the name of another
        metric of a *different* track (the same column computed from another table, e.g. per_state_spearman of
        imported per-state rows)."""
        obj = entry.load()
        if isinstance(obj, type) and hasattr(obj, "name") and not obj.__dict__.get("name"):
            obj.name = entry.name  # type: ignore[attr-defined]  # the entry point is the one place it is written
            return None
        declared = getattr(obj, "name", None)
        if not isinstance(declared, str) or declared == entry.name:
            return None
        if entry.kind == "metrics" and self._other_track_metric(entry, obj, declared):
            return None
        return (
            f"{singular(entry.kind)} plugin '{entry.name}' from {entry.distribution} {entry.version} is "
            f"{entry.target} whose `name` is {declared!r}: the entry-point name is the plugin's name, so set "
            f"the class's `name` to {entry.name!r} or leave it out"
        )

    def _other_track_metric(self, entry: PluginEntry, obj: Any, declared: str) -> bool:
        other = self._discover()["metrics"].get(declared)
        if other is None or other is entry or other.check() is not None:
            return False
        return getattr(other.load(), "track", None) != getattr(obj, "track", None)


def close_matches(name: str, options) -> str:
    """Up to two quoted names like ``name`` (for "did you mean …?"), or ''."""
    import difflib

    return ", ".join(f"'{m}'" for m in difflib.get_close_matches(name, list(options), n=2))


REGISTRY = Registry()


# -- what `qval list` says about a plugin ---------------------------------------------------------------------------
@dataclass(frozen=True)
class ParamSpec:
    """One field of a plugin's ``Params`` model, as `qval list --params` shows it."""

    name: str
    type: str
    required: bool
    default: Any  # None when required (or when None is the default: see ``required``)
    constraints: str  # "≥ 1, ≤ 64", or ''
    description: str  # the field's ``Field(description=...)``, or ''


def params_text(params: list[dict] | None) -> str:
    """A listing's params, one per line: ``num_draft: int = 4  [≥ 1, ≤ 64]``; '(none)' or '–' (did not import)."""
    if params is None:
        return "–"
    lines = []
    for p in params:
        text = f"{p['name']}: {p['type']}" + (" (required)" if p["required"] else f" = {p['default']!r}")
        lines.append(
            text
            + (f"  [{p['constraints']}]" if p["constraints"] else "")
            + (f"  {p['description']}" if p["description"] else "")
        )
    return "\n".join(lines) or "(none)"


NO_DOCSTRING = "(no description: the class has no docstring)"
DESCRIPTION_CHARS = 160  # one table line's worth; the docstring itself is one `help()` away
# A sentence ends at a full stop followed by a capital: "et al. 2023", "e.g. The" and "i.e. Spec" do not end one.
_SENTENCE_END = re.compile(r"(?<!\be\.g)(?<!\bi\.e)\.\s+(?=[A-Z`(\"'])")


def describe(obj: Any) -> str:
    """One line about a loaded plugin ('' when it has none): the first sentence of its own docstring's first
    paragraph (a wrapped first line alone would stop mid-sentence). A base class's docstring says nothing about the
    plugin, so only the class's own counts; a metric without one falls back to its ``label``, which says what the
    number is."""
    own = obj.__dict__.get("__doc__") if isinstance(obj, type) else getattr(obj, "__doc__", None)
    text = own if isinstance(own, str) and own.strip() else getattr(obj, "label", "")
    if not isinstance(text, str) or not text.strip():
        return ""
    paragraph = " ".join(text.strip().split("\n\n")[0].split())
    end = _SENTENCE_END.search(paragraph)
    sentence = paragraph[: end.start() + 1] if end else paragraph
    if len(sentence) <= DESCRIPTION_CHARS:
        return sentence
    return sentence[: DESCRIPTION_CHARS - 1].rsplit(" ", 1)[0] + "…"


def param_specs(obj: Any) -> list[ParamSpec]:
    """The fields of a plugin's ``Params`` pydantic model with types, defaults and bounds ([] for a plugin that takes
    none, such as metrics)."""
    from pydantic import BaseModel

    params = getattr(obj, "Params", None)
    if not (isinstance(params, type) and issubclass(params, BaseModel)):
        return []
    specs = []
    for name, info in params.model_fields.items():
        required = info.is_required()
        default = None if required else info.get_default(call_default_factory=True)
        specs.append(
            ParamSpec(
                name,
                _type_name(info.annotation),
                required,
                default,
                _constraints(info.metadata),
                info.description or "",
            )
        )
    return specs


def _type_name(annotation: Any) -> str:
    if isinstance(annotation, type) and not getattr(annotation, "__args__", None):
        return annotation.__name__
    return str(annotation).replace("typing.", "")


_BOUNDS = {"ge": "≥", "gt": ">", "le": "≤", "lt": "<", "min_length": "min length", "max_length": "max length"}


def _constraints(metadata: list) -> str:
    """pydantic keeps ``Field(ge=1, le=64, pattern=...)`` as annotated-types objects; show them the way they read."""
    parts = []
    for item in metadata:
        for attr, symbol in _BOUNDS.items():
            if getattr(item, attr, None) is not None:
                parts.append(f"{symbol} {getattr(item, attr)}")
        if getattr(item, "pattern", None):
            parts.append(f"matches {item.pattern}")
    return ", ".join(parts)
