"""``qval train-selector``: fit the learned-length policy's selector on a sweep that ``qval export-sweeps`` wrote.

The model is ``selector.py``'s multinomial logistic regression (the one the offline replay cross-validates), fit
once on every sample of the sweep that has features and a value at every candidate; each sample's label is its
argmax candidate (ties → the smaller value). The file names those samples, so the live policy can refuse them.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

from ..errors import UsageError
from . import replay
from .learned_length import KNOB_ATTRIBUTES, SELECTOR_FORMAT, SelectorFile
from .selector import _argmax_smaller, _fit_logreg

METRICS = ("speedup", "tau")


def sweep_folders(root: Path, metric: str) -> list[tuple[str, Path]]:
    """(policy.knob, folder) of every exported sweep under ``root`` with values of ``metric``."""
    found = []
    for meta_file in sorted(root.rglob(replay.META_FILE)):
        if meta_file.parent.name != metric:
            continue
        try:
            meta = json.loads(meta_file.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            continue
        if isinstance(meta, dict) and meta.get("policy") and meta.get("knob"):
            found.append((f"{meta['policy']}.{meta['knob']}", meta_file.parent))
    return found


def find_sweep(root: Path, name: str, metric: str) -> Path:
    """The one exported sweep folder that ``name`` designates: ``policy.knob`` (e.g. prompt-lookup.num_draft), or
    a path under ``root`` to the sweep's folder or its metric folder."""
    if not root.is_dir():
        raise UsageError(f"{root} is not a folder: pass the folder `qval export-sweeps --out` wrote")
    if metric not in METRICS:
        raise UsageError(f"--metric takes {' or '.join(METRICS)}, not {metric!r}")
    sweeps = sweep_folders(root, metric)
    matches = [
        folder
        for label, folder in sweeps
        if name in (label, folder.parent.name, str(folder.relative_to(root)), str(folder.parent.relative_to(root)))
    ]
    if len(matches) == 1:
        return matches[0]
    if not sweeps:
        raise UsageError(f"no exported {metric} sweep under {root}: run `qval export-sweeps --out {root}` first")
    listed = "\n".join(f"  {label}  ({folder.parent.relative_to(root)})" for label, folder in sweeps)
    if not matches:
        raise UsageError(f"no sweep named {name!r} under {root}; its {metric} sweeps:\n{listed}")
    raise UsageError(f"{name!r} names {len(matches)} sweeps under {root}; pass one's folder instead:\n{listed}")


def _folder_sha256(folder: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.iterdir() if p.is_file()):
        digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def dataset_name(label: str) -> str:
    """The dataset plugin's name in a report label such as ``spec-bench(categories=…) limit=4``."""
    match = re.match(r"[^( ]+", label)
    return match.group(0) if match else label


def train(folder: Path, l2: float = 1.0) -> SelectorFile:
    """Fit the selector on one exported sweep folder (a metric folder: B*.json, features.json, sweep.json)."""
    try:
        sweep = replay.load_sweep(folder)
        meta = json.loads((folder / replay.META_FILE).read_text(encoding="utf-8"))
    except (ValueError, OSError) as exc:
        raise UsageError(f"{folder}: {exc}") from None
    if (meta["policy"], meta["knob"]) not in KNOB_ATTRIBUTES:
        known = ", ".join(f"{p}.{k}" for p, k in KNOB_ATTRIBUTES)
        raise UsageError(f"learned-length cannot set {meta['policy']}.{meta['knob']}; train on a sweep of {known}")
    if sweep.features is None:
        raise UsageError(f"{folder} has no {replay.FEATURES_FILE}: the sweep's cells stored no prefill features")
    names = list(meta.get("features") or [])
    if names != list(sweep.features.columns):
        raise UsageError(f"{folder}: sweep.json does not name the {sweep.features.shape[1]} features")
    cands = list(sweep.sizes)
    table = sweep.table[cands].dropna()
    ids = [i for i in table.index if i in set(sweep.features.index)]
    if len(ids) < 2:
        raise UsageError(f"{folder}: fewer than 2 samples have features and a value at every setting {cands}")
    X = sweep.features.loc[ids].to_numpy(float)
    values = table.loc[ids].to_numpy(float)
    y = _argmax_smaller(values)
    with threadpool_limits(limits=1, user_api="blas"):  # as selector.py: L-BFGS's tiny BLAS calls, one thread
        model = _fit_logreg(X, y, len(cands), l2)
    best = cands[int(np.argmax(values.mean(axis=0)))]  # ties → the smaller value, as the replay's best fixed
    doc = {
        "format": SELECTOR_FORMAT,
        "policy": meta["policy"],
        "knob": meta["knob"],
        "fixed_params": meta.get("fixed_params") or {},
        "candidates": [float(c) for c in cands],
        "fallback": float(best),
        "features": names,
        "mean": model.mu.tolist(),
        "scale": model.sd.tolist(),
        "weights": model.W.tolist(),
        "l2": float(l2),
        "trained_on": {
            "dataset": dataset_name(str(meta["dataset"])),
            "dataset_label": str(meta["dataset"]),
            "model": str(meta["model"]),
            "temperature": float(meta["temperature"]),
            "seed": int(meta["seed"]),
            "metric": folder.name,
            "sample_ids": [str(i) for i in ids],
            "sweep_sha256": _folder_sha256(folder),
            "cells": {str(k): str(v) for k, v in (meta.get("cells") or {}).items()},
        },
    }
    selector = SelectorFile.model_validate({**doc, "sha256": "0" * 64})
    selector.sha256 = selector.content_sha256()
    return selector


def write(doc: SelectorFile, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc.model_dump(), indent=1, allow_nan=False) + "\n", encoding="utf-8")
