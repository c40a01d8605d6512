"""DEL (Zarch et al. 2025, "DEL: Context-Aware Dynamic Exit Layer for Efficient Self-Speculative Decoding",
arXiv:2504.05598): self-speculation from the target's first ℓ layers where the exit layer ℓ and the draft length d
are chosen on the fly from the acceptance observed per layer.

After every verification the engine hands over the target's hidden states (``observe_step`` with
``wants_hidden_states``). For each candidate exit layer ℓ, the "shadow token" at a verified position is what the
first ℓ layers would have drafted there: argmax of the final norm and LM head applied to the residual stream after ℓ
layers (exactly the logits of ``first_layers_view(target, ℓ)``, tested). Positions up to the first rejection are
the ones whose context is the real one; there, the shadow token either equals the token the step emitted or not.
Exponentially decayed counts of matches over trials give a running acceptance estimate α_ℓ per layer, and the next
draft uses the (ℓ, d) maximising DEL's token-per-layer criterion

    TPL(ℓ, d) = E[tokens per round] / layers run per round = ((1 − α_ℓ^(d+1)) / (1 − α_ℓ)) / (d·ℓ + L),

L the target's depth: d draft steps of ℓ layers, one verification of all L layers, and (1 − α^(d+1)) / (1 − α)
tokens emitted per round when each draft token is accepted with probability α independently (d + 1 when α = 1).
"""

from __future__ import annotations

import torch
from pydantic import BaseModel, ConfigDict, Field, field_validator

from .engine import Draft
from .policies import DecodePolicy


class DynamicExitParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    # Candidate exit layers (of SmolLM2's 30 by default); each must be below the target's depth.
    layers: list[int] = Field(default_factory=lambda: [8, 12, 16, 20, 24], min_length=1, max_length=64)
    max_draft: int = Field(default=6, ge=1, le=32)
    # Weight of the past in the running acceptance estimates, per verification (1: plain cumulative counts).
    decay: float = Field(default=0.9, gt=0.0, le=1.0)
    # Every layer starts as if it had matched prior_accept of prior_weight shadow tokens.
    prior_accept: float = Field(default=0.5, ge=0.0, le=1.0)
    prior_weight: float = Field(default=2.0, gt=0.0)

    @field_validator("layers")
    @classmethod
    def _layers(cls, layers: list[int]) -> list[int]:
        if any(layer < 1 for layer in layers):
            raise ValueError("exit layers count decoder layers from 1")
        if len(set(layers)) != len(layers):
            raise ValueError("exit layers must be distinct")
        return sorted(layers)


def expected_tokens(alpha: float, draft: int) -> float:
    """Tokens one round emits on average when each of ``draft`` tokens is accepted with probability ``alpha``
    independently, the target's own token included: Σ_{i=0..d} α^i."""
    return float(sum(alpha**i for i in range(draft + 1)))


def tokens_per_layer(alpha: float, layer: int, draft: int, total_layers: int) -> float:
    """DEL's token-per-layer criterion for exit layer ``layer`` and draft length ``draft``."""
    return expected_tokens(alpha, draft) / (draft * layer + total_layers)


def best_exit(alphas: dict[int, float], total_layers: int, max_draft: int) -> tuple[int, int]:
    """The (exit layer, draft length) maximising ``tokens_per_layer`` over the candidates and d = 1..max_draft;
    ties go to the shallower layer, then to the shorter draft."""
    best: tuple[float, int, int] | None = None
    for layer in sorted(alphas):
        for draft in range(1, max_draft + 1):
            score = tokens_per_layer(alphas[layer], layer, draft, total_layers)
            if best is None or score > best[0]:
                best = (score, layer, draft)
    if best is None:
        raise ValueError("no candidate exit layer")
    return best[1], best[2]


