"""What scorers that query the acting LLM share: the request layer, the policy prompt and per-point seeds."""

from __future__ import annotations

import zlib

from ...prompts import load_prompt
from .base import Scorer


class LLMScorer(Scorer):
    uses_model = True

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.llm = self.context.requests

    def policy_prompt(
        self, point, observation: str | None = None, template: str = "action_logprob", **extra
    ) -> list[int]:
        """The acting model's policy prompt for the point: task, board and the candidate moves."""
        user = load_prompt(template).format(
            task=point.task,
            observation=observation or point.observation,
            actions=", ".join(c.action for c in point.candidates),
            **extra,
        )
        return self.llm.chat(user)

    def action_token_logprobs(self, prefix: list[int], point) -> list[list[float]]:
        return self.llm.continuation_logprobs(prefix, [self.llm.encode(c.action) for c in point.candidates])

    def sample_seed(self, point, *salt) -> int:
        """A seed per (cell seed, point, salt): resumed and repeated runs draw the same samples."""
        return zlib.crc32(repr((self.seed, point.point_id, salt)).encode())
