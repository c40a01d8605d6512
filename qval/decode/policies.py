"""Decoding policies (entry-point group ``qval.policies``). A policy only proposes drafts; the engine verifies.

Policies never read a clock: the harness times prefill and decode around the engine.
"""

from __future__ import annotations

import math
from typing import ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from ..cell import LOSSY_FAMILY
from ..plugin_base import Plugin
from .engine import Draft, Drafter


class DecodePolicy(Plugin):
    # LOSSY_FAMILY marks a policy that changes the output distribution: labelled so in every table, no lossless
    # value, and the contract test does not require AR's tokens from it.
    family: ClassVar[str] = "policy"
    # True for policies that only describe a serving engine's configuration (no drafter of their own);
    # ``example_params`` then gives the contract test valid params.
    served_only: ClassVar[bool] = False
    example_params: ClassVar[dict] = {}

    def __init__(self, params):
        self.params = params

    def drafter(self, model) -> Drafter | None:
        """Build the drafter for a loaded target model; None means plain autoregressive decoding."""
        raise NotImplementedError

    def served_config(self, backend: str):
        """What a serving engine needs to decode with this policy (vLLM: its ``speculative_config``; None means
        plain decoding). Policies without an equivalent raise PolicyNotServable, which fails their cell only."""
        from ..backends.served import PolicyNotServable

        raise PolicyNotServable(f"policy {self.name!r} cannot run on the {backend} backend")


class AutoregressivePolicy(DecodePolicy):
    """The baseline every speedup is measured against: one target forward per token, KV cache, same engine."""

    name = "ar"
    family = "baseline"

    def drafter(self, model):
        return None

    def served_config(self, backend: str):
        return None


class PromptLookupParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    num_draft: int = Field(default=4, ge=1, le=64)
    max_ngram: int = Field(default=3, ge=1, le=16)
    min_ngram: int = Field(default=1, ge=1, le=16)
    # Which earlier occurrence of the trailing n-gram to copy from: the most recent (transformers'
    # prompt_lookup_num_tokens) or the earliest (vLLM's n-gram proposer; the vLLM backend uses this rule).
    match: Literal["latest", "earliest"] = "latest"

    @model_validator(mode="after")
    def _order(self):
        if self.min_ngram > self.max_ngram:
            raise ValueError("min_ngram must be <= max_ngram")
        return self


class NgramDrafter:
    """Prompt lookup (Saxena 2023): find the latest earlier occurrence of the trailing n-gram, draft what followed.

    Longest n first; then the most recent match (transformers' prompt_lookup_num_tokens) or the earliest one
    (vLLM 0.32's NgramProposer, ``_find_longest_matched_ngram_and_propose_tokens``), as ``match`` says.
    """

    def __init__(self, num_draft: int, max_ngram: int, min_ngram: int, match: str = "latest"):
        self.k, self.max_n, self.min_n, self.match = num_draft, max_ngram, min_ngram, match

    def propose(self, context: list[int], temperature: float = 0.0, generator=None) -> Draft:
        length = len(context)
        for n in range(min(self.max_n, length - 1), self.min_n - 1, -1):
            tail = context[length - n :]
            first = tail[0]
            # Start positions end before the tail itself, so at least one token follows a match.
            starts = range(length - n - 1, -1, -1) if self.match == "latest" else range(0, length - n)
            for start in starts:
                if context[start] == first and context[start : start + n] == tail:
                    follow = context[start + n : start + n + self.k]
                    if follow:
                        return Draft(follow)
        return Draft([])


