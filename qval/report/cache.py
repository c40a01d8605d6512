"""What a rebuild of a report reuses from the last build into the same folder: drill-down pages, knob-headroom
rows, the label-noise comparison and figure PNGs, each under a content key, in ``<report folder>/.cache/``.

A key is a SHA-256 over everything the cached thing is computed from: the stored data it reads (a cell's row of the
``cells`` table changes whenever ingest replaces that cell's samples: new part signature, new ``ingested_at``), the
source of the code that computes it, and the versions of the libraries that draw it. A key that matches therefore
means the same output byte for byte; anything else, including a changed template or a new matplotlib, recomputes.
A build keeps only the entries it used, so the folder never grows beyond one report's worth.

The cache of the build in progress is a context variable (``using``) rather than an argument threaded through the
report builder and every figure kind: outside ``write_reports`` (tests, ``build_report`` alone) there is none and
everything is computed fresh.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import pickle
import shutil
from collections.abc import Iterator
from contextvars import ContextVar
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

FOLDER = ".cache"
_KINDS = ("headroom", "figures", "label_noise")  # a sub-folder of entries each; pages keep a manifest (drilldown.py)


@cache
def code_version(*modules: str) -> str:
    """Digest of the source files of these modules (dotted names) or package-relative files (paths with a '/')."""
    import importlib

    h = hashlib.sha256()
    for name in modules:
        path = Path(name) if "/" in name else Path(importlib.import_module(name).__file__ or "")
        h.update(name.encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()


def _update(h, value: Any) -> None:
    """Feed a value into a digest unambiguously (type-tagged; variable-length parts prefixed with their length).
    Frames and arrays by their values (their pickles vary with how they were built)."""
    if isinstance(value, pd.DataFrame):
        # Columns of one NumPy dtype as one array, the others as one repr: a report's frames have dozens of columns,
        # and hashing them one by one costs more than the figure it keys.
        h.update(b"F")
        dtypes = [str(t) for t in value.dtypes]
        _update(h, [[str(c) for c in value.columns], dtypes])
        _update(h, value.index)
        blocks: dict[str, list[int]] = {}
        for position, dtype in enumerate(value.dtypes):
            raw = isinstance(dtype, np.dtype) and dtype.kind in _RAW
            blocks.setdefault(dtypes[position] if raw else "", []).append(position)
        for dtype, positions in sorted(blocks.items()):
            block = value.iloc[:, positions]
            if dtype:
                _update(h, block.to_numpy())
            else:
                _text(h, block.to_numpy(object).tolist())
    elif isinstance(value, (pd.Series, pd.Index)):
        h.update(b"S" + str(value.dtype).encode() + b";")
        _update(h, str(getattr(value, "name", None)))
        if isinstance(value, pd.Series):
            _update(h, value.index)
        if isinstance(value.dtype, np.dtype) and value.dtype.kind in _RAW:
            _update(h, value.to_numpy())
        else:  # text, objects, extension types: their Python values in one repr (per-item calls cost seconds)
            _text(h, value.tolist())
    elif isinstance(value, np.ndarray):
        h.update(b"A" + str((value.dtype.str, value.shape)).encode())
        if value.dtype.kind in _RAW:
            h.update(np.ascontiguousarray(value).tobytes())
        else:
            _text(h, value.tolist())
    elif isinstance(value, (list, tuple)):
        h.update(b"L" + str(len(value)).encode() + b";")
        for item in value:
            _update(h, item)
    elif isinstance(value, dict):
        h.update(b"D" + str(len(value)).encode() + b";")
        for k, v in value.items():
            _update(h, k)
            _update(h, v)
    elif dataclasses.is_dataclass(value) and not isinstance(value, type):
        h.update(b"C" + type(value).__qualname__.encode() + b";")
        for f in dataclasses.fields(value):
            _update(h, getattr(value, f.name))
    elif value is None or isinstance(value, (str, bytes, bool, int, float, np.generic, pd.Timestamp)):
        # repr is exact for these (floats round-trip, NaN and the NumPy scalar types are spelled out).
        text = repr(value).encode()
        h.update(b"V" + type(value).__name__.encode() + b":" + str(len(text)).encode() + b":" + text)
    elif value is pd.NaT or value is pd.NA:
        h.update(b"N" + repr(value).encode())
    else:
        # Anything else by its pickle: a faithful serialisation, so two different values never share a key (equal
        # values pickled differently only cost a recomputation).
        h.update(b"P" + pickle.dumps(value, protocol=5))


_RAW = "biufcmM"  # NumPy kinds whose bytes are their values


def _text(h, items: list) -> None:
    """A list of Python values by its repr: exact for the numbers, strings, None and containers of them that frames
    hold. An object whose repr leaves out part of its state would be the exception, and frames hold none."""
    text = repr(items).encode()
    h.update(b"T" + str(len(text)).encode() + b":" + text)


def key(*parts: Any) -> str:
    h = hashlib.sha256()
    for part in parts:
        _update(h, part)
    return h.hexdigest()


class ReportCache:
    """The entries of one report folder's cache; ``used`` records what this build read or wrote."""

    def __init__(self, report_folder: Path):
        self.folder = Path(report_folder) / FOLDER
        self.used: dict[str, set[str]] = {kind: set() for kind in _KINDS}

    def _path(self, kind: str, name: str) -> Path:
        return self.folder / kind / name

    def get(self, kind: str, name: str) -> bytes | None:
        self.used[kind].add(name)
        try:
            return self._path(kind, name).read_bytes()
        except FileNotFoundError:
            return None

    def put(self, kind: str, name: str, data: bytes) -> None:
        """Written to a temporary name and renamed: a killed build leaves whole entries or none."""
        self.used[kind].add(name)
        path = self._path(kind, name)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_bytes(data)
        os.replace(tmp, path)

    def get_json(self, kind: str, name: str) -> Any:
        data = self.get(kind, name + ".json")
        try:
            return None if data is None else json.loads(data)
        except ValueError:  # an entry damaged outside qval (entries are written whole): computed again
            return None

    def put_json(self, kind: str, name: str, value: Any) -> None:
        self.put(kind, name + ".json", json.dumps(value, default=_plain, allow_nan=True).encode())

    def prune(self) -> None:
        """Remove the entries this build did not use (those of cells, sweeps and figures no longer in the report)."""
        for kind, names in self.used.items():
            folder = self.folder / kind
            if not folder.is_dir():
                continue
            for path in folder.iterdir():
                if path.name not in names:
                    shutil.rmtree(path) if path.is_dir() else path.unlink()


def _plain(value: Any) -> Any:
    """NumPy scalars as the Python numbers they hold (json cannot write them)."""
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"cannot store a {type(value).__name__} in the report cache")


_ACTIVE: ContextVar[ReportCache | None] = ContextVar("qval_report_cache", default=None)


def active() -> ReportCache | None:
    """The cache of the report being written, if any."""
    return _ACTIVE.get()


@contextlib.contextmanager
def using(report_folder: Path) -> Iterator[ReportCache]:
    """Make the folder's cache active while a report is built and written; prune it after a build that finished."""
    cache_ = ReportCache(report_folder)
    token = _ACTIVE.set(cache_)
    try:
        yield cache_
    finally:
        _ACTIVE.reset(token)
    cache_.prune()
