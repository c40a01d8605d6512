"""Model-based drafters: a separate draft model, the target's own first layers (layer skip), and Jacobi iteration.

Every drafter only proposes; the engine verifies. Drafters keep their own KV cache in step with the verified
context: after a rejection they crop back to the longest prefix they still share with it.
"""

from __future__ import annotations

import copy

import torch

from ..models import kv
from .engine import Draft


class ModelDrafter:
    """Autoregressive drafting with a small causal LM sharing the target's tokenizer.

    At T = 0 drafts are the draft model's argmax (one-hot q); at T > 0 they are sampled from the draft
    distribution at the same temperature and q is returned, so the engine applies min(1, p/q). With
    ``stop_threshold`` > 0 drafting stops early once the draft model's top probability falls below it
    (confidence-based adaptive draft length, in the spirit of SpecDec++ / PEARL).
    """

    def __init__(self, model, num_draft: int, stop_threshold: float = 0.0):
        self.model, self.k, self.stop = model, num_draft, stop_threshold
        self.device = next(model.parameters()).device
        self.cache = None
        self.cached: list[int] = []  # token ids whose keys/values are in the cache

    def reset(self) -> None:
        self.cache, self.cached = None, []

    def _sync(self, context: list[int]) -> torch.Tensor:
        """Bring the cache to context[:-1] + feed the rest; return logits for the next position."""
        if self.cache is None:
            self.cache, self.cached = kv.new_cache(self.model), []
        common = 0
        limit = min(len(self.cached), len(context) - 1)  # always feed at least one token to get logits
        while common < limit and self.cached[common] == context[common]:
            common += 1
        if common < len(self.cached):
            self.cache.crop(-(len(self.cached) - common))
            self.cached = self.cached[:common]
        ids = torch.tensor([context[common:]], device=self.device)
        out = kv.forward(self.model, ids, self.cache, logits_to_keep=1)
        self.cached = list(context)
        return out.logits[0, -1].float()

    @torch.inference_mode()
    def propose(self, context, temperature=0.0, generator=None) -> Draft:
        logits = self._sync(context)
        tokens, probs = [], []
        for i in range(self.k):
            p = torch.softmax(logits / (temperature if temperature > 0 else 1.0), dim=-1)
            if self.stop > 0 and i > 0 and float(p.max()) < self.stop:
                break
            if temperature > 0:
                tok = int(torch.multinomial(p.cpu().double(), 1, generator=generator))
                probs.append(p)
            else:
                tok = int(logits.argmax())
            tokens.append(tok)
            if i + 1 < self.k:
                out = kv.forward(self.model, torch.tensor([[tok]], device=self.device), self.cache)
                self.cached.append(tok)
                logits = out.logits[0, -1].float()
        return Draft(tokens, torch.stack(probs) if probs and temperature > 0 else None)


def first_layers_view(target, num_layers: int):
    """A model made of the target's first ``num_layers`` decoder layers, final norm and LM head, sharing their
    weights (no copy): early-exit self-speculation."""
    from transformers import AutoModelForCausalLM

    total = target.config.num_hidden_layers
    if not 1 <= num_layers < total:
        raise ValueError(f"layers must be in [1, {total - 1}] for a {total}-layer target, got {num_layers}")
    config = copy.deepcopy(target.config)
    config.num_hidden_layers = num_layers
    if getattr(config, "layer_types", None):
        config.layer_types = config.layer_types[:num_layers]
    with torch.device("meta"):
        view = AutoModelForCausalLM.from_config(config, dtype=next(target.parameters()).dtype)
    inner, target_inner = view.model, target.model
    inner.embed_tokens = target_inner.embed_tokens
    inner.layers = torch.nn.ModuleList(target_inner.layers[:num_layers])
    inner.norm = target_inner.norm
    if hasattr(target_inner, "rotary_emb"):
        inner.rotary_emb = target_inner.rotary_emb
    view.lm_head = target.lm_head
    return view.eval()


def load_draft_model(model, draft: str, path: str | None):
    """The draft model a policy's params name: ``int8``, a dynamically int8-quantised copy of the target (CPU); or
    ``path``, an HF folder sharing the target's tokenizer, in the target's dtype on its device."""
    if draft == "int8":
        return int8_copy(model.model)
    from transformers import AutoModelForCausalLM

    loaded = AutoModelForCausalLM.from_pretrained(path, dtype=model.model.dtype)
    return loaded.to(model.device).eval()


def int8_copy(target):
    """A dynamically int8-quantised copy of the target's Linear layers (CPU): a cheap, close draft model."""
    quantized = torch.ao.quantization.quantize_dynamic(
        copy.deepcopy(target).cpu(), {torch.nn.Linear}, dtype=torch.qint8
    )
    return quantized.eval()


class JacobiDrafter:
    """Jacobi decoding as draft-and-verify: the guesses for the next positions are the target's own predictions
    from the previous verification (a fixed-point iteration; Santilli et al. 2023, Fu et al. 2024)."""

    def __init__(self, num_draft: int):
        self.k = num_draft
        self.guesses: list[int] = []

    def propose(self, context, temperature=0.0, generator=None) -> Draft:
        if not self.guesses:  # start the iteration from copies of the last token
            self.guesses = [context[-1]] * self.k
        return Draft(self.guesses[: self.k])

    def observe(self, target_tokens: list[int], accepted: int) -> None:
        # target_tokens[accepted] is the emitted correction/bonus; what follows are next-iteration guesses.
        nxt = target_tokens[accepted + 1 :]
        self.guesses = (nxt + [nxt[-1] if nxt else target_tokens[-1]] * self.k)[: self.k]

    def reset(self) -> None:
        self.guesses = []