class PromptLookupPolicy(DecodePolicy):
    """Prompt lookup (Saxena 2023): drafts the tokens that followed an earlier occurrence of the trailing n-gram in the
    prompt and output so far; no draft model.

    Drafting costs no forward pass; the longest n-gram (``max_ngram`` down to ``min_ngram``) that recurs wins, and up to
    ``num_draft`` tokens are copied. ``match: latest`` copies from the most recent occurrence (transformers'
    ``prompt_lookup_num_tokens``), ``match: earliest`` from the first (vLLM's n-gram proposer); on the vLLM backend only
    ``earliest`` is accepted, so the policy means the same on both."""

    name = "prompt-lookup"
    family = "n-gram"
    Params = PromptLookupParams

    def drafter(self, model):
        return NgramDrafter(self.params.num_draft, self.params.max_ngram, self.params.min_ngram, self.params.match)

    def served_config(self, backend: str):
        from ..backends.served import PolicyNotServable

        if backend != "vllm":
            return super().served_config(backend)
        if self.params.match != "earliest":
            raise PolicyNotServable(
                "vLLM's n-gram proposer copies the EARLIEST earlier occurrence of the n-gram; "
                "set `match: earliest` so the policy means the same on both backends"
            )
        return {
            "method": "ngram",
            "num_speculative_tokens": self.params.num_draft,
            "prompt_lookup_max": self.params.max_ngram,
            "prompt_lookup_min": self.params.min_ngram,
        }


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
        from .drafters import ModelDrafter, load_draft_model

        draft = load_draft_model(model, self.params.draft, self.params.path)
        return ModelDrafter(draft, self.params.num_draft, self.params.stop_threshold)

    def served_config(self, backend: str):
        from ..backends.served import PolicyNotServable

        if backend != "vllm":
            return super().served_config(backend)
        if self.params.draft != "path" or self.params.stop_threshold > 0:
            raise PolicyNotServable(
                "vLLM runs a draft model given by path, with a fixed draft length (draft: path, stop_threshold: 0)"
            )
        return {"method": "draft_model", "model": self.params.path, "num_speculative_tokens": self.params.num_draft}


class AdaptiveDraftParams(DraftModelParams):
    stop_threshold: float = Field(default=0.6, gt=0.0, lt=1.0)
    num_draft: int = Field(default=8, ge=1, le=64)


class AdaptiveDraftPolicy(DraftModelPolicy):
    """Draft length chosen on the fly: drafting stops once the draft model's confidence drops (SpecDec++/PEARL)."""

    name = "adaptive-draft"
    family = "adaptive"
    Params = AdaptiveDraftParams

    def sweep_target(self) -> tuple[str, str]:
        """The sweep whose per-instance oracle it tries to reach (the report's captured share): a fixed draft
        length of the same draft model."""
        return "draft-model", "num_draft"


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

        return ModelDrafter(
            first_layers_view(model.model, self.params.layers), self.params.num_draft, self.params.stop_threshold
        )


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


class TypicalAcceptanceParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    # Where the drafts come from: one of qval's lossless drafters, at its default settings but num_draft.
    drafter: Literal["prompt-lookup", "draft-model", "layer-skip"] = "prompt-lookup"
    num_draft: int = Field(default=4, ge=1, le=64)
    # Medusa's posterior_threshold ε and posterior_alpha δ (its defaults: 0.09 and √0.09 = 0.3).
    epsilon: float = Field(default=0.09, gt=0.0, le=1.0)
    delta: float = Field(default=0.3, gt=0.0, le=1.0)


class TypicalAcceptanceDrafter:
    """Another drafter's proposals, judged by Medusa's typical-acceptance rule (``accept``, which the engine calls
    instead of its lossless verification)."""

    def __init__(self, inner, epsilon: float, delta: float):
        self.inner, self.epsilon, self.delta = inner, epsilon, delta
        if hasattr(inner, "observe"):
            self.observe = inner.observe
        if hasattr(inner, "reset"):
            self.reset = inner.reset

    def propose(self, context: list[int], temperature: float = 0.0, generator=None) -> Draft:
        return self.inner.propose(context, temperature, generator)

    def accept(self, logits, token: int, temperature: float) -> bool:
        """p(token) > min(ε, δ·exp(−H(p))), p the target's distribution at this position: softmax(logits / T) at
        T > 0, softmax(logits) at T = 0 (where Medusa verifies greedily instead)."""
        import torch

        logp = torch.log_softmax(logits.double() / (temperature if temperature > 0 else 1.0), dim=-1)
        p = logp.exp()
        entropy = float(-(p * logp).sum())
        return float(p[token]) > min(self.epsilon, self.delta * math.exp(-entropy))


