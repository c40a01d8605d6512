"""What every request layer shares: the interface Q-alignment scorers call, chat prompts as token ids, and the
token counter. The layers themselves are ``qval.qalign.llm.LLMRequests`` (a transformers model in this process),
``qval.qalign.http_llm.HTTPRequests`` (an OpenAI-compatible server) and ``qval.backends.vllm_requests.VLLMRequests``
(vLLM's offline engine); a model makes its own with ``Model.requests()``, so they never need each other.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from . import transcript


@dataclass
class ForwardCounter:
    computed: int = 0  # tokens actually forwarded
    naive: int = 0  # tokens a per-request full-forward loop would forward
    requests: int = 0
    memo_hits: int = 0

    def as_dict(self) -> dict:
        return {"computed": self.computed, "naive": self.naive, "requests": self.requests, "memo_hits": self.memo_hits}


class Requests:
    """Memoised model calls for one loaded model. Subclasses implement the four requests below."""

    model: Any  # the loaded model (qval.models.base.Model) the requests go to
    counter: ForwardCounter

    def chat(self, user: str, system: str | None = None, assistant_start: str = "") -> list[int]:
        """Token ids of a chat prompt that ends inside the assistant's turn (after ``assistant_start``)."""
        messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": user}]
        ids = self.model.chat_ids(messages)
        return ids + self.encode(assistant_start) if assistant_start else ids

    def encode(self, text: str) -> list[int]:
        return list(self.model.tokenizer(text, add_special_tokens=False)["input_ids"])

    def continuation_logprobs(self, prefix: list[int], continuations: list[list[int]]) -> list[list[float]]:
        """Per-token log-probs of each continuation after the prefix."""
        raise NotImplementedError

    # -- the transcript (qval.models.transcript): what each request asked and got, when a point is being scored --
    def decode(self, ids) -> str:
        """Token ids as the text the model saw (special tokens and chat template included)."""
        return self.model.tokenizer.decode(list(ids), skip_special_tokens=False)

    def note_generate(self, prompt: list[int], text: str, memo: bool) -> None:
        if transcript.active():
            transcript.note_request("generate", lambda: self.decode(prompt), lambda: text, memo)

    def note_continuations(self, prefix: list[int], continuations: list[list[int]], out, memo: bool) -> None:
        """A log-prob request's reply: each continuation's text and its summed log-prob."""
        if transcript.active():
            transcript.note_request(
                "logprobs",
                lambda: self.decode(prefix),
                lambda: transcript.listing([(self.decode(c), float(sum(lp))) for c, lp in zip(continuations, out)]),
                memo,
            )

    def note_tokens(self, kind: str, prompt: list[int], token_ids: list[int], logprobs, memo: bool) -> None:
        """A next-token request's reply: the log-probs of the given tokens."""
        if transcript.active():
            transcript.note_request(
                kind,
                lambda: self.decode(prompt),
                lambda: transcript.listing([(self.decode([t]), float(v)) for t, v in zip(token_ids, logprobs)]),
                memo,
            )

    def next_token_logprobs(self, prompt: list[int]):
        """Log-probs over the vocabulary of the token after the prompt (a float32 CPU tensor)."""
        raise NotImplementedError

    def token_logprobs(self, prompt: list[int], token_ids: list[int]):
        """Log-probs of the given candidate next tokens after the prompt (a float32 CPU tensor)."""
        raise NotImplementedError

    def generate(self, prompt: list[int], max_new_tokens: int, temperature: float, seed: int) -> str:
        """Sampled (T > 0) or greedy text after the prompt; the seed makes a sample reproducible."""
        raise NotImplementedError

    def generate_many(self, requests: list[tuple[list[int], int, float, int]]) -> list[str]:
        """``generate`` for each (prompt, max_new_tokens, temperature, seed), in order: for a scorer whose
        generations do not depend on each other. A layer whose engine batches (vLLM) sends them together."""
        return [self.generate(*request) for request in requests]
