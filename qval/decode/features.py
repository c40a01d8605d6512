"""Prefill features of one prompt: what a per-instance selector may read before decoding starts.

Two readers share these definitions: the harness, which stores ``next_token_features`` of every turn's prefill in
the sample rows (``prefill_entropy``, ``prefill_top_prob``), from which ``sweeps._features`` builds the offline
selector's feature table; and the live ``learned-length`` policy, which computes the same vector from the prefill
it is handed (``live_vector``). Every feature the offline table has is known at prefill: the target's next-token
distribution after the prompt, the prompt's length, and the sample's category (from the dataset).
"""

from __future__ import annotations

import math

import numpy as np

BASE_FEATURES = ("prefill_entropy", "prefill_top_prob", "log_prompt_tokens")
CATEGORY_PREFIX = "category="


def next_token_features(next_logits) -> dict[str, float]:
    """Entropy (nats) and top probability of the target's next-token distribution after the prompt, in float64."""
    import torch

    logp = torch.log_softmax(next_logits.double(), dim=-1)
    probs = logp.exp()
    return {"prefill_entropy": float(-(probs * logp).sum()), "prefill_top_prob": float(probs.max())}


def computable(name: str) -> bool:
    """Whether a feature of this name can be computed live at prefill."""
    return name in BASE_FEATURES or name.startswith(CATEGORY_PREFIX)


def live_vector(names: list[str], prompt_tokens: int, next_logits, category: str | None) -> np.ndarray:
    """The feature vector, in ``names`` order, of one prompt from its prefill: the same values ``sweeps._features``
    derives from the stored rows. ``category`` None (no sample announced, e.g. a warm-up generation) sets every
    category indicator to 0."""
    values = {**next_token_features(next_logits), "log_prompt_tokens": math.log(prompt_tokens)}
    out = np.empty(len(names))
    for i, name in enumerate(names):
        if name.startswith(CATEGORY_PREFIX):
            out[i] = float(category is not None and name == CATEGORY_PREFIX + category)
        elif name in values:
            out[i] = values[name]
        else:
            raise ValueError(
                f"feature {name!r} is not computable at prefill (known: {', '.join(BASE_FEATURES)}, "
                f"{CATEGORY_PREFIX}<category>)"
            )
    return out