class TypicalAcceptancePolicy(DecodePolicy):
    """LOSSY. Medusa's typical acceptance (Cai et al. 2024, "Medusa: Simple LLM Inference Acceleration Framework
    with Multiple Decoding Heads", §2.3.1): a draft token x is accepted when the target gives it probability
    p(x) > min(ε, δ·exp(−H(p))), H the entropy of the target's distribution at that position; the longest accepted
    prefix is kept. Outputs follow a different distribution from the target's: quality is measured
    (``task_accuracy``), never assumed, and ``lossless`` is undefined for it.

    Where qval's version differs from the paper:
    - drafts come from one of qval's drafters (prompt lookup by default, or the draft model or layer-skip) as one
      chain, not from Medusa heads proposing a tree of candidates;
    - at T = 0 Medusa falls back to greedy exact-match verification (lossless); qval applies the rule to the
      untempered distribution softmax(logits) at every temperature, so the policy is lossy at T = 0 too (a draft
      equal to the argmax is always accepted, since max p ≥ exp(−H));
    - after the accepted drafts the target's own token is AR's (argmax at T = 0, a sample from softmax(logits/T)
      at T > 0, the coupled sample under coupled sampling), where the paper takes the greedy token.
    """

    name = "typical-acceptance"
    family = LOSSY_FAMILY
    Params = TypicalAcceptanceParams

    def drafter(self, model):
        inner: Drafter
        if self.params.drafter == "prompt-lookup":
            inner = NgramDrafter(self.params.num_draft, PromptLookupParams().max_ngram, PromptLookupParams().min_ngram)
        elif self.params.drafter == "draft-model":
            inner = DraftModelPolicy(DraftModelParams(num_draft=self.params.num_draft)).drafter(model)
        else:
            inner = LayerSkipPolicy(LayerSkipParams(num_draft=self.params.num_draft)).drafter(model)
        return TypicalAcceptanceDrafter(inner, self.params.epsilon, self.params.delta)


class TokenRecyclingParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    top_k: int = Field(default=8, ge=1, le=32)  # candidates kept per token (the matrix's width)
    num_nodes: int = Field(default=32, ge=1, le=256)  # draft tree size (tokens verified per step besides the root)
    max_depth: int = Field(default=6, ge=1, le=16)
    carry_over: bool = True  # keep the matrix across generations, as the paper does (its "hot start")


class TokenRecyclingPolicy(DecodePolicy):
    """Token Recycling (Luo et al. 2024, "Turning Trash into Treasure", arXiv:2408.08696): the target's top-k
    candidates at every position it verifies, rejected branches included, are kept in a vocabulary × k adjacency
    matrix; each step expands the matrix from the pending token into a static draft tree, verified in one forward
    with tree attention. No draft model, no training; lossless.

    Where qval's version differs from the paper: the static tree is not the paper's hand-tuned one but the
    ``num_nodes`` paths of highest prior Π 0.5^(rank + 1), at most ``max_depth`` deep (``recycling.static_tree``);
    the matrix is int32 with -1 for rows never seen (the paper does not say how it starts), updated from the verify
    forwards only (qval's prefill keeps the last position's logits alone); at T > 0 the tree is verified with
    SpecInfer's multi-round speculative sampling (or coupled exact match), where the paper reports greedy
    decoding. ``carry_over: false`` empties the matrix before every generation, so a sample's τ does not depend on
    the prompts decoded before it (with the default, as in the paper, it does, warm-up generations included)."""

    name = "token-recycling"
    family = "tree"
    Params = TokenRecyclingParams

    def drafter(self, model):
        from .recycling import TokenRecyclingDrafter, static_tree

        p = self.params
        vocab = int(model.model.get_output_embeddings().weight.shape[0])
        template = static_tree(p.num_nodes, p.max_depth, p.top_k)
        return TokenRecyclingDrafter(vocab, p.top_k, template, p.carry_over)


class ServedParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    base_url: str = Field(pattern=r"^https?://")  # an OpenAI-compatible server that decodes speculatively
    label: str = Field(min_length=1, max_length=200)  # what it runs, e.g. "vllm ngram k=4" (part of the cell id)


class ServedPolicy(DecodePolicy):
    """Whatever a running server does, measured against the model's own (plain) server as the AR baseline.

    For ``source: openai`` models only: qval cannot see inside the server, so the label says what it runs and the
    server's per-request speculative-decoding counters (vLLM: ``--per-request-spec-decode-metrics detailed``) give
    the acceptance numbers.
    """

    name = "served"
    family = "served"
    Params = ServedParams
    served_only = True
    example_params = {"base_url": "http://127.0.0.1:8000/v1", "label": "vllm ngram k=4"}

    def drafter(self, model):
        raise ValueError("the 'served' policy measures a running server; use it with a `source: openai` model")

    def served_config(self, backend: str):
        if backend != "openai":
            return super().served_config(backend)
        return {"base_url": self.params.base_url}
