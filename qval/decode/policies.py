"""Decoding policies (entry-point group ``qval.policies``). A policy only proposes drafts; the engine verifies.

Policies never read a clock: the harness times prefill and decode around the engine.
"""
from __future__ import annotations

from typing import ClassVar, Literal

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

    def propose(self, context: list[int], temperature: float = 0.0, generator=None) -> Draft:
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


class DraftModelParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    draft: Literal["int8", "path"] = "int8"  # int8: a dynamically quantised copy of the target (CPU)
    path: str | None = None  # an HF folder sharing the target's tokenizer, when draft = "path"
    num_draft: int = Field(default=4, ge=1, le=64)
    stop_threshold: float = Field(default=0.0, ge=0.0, lt=1.0)  # > 0: stop drafting below this confidence

    @model_validator(mode="after")
    def _path(self):
        if (self.draft == "path") != (self.path is not None):
            raise ValueError("give 'path' exactly when draft is 'path'")
        return self


class DraftModelPolicy(DecodePolicy):
    """Classic speculative decoding with a separate draft model (Leviathan et al. 2023; Chen et al. 2023)."""

    name = "draft-model"
    family = "draft-model"
    Params = DraftModelParams

    def drafter(self, model):
        from .drafters import ModelDrafter, int8_copy

        if self.params.draft == "int8":
            draft = int8_copy(model.model)
        else:
            from transformers import AutoModelForCausalLM

            draft = AutoModelForCausalLM.from_pretrained(self.params.path, dtype=model.model.dtype)
            draft = draft.to(model.device).eval()
        return ModelDrafter(draft, self.params.num_draft, self.params.stop_threshold)


class AdaptiveDraftParams(DraftModelParams):
    stop_threshold: float = Field(default=0.6, gt=0.0, lt=1.0)
    num_draft: int = Field(default=8, ge=1, le=64)


class AdaptiveDraftPolicy(DraftModelPolicy):
    """Draft length chosen on the fly: drafting stops once the draft model's confidence drops (SpecDec++/PEARL)."""

    name = "adaptive-draft"
    family = "adaptive"
    Params = AdaptiveDraftParams


class LayerSkipParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    layers: int = Field(default=20, ge=1)
    num_draft: int = Field(default=4, ge=1, le=64)
    stop_threshold: float = Field(default=0.0, ge=0.0, lt=1.0)


class LayerSkipPolicy(DecodePolicy):
    """Self-speculative early exit: the draft is the target's own first ``layers`` layers, weights shared."""

    name = "layer-skip"
    family = "self-speculative"
    Params = LayerSkipParams

    def drafter(self, model):
        from .drafters import ModelDrafter, first_layers_view

        return ModelDrafter(first_layers_view(model.model, self.params.layers), self.params.num_draft,
                            self.params.stop_threshold)


class JacobiParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    num_draft: int = Field(default=4, ge=1, le=64)


class JacobiPolicy(DecodePolicy):
    """Jacobi (parallel fixed-point) decoding expressed as draft-and-verify; needs no draft model."""

    name = "jacobi"
    family = "parallel"
    Params = JacobiParams

    def drafter(self, model):
        from .drafters import JacobiDrafter

        return JacobiDrafter(self.params.num_draft)
