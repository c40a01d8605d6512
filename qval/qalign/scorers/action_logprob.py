"""Intrinsic scorers read from the acting model's own distributions under its policy prompt.

* action-logprob: log-probability of the candidate action as the model's answer in the current state;
* entropy / self-certainty: how decided the model's next move is in the state the action leads to (lower
  entropy, higher self-certainty = a clearer situation), a family QVal does not cover.
"""

from __future__ import annotations

import math

from .llm_base import LLMScorer


class ActionLogProbScorer(LLMScorer):
    """Sum of token log-probs of the action word as the assistant's answer (all candidates in one batch)."""

    name = "action-logprob"
    family = "intrinsic"
    version = "2-v1"

    def score(self, point):
        return [sum(lp) for lp in self.action_token_logprobs(self.policy_prompt(point), point)]


class _NextStateDistribution(LLMScorer):
    family = "intrinsic"
    version = "1-v1"

    def from_logprobs(self, logp) -> float:
        raise NotImplementedError

    def score(self, point):
        return [
            self.from_logprobs(self.llm.next_token_logprobs(self.policy_prompt(point, c.outcome)))
            for c in point.candidates
        ]


class NextStateEntropyScorer(_NextStateDistribution):
    """Minus the entropy of the model's first answer token in the next state."""

    name = "next-state-entropy"

    def from_logprobs(self, logp):
        import torch

        return float(-torch.special.entr(logp.exp()).sum())


class SelfCertaintyScorer(_NextStateDistribution):
    """Self-certainty (Kang et al., 2025): KL(uniform ‖ p) of the first answer token in the next state."""

    name = "self-certainty"

    def from_logprobs(self, logp):
        return float(-math.log(logp.numel()) - logp.clamp_min(-1e4).mean())  # clamp: a -inf log-prob is finite here
