"""The building blocks of a suite's schema that tracks share: strict models, plugin references and the fields every
track section has. A track's own section (qval.tracks.Track.Section) subclasses ``TrackSection``."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PluginRef(Strict):
    name: str = Field(min_length=1)
    params: dict[str, Any] = Field(default_factory=dict)


def as_refs(value):
    """A list entry written as a bare name (``- oracle-q``) is a reference without params."""
    if isinstance(value, list):
        return [{"name": v} if isinstance(v, str) else v for v in value]
    return value


# A section's list of plugins (a track's ``axes``), each entry a name or {name, params}.
PluginRefs = Annotated[list[PluginRef], BeforeValidator(as_refs)]


def check_temperatures(values: list[float]) -> list[float]:
    for t in values:
        if not (0.0 <= t <= 10.0):
            raise ValueError(f"temperature {t} is out of range [0, 10]")
    if len(set(values)) != len(values):
        raise ValueError("temperatures repeat")
    return values


class TrackSection(Strict):
    """What every track's section has: a temperature axis, the metrics to report and the one to rank by."""

    temperatures: list[float] = Field(default_factory=lambda: [0.0], min_length=1)
    metrics: list[str] = Field(min_length=1)
    main_metric: str

    @field_validator("temperatures")
    @classmethod
    def _temps(cls, value):
        return check_temperatures(value)