class DynamicExitDrafter:
    """Drafts with the chosen exit layer's view of the target (one ``ModelDrafter``, with its own KV cache, per
    candidate layer: a layer not used for a while catches up on the context in one forward when chosen again), and
    re-chooses (ℓ, d) after every verification from the shadow tokens (module docstring). ``choices`` records the
    (ℓ, d) of every round of the current generation."""

    wants_hidden_states = True

    def __init__(self, target, params: DynamicExitParams):
        from .drafters import ModelDrafter, first_layers_view

        self.total = int(target.config.num_hidden_layers)
        self.layers = list(params.layers)
        self.views = {layer: ModelDrafter(first_layers_view(target, layer), 1) for layer in self.layers}
        self.norm, self.head = target.model.norm, target.lm_head
        self.params = params
        self.reset()

    def reset(self) -> None:
        # DEL adapts to each input's context: every generation starts from the prior again, so a sample's choices
        # do not depend on the prompts decoded before it.
        for view in self.views.values():
            view.reset()
        p = self.params
        self.matches = torch.full((len(self.layers),), p.prior_accept * p.prior_weight, dtype=torch.float64)
        self.trials = torch.full((len(self.layers),), p.prior_weight, dtype=torch.float64)
        self.choice = best_exit(self.alphas(), self.total, p.max_draft)
        self.choices: list[tuple[int, int]] = []

    def alphas(self) -> dict[int, float]:
        return {layer: float(m / t) for layer, m, t in zip(self.layers, self.matches, self.trials, strict=True)}

    def propose(self, context: list[int], temperature: float = 0.0, generator=None) -> Draft:
        layer, draft = self.choice
        self.choices.append(self.choice)
        view = self.views[layer]
        view.k = draft
        return view.propose(context, temperature, generator)

    @torch.inference_mode()
    def observe_step(self, emitted: list[int], hidden_states) -> None:
        # hidden_states[ℓ][0, i] is the residual stream after ℓ layers at fed position i; the fed tokens up to the
        # first rejection are the real context, and emitted[i] is the token that followed fed token i.
        n = len(emitted)
        stream = torch.stack([hidden_states[layer][0, :n] for layer in self.layers])  # layers × n × hidden
        shadow = self.head(self.norm(stream)).argmax(dim=-1).cpu()  # what each exit layer would have drafted
        matched = (shadow == torch.tensor(emitted)).sum(dim=1).to(torch.float64)
        decay = self.params.decay
        self.matches = decay * self.matches + matched
        self.trials = decay * self.trials + n
        self.choice = best_exit(self.alphas(), self.total, self.params.max_draft)


class DynamicExitPolicy(DecodePolicy):
    """DEL (Zarch et al. 2025, "DEL: Context-Aware Dynamic Exit Layer for Efficient Self-Speculative Decoding",
    arXiv:2504.05598, COLM 2025): self-speculative decoding from the target's first ℓ layers (``layer-skip`` is the
    static baseline) where the exit layer ℓ and the draft length d are re-chosen after every verification: shadow
    tokens (the final norm and LM head on each candidate layer's hidden state at the verified positions) give a
    running acceptance estimate per layer, and (ℓ, d) maximises DEL's token-per-layer criterion
    ((1 − α_ℓ^(d+1)) / (1 − α_ℓ)) / (d·ℓ + L). Lossless: drafts are verified by the engine as any other.

    Where qval's version differs from the paper:
    - the candidates are a few exit layers (``layers``, default 8, 12, 16, 20, 24 of SmolLM2's 30), not every
      layer, and shadow tokens are computed for those only;
    - shadow tokens come from the verification forward's hidden states only (the engine's ``observe_step``
      hook); DEL also reuses the draft phase's, and it caches hidden states across rounds;
    - α_ℓ is a match rate over the verified positions with exponentially decayed counts (``decay``) from a prior
      (``prior_accept``, ``prior_weight``), reset for every generation; DEL's estimator differs in detail;
    - no dynamic draft exiting (DEL's confidence-based stop within a round): d is fixed per round by the
      criterion;
    - the draft runs the first ℓ layers with a KV cache of its own per candidate layer, where LayerSkip/DEL share
      the target's cache for those layers; and the cost model counts layers as DEL does (a verification of d + 1
      tokens as L layers), which on a CPU underestimates the cost of verifying longer drafts.
    """

    name = "dynamic-exit"
    family = "self-speculative"
    adaptive = True  # picks its exit layer per step: the report's captured share compares it with layer-skip's sweep
    Params = DynamicExitParams

    def sweep_target(self) -> tuple[str, str]:
        """The sweep whose per-instance oracle it tries to reach: ``layer-skip`` at fixed exit layers."""
        return "layer-skip", "layers"

    def drafter(self, model):
        total = int(model.model.config.num_hidden_layers)
        too_deep = [layer for layer in self.params.layers if layer >= total]
        if too_deep:
            raise ValueError(f"exit layers must be below the target's {total} layers, got {too_deep}")
        return DynamicExitDrafter(model.model, self.params)
