"""Versioned prompt templates. A template's version enters the version of every scorer that uses it, so editing a
prompt means adding ``name.v2.txt`` and bumping the scorer: old cells keep their identity and their numbers."""

from __future__ import annotations

from functools import cache
from importlib import resources


@cache
def load_prompt(name: str, version: str = "v1") -> str:
    return resources.files(__name__).joinpath(f"{name}.{version}.txt").read_text(encoding="utf-8").rstrip("\n")
