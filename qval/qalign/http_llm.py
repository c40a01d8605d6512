"""The Q-alignment request layer over an OpenAI-compatible server (``source: openai`` models).

Same interface as ``LLMRequests``: identical requests are memoised, and the log-probs of continuations come from
``echo`` (the server scores the prompt's own tokens), several continuations batched in one request. What an HTTP
API cannot give is the full next-token distribution (servers cap ``logprobs`` at ~20 tokens), so the methods that
need it (next-state entropy, self-certainty) fail with a clear reason instead of using a truncated one.
"""

from __future__ import annotations

import torch

from ..errors import QvalError
from ..models.requests import ForwardCounter, Requests


class HTTPRequests(Requests):
    def __init__(self, model, shared: bool = True):
        self.model, self.shared = model, shared
        self.counter = ForwardCounter()
        self._memo: dict = {}

    def _memoised(self, key, compute):
        """(value, whether the memo answered)."""
        self.counter.requests += 1
        if self.shared and key in self._memo:
            self.counter.memo_hits += 1
            return self._memo[key], True
        value = compute()
        if self.shared:
            self._memo[key] = value
        return value, False

    def continuation_logprobs(self, prefix: list[int], continuations: list[list[int]]) -> list[list[float]]:
        def compute():
            prompts = [list(prefix) + list(c) for c in continuations]
            reply = self.model.completions(
                {"prompt": prompts, "max_tokens": 0, "echo": True, "logprobs": 1, "temperature": 0.0}
            )
            self.counter.computed += sum(map(len, prompts))
            choices = sorted(reply["choices"], key=lambda c: c["index"])
            out = []
            for cont, choice in zip(continuations, choices):
                logprobs = (choice.get("logprobs") or {}).get("token_logprobs") or []
                if len(logprobs) != len(prefix) + len(cont):
                    raise QvalError(
                        f"server echoed {len(logprobs)} log-probs for a {len(prefix) + len(cont)}-token "
                        "prompt; it must support `echo` with `logprobs` on completions"
                    )
                out.append([float(x) for x in logprobs[len(prefix) :]])
            return out

        self.counter.naive += sum(len(prefix) + len(c) for c in continuations)
        out, memo = self._memoised(("cont", tuple(prefix), tuple(map(tuple, continuations))), compute)
        self.note_continuations(prefix, continuations, out, memo)
        return out

    def token_logprobs(self, prompt: list[int], token_ids: list[int]) -> torch.Tensor:
        values = self.continuation_logprobs(prompt, [[t] for t in token_ids])
        return torch.tensor([v[0] for v in values], dtype=torch.float32)

    def next_token_logprobs(self, prompt: list[int]):
        raise QvalError(
            "this method needs the full next-token distribution, which an OpenAI-compatible server "
            "does not return (logprobs are capped at ~20 tokens); run it on a transformers model"
        )

    def generate(self, prompt: list[int], max_new_tokens: int, temperature: float, seed: int) -> str:
        def compute():
            reply = self.model.completions(
                {
                    "prompt": list(prompt),
                    "max_tokens": int(max_new_tokens),
                    "temperature": float(temperature),
                    "seed": int(seed),
                }
            )
            usage = reply.get("usage") or {}
            self.counter.computed += len(prompt) + int(usage.get("completion_tokens") or 0)
            return reply["choices"][0].get("text") or ""

        self.counter.naive += len(prompt) + max_new_tokens
        text, memo = self._memoised(("gen", tuple(prompt), max_new_tokens, float(temperature), int(seed)), compute)
        self.note_generate(prompt, text, memo)
        return text
