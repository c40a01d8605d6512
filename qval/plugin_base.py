"""What every plugin class shares: a name, a version that enters cell identity, and strict pydantic params."""

from __future__ import annotations

from typing import ClassVar

from pydantic import BaseModel, ConfigDict


class NoParams(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Plugin:
    """Base of scorers, policies, envs and datasets. Bump ``version`` whenever outputs change for the same params."""

    name: ClassVar[str] = ""
    version: ClassVar[str] = "1"
    Params: ClassVar[type[BaseModel]] = NoParams
