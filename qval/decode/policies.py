"""Decoding policies (entry-point group ``qval.policies``). A policy only proposes drafts; the engine verifies.

Policies never read a clock: the harness times prefill and decode around the engine.
"""
from __future__ import annotations

from typing import ClassVar

from pydantic import BaseModel, ConfigDict, Field, model_validator

from ..plugin_base import Plugin
from .engine import Draft, Drafter


class DecodePolicy(Plugin):
    family: ClassVar[str] = "policy"

    def __init__(self, params):
        self.params = params

    def drafter(self, model) -> Drafter | None:
        """Build the drafter for a loaded target model; None means plain autoregressive decoding."""
        raise NotImplementedError


class AutoregressivePolicy(DecodePolicy):
    """The baseline every speedup is measured against: one target forward per token, KV cache, same engine."""

    name = "ar"
    family = "baseline"

    def drafter(self, model):
        return None


class PromptLookupParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    num_draft: int = Field(default=4, ge=1, le=64)
    max_ngram: int = Field(default=3, ge=1, le=16)
    min_ngram: int = Field(default=1, ge=1, le=16)

    @model_validator(mode="after")
    def _order(self):
        if self.min_ngram > self.max_ngram:
            raise ValueError("min_ngram must be <= max_ngram")
        return self


class NgramDrafter:
    """Prompt lookup (Saxena 2023): find the latest earlier occurrence of the trailing n-gram, draft what followed.

    Longest n first; the most recent match wins, as in transformers' prompt_lookup_num_tokens.
    """

    def __init__(self, num_draft: int, max_ngram: int, min_ngram: int):
        self.k, self.max_n, self.min_n = num_draft, max_ngram, min_ngram

    def propose(self, context: list[int]) -> Draft:
        length = len(context)
        for n in range(min(self.max_n, length - 1), self.min_n - 1, -1):
            tail = context[length - n:]
            first = tail[0]
            # Scan right to left; start positions end before the tail itself.
            for start in range(length - n - 1, -1, -1):
                if context[start] == first and context[start:start + n] == tail:
                    follow = context[start + n:start + n + self.k]
                    if follow:
                        return Draft(follow)
        return Draft([])


class PromptLookupPolicy(DecodePolicy):
    name = "prompt-lookup"
    family = "n-gram"
    Params = PromptLookupParams

    def drafter(self, model):
        return NgramDrafter(self.params.num_draft, self.params.max_ngram, self.params.min_ngram)
