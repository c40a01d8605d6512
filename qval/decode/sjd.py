"""Speculative Jacobi Decoding (Teng et al. 2024): Jacobi guesses sampled from the target's previous distributions
and accepted with min(1, p/q) by the engine's speculative sampling."""

from __future__ import annotations

import torch
from pydantic import BaseModel, ConfigDict, Field

from .engine import Draft
from .policies import DecodePolicy


class SpeculativeJacobiParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    num_draft: int = Field(default=4, ge=1, le=64)  # the Jacobi window: draft tokens verified per step


class SpeculativeJacobiDrafter:
    """Keeps the target's logits at the window positions it has not emitted yet; each step drafts from them.

    After a verification of [pending, d_1 … d_k] with a accepted, the engine emits d_1 … d_a and a token for
    position a + 1; logits rows a + 1 … k (predicting the positions after it, from a prefix with a rejected
    guess in it: Jacobi's iterate) become the next step's distributions."""

    def __init__(self, num_draft: int):
        self.k = num_draft
        self.rows: torch.Tensor | None = None  # (m, vocab) target logits for the next m positions
        self.accepted = 0

    def reset(self) -> None:
        self.rows, self.accepted = None, 0

    def propose(self, context: list[int], temperature: float = 0.0, generator=None) -> Draft:
        if self.rows is None or len(self.rows) == 0:
            # Nothing computed for these positions yet: Jacobi's start, copies of the last token (one-hot q).
            return Draft([context[-1]] * self.k)
        # Positions past the last distribution reuse it (the nearest one known); q is what was sampled from.
        rows = torch.cat([self.rows, self.rows[-1:].expand(self.k - len(self.rows), -1)])[: self.k]
        if temperature <= 0.0:
            return Draft(rows.argmax(dim=-1).tolist())  # greedy Jacobi: one-hot q, exact match
        q = torch.softmax(rows.to("cpu", torch.float64) / temperature, dim=-1)
        tokens = torch.multinomial(q, 1, generator=generator).squeeze(1).tolist()
        return Draft(tokens, q)

    def observe(self, target_tokens: list[int], accepted: int) -> None:
        self.accepted = accepted  # the engine calls observe before observe_forward

    def observe_forward(self, input_ids: list[int], logits: torch.Tensor) -> None:
        self.rows = logits[self.accepted + 1 :].detach()


class SpeculativeJacobiPolicy(DecodePolicy):
    """Speculative Jacobi Decoding (Teng, Shi, Liu, Ning, Dai, Wei, Zhang, Li and Liu 2024, "Accelerating
    Auto-regressive Text-to-Image Generation with Training-free Speculative Jacobi Decoding", arXiv:2410.01699).
    Jacobi iteration for sampled decoding: the guess at each of the ``num_draft`` positions after the pending
    token is SAMPLED from the target's distribution q at that position in the previous iteration, and accepted
    with probability min(1, p/q), p the target's distribution now; the first refused position gets a token from
    norm(max(0, p − q)). That is speculative sampling with the previous iteration as the draft model, so it is
    lossless at T > 0. At T = 0 it is greedy Jacobi (argmax guesses, exact match); under coupled sampling the
    engine verifies greedy guesses by exact match, as every policy. Unlike ``jacobi``, which drafts the argmax
    (a one-hot q, accepted with probability p(x) at T > 0), it keeps the distributions and drafts from them.

    Where qval's version differs from the paper:
    - initialisation: the paper fills the window's new positions with random tokens; qval starts a generation
      with copies of the last token (one-hot q, as ``jacobi``), and fills positions that the previous forward
      did not reach (after a step that accepted a tokens, the last a) with samples from the last distribution
      computed, which is then their q. Any q is lossless as long as the guess is drawn from it;
    - text LLMs and qval's decoding datasets, not image token models; no top-k in the target's sampling
      (qval samples softmax(logits / T));
    - the window has a fixed length ``num_draft`` and restarts after each rejection from the rows the forward
      produced, as the paper's Algorithm 1; the first token after the prompt comes from the prefill alone."""

    name = "sjd"
    family = "parallel"
    Params = SpeculativeJacobiParams

    def drafter(self, model):
        return SpeculativeJacobiDrafter(self.params.num_draft)
