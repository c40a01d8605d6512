"""``entropy-switch``: LOSSY. The draft model's tokens stand while the target is sure; the target speaks when it
is not (Entropy Adaptive Decoding)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from ..cell import LOSSY_FAMILY
from .engine import Draft
from .policies import DecodePolicy, DraftModelParams, DraftModelPolicy


class EntropySwitchParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    # The draft model: as draft-model's (an int8 copy of the target on CPU, or an HF folder sharing its tokenizer).
    draft: Literal["int8", "path"] = "int8"
    path: str | None = None
    num_draft: int = Field(default=4, ge=1, le=64)
    # Entropy (nats) of the target's distribution at a position below which the draft's token stands unverified.
    # 0 never lets a draft token stand: every token is the target's own, i.e. plain AR decoding's.
    threshold: float = Field(default=0.5, ge=0.0)

    @model_validator(mode="after")
    def _path(self):
        if (self.draft == "path") != (self.path is not None):
            raise ValueError("give 'path' exactly when draft is 'path'")
        return self


def entropy(logits, temperature: float) -> float:
    """Entropy in nats of softmax(logits / T) at T > 0, of softmax(logits) at T = 0, computed in float64."""
    import torch

    logp = torch.log_softmax(logits.double() / (temperature if temperature > 0 else 1.0), dim=-1)
    return float(-(logp.exp() * logp).sum())


class EntropySwitchDrafter:
    """A draft model's chain, judged by the target's entropy (``accept``, which the engine calls in place of its
    lossless verification): a draft token stands iff the target's entropy at its position is below the threshold,
    whatever token the target would have chosen there."""

    def __init__(self, inner, threshold: float):
        self.inner, self.threshold = inner, threshold
        if hasattr(inner, "reset"):
            self.reset = inner.reset

    def propose(self, context: list[int], temperature: float = 0.0, generator=None) -> Draft:
        return self.inner.propose(context, temperature, generator)

    def accept(self, logits, token: int, temperature: float) -> bool:
        return entropy(logits, temperature) < self.threshold


class EntropySwitchPolicy(DecodePolicy):
    """LOSSY. Entropy Adaptive Decoding (Simonds 2025, "Entropy Adaptive Decoding: Dynamic Model Switching for
    Efficient Inference"): a small model generates while the prediction is easy, and generation
    switches to the large model where uncertainty (entropy) is high. Here the draft model (an int8 copy of the
    target by default) drafts ``num_draft`` tokens; each one stands UNVERIFIED while the target's entropy at its
    position is below ``threshold`` (nats), and at the first position where it is not, the target's own token is
    emitted (argmax at T = 0, AR's sample at T > 0, the coupled sample under coupled sampling) and drafting starts
    again after it. Outputs follow a different distribution from the target's: quality is measured
    (``task_accuracy``), never assumed, and ``lossless`` is undefined for it. ``threshold: 0`` lets no draft
    token stand, so every token is the target's own: plain AR's output.

    Where qval's version differs from the paper:
    - the switch reads the TARGET's entropy at each drafted position, where the paper reads the small model's own
      (a rolling average over a window) and runs the large model only after a switch. The target's forward still
      runs over every draft here (the engine keeps the target's KV cache in step through it), so the saving is in
      sequential target steps (several tokens per target forward), not in target FLOPs;
    - there is no window, no hysteresis and no minimum span of large-model tokens after a switch: each position is
      judged on its own and drafting resumes right after the target's token;
    - the small model is qval's draft model (an int8 copy of the target, or a folder sharing its tokenizer), not a
      smaller member of the same family as in the paper's pairs.
    """

    name = "entropy-switch"
    family = LOSSY_FAMILY
    Params = EntropySwitchParams

    def drafter(self, model):
        p = self.params
        inner = DraftModelPolicy(DraftModelParams(draft=p.draft, path=p.path, num_draft=p.num_draft)).drafter(model)
        return EntropySwitchDrafter(inner, p.threshold)
