"""A cell: one point of a suite's grid (model x method x dataset x temperature x seed), named by the hash of
everything that changes its outputs. Tracks build their cells with ``make_cell``."""

from __future__ import annotations

from dataclasses import dataclass

from .identity import IDENTITY_VERSION, content_hash

# The family of a method whose outputs differ by design from those of the exact method it speeds up (a lossy
# decoding policy, e.g. Medusa's typical acceptance): every table shows it, its lossless metric is undefined, the
# headroom analysis leaves it out, and the speed-vs-quality figure marks it.
LOSSY_FAMILY = "lossy"


@dataclass
class Cell:
    cell_id: str
    track: str  # the track (qval.tracks) whose sample table holds its rows
    model: str | None  # display name; None for methods that use no model
    model_identity: dict | None
    method: str  # scorer or policy name
    method_params: dict
    family: str
    dataset: str  # env or dataset name
    dataset_params: dict
    temperature: float | None  # None only for imported cells whose source recorded none
    seed: int | None
    settings: dict  # track-level knobs that change outputs
    baseline_cell_id: str | None = None

    dataset_label: str = ""  # display only: the name plus its non-default params (and the limit, if any)
    # The method class's ``adaptive`` flag (a policy that chooses per instance what a knob sweep fixes), recorded at
    # planning so that a report need not import the policy's code (and torch) to know it; None in plans written
    # before it was recorded. Not part of the cell's identity.
    adaptive: bool | None = None

    @property
    def limit(self) -> int | None:
        """At most this many samples (points, prompts), the first ones in the dataset's order; None: all."""
        return self.settings.get("limit")


# The fields of a cell that record its method class's traits (planned, not measured): the cells table stores them,
# but they say nothing of a cell's samples, so the report's cache keys leave them out.
TRAITS = ("adaptive",)


def _label(name: str, params: dict, defaults: dict) -> str:
    """``frozenlake(map=8x8)``: non-default params only, so two configurations stay apart without noise."""

    def show(v):
        return "+".join(map(str, v)) if isinstance(v, (list, tuple)) else str(v)

    shown = {k: v for k, v in sorted(params.items()) if defaults.get(k, object()) != v}
    return name + ("(" + ",".join(f"{k}={show(v)}" for k, v in shown.items()) + ")" if shown else "")


def make_cell(
    track: str,
    model: str | None,
    model_identity: dict | None,
    method_cls,
    method_params,
    dataset_cls,
    dataset_params,
    temperature: float,
    seed: int,
    settings: dict,
    limit: int | None = None,
) -> Cell:
    """The one place a sample limit (`qval run --limit N`) enters a cell: its settings, so its id differs from the
    full cell's (a first look is never taken for the full result, nor the full run for done), and its label, so
    every table says so. Unlimited cells carry no key, so their ids are unchanged."""
    if limit is not None:
        settings = {**settings, "limit": limit}
    identity = {
        "v": IDENTITY_VERSION,
        "track": track,
        "model": model_identity,
        "method": {"name": method_cls.name, "version": method_cls.version, "params": method_params},
        "dataset": {"name": dataset_cls.name, "version": dataset_cls.version, "params": dataset_params},
        "temperature": temperature,
        "seed": seed,
        "settings": settings,
    }
    return Cell(
        cell_id=content_hash(identity),
        track=track,
        model=model,
        model_identity=model_identity,
        method=method_cls.name,
        method_params=method_params,
        family=getattr(method_cls, "family", "policy"),
        adaptive=bool(getattr(method_cls, "adaptive", False)),
        dataset=dataset_cls.name,
        dataset_params=dataset_params,
        temperature=temperature,
        seed=seed,
        settings=settings,
        dataset_label=_label(dataset_cls.name, dataset_params, dataset_cls.Params().model_dump())
        + (f" limit={limit}" if limit is not None else ""),
    )
