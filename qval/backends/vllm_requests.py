"""The Q-alignment request layer on vLLM's offline engine (``source: vllm`` models).

Same interface and memo as ``LLMRequests`` and ``HTTPRequests``; what vLLM itself adds:

* continuation log-probs are prompt log-probs (``prompt_logprobs=0``) of prefix + continuation, every continuation
  of a prefix in one engine call, which reads vLLM's prefix cache, so the shared prefix is computed once (in whole
  cache blocks: the tail of a prefix that fills no block is computed per continuation);
* the full next-token distribution is vLLM's ``logprobs=-1`` (every vocabulary entry), raw model log-probs: the
  scoring engine runs with ``max_logprobs=-1`` and ``logprobs_mode=raw_logprobs``. An engine whose
  ``engine_args`` cap ``max_logprobs`` fails those methods with the reason;
* ``generate_many`` sends several generations (each with its own seed) in one batched engine call.

The engine is the model's child process (``VLLMServedModel``), initialised for scoring on the first request:
no speculative decoding, prefix caching on. Counters are in engine tokens: ``computed`` is what vLLM forwarded (a
prompt's tokens minus its prefix-cache hit, plus generated tokens), ``naive`` what one uncached request per
continuation or prompt would forward.

At T = 0 scores equal the transformers layer's to float tolerance (fp32 on both; vLLM's CPU kernels sum in another
order, and a cache hit reads keys and values computed in another batch). At T > 0 a seed makes a sample
reproducible, but vLLM's sampler draws other samples than torch's for the same seed.
"""

from __future__ import annotations

import base64

import numpy as np
import torch

from ..errors import QvalError
from ..models import transcript
from ..models.requests import ForwardCounter, Requests
from .vllm_client import VLLMProcessError

TOP_SHOWN = 5  # next-token requests: the most likely tokens a transcript shows (the reply is a distribution)
REQUEST_TIMEOUT_S = 3600  # one engine call; a scorer's own time limit interrupts it sooner (vllm_client kills it)


class VLLMRequests(Requests):
    """Memoised requests to a ``VLLMServedModel``'s engine. ``shared=False`` turns the memo off (vLLM's own prefix
    cache still applies)."""

    def __init__(self, model, shared: bool = True):
        self.model, self.shared = model, shared
        self.counter = ForwardCounter()
        self._memo: dict = {}

    # -- requests ----------------------------------------------------------------------------------------------
    def continuation_logprobs(self, prefix: list[int], continuations: list[list[int]]) -> list[list[float]]:
        """Per-token log-probs of each continuation after the prefix."""
        self.counter.requests += len(continuations)
        self.counter.naive += sum(len(prefix) + len(c) for c in continuations)
        key = ("cont", tuple(prefix), tuple(map(tuple, continuations)))
        if self.shared and key in self._memo:
            self.counter.memo_hits += len(continuations)
            self.note_continuations(prefix, continuations, self._memo[key], memo=True)
            return self._memo[key]
        if not prefix:
            raise QvalError("a continuation's log-probs need a prompt before it (the first token has no context)")
        out: list[list[float]] = [[] for _ in continuations]
        todo = [i for i, c in enumerate(continuations) if c]
        if todo:
            reply = self._call(
                {
                    "op": "prompt_logprobs",
                    "prompts": [list(prefix) + list(continuations[i]) for i in todo],
                    "starts": [len(prefix)] * len(todo),
                }
            )
            self.counter.computed += int(reply["computed"])
            for i, values in zip(todo, reply["logprobs"]):
                out[i] = [float(v) for v in values]
        if self.shared:
            self._memo[key] = out
        self.note_continuations(prefix, continuations, out, memo=False)
        return out

    def next_token_logprobs(self, prompt: list[int]) -> torch.Tensor:
        """Log-probs over the vocabulary of the token after the prompt (a float32 CPU tensor)."""
        last, memo = self._next(prompt)
        if transcript.active():  # the reply as read: the most likely next tokens
            top = last.topk(min(TOP_SHOWN, last.numel()))
            self.note_tokens("next", prompt, top.indices.tolist(), top.values.tolist(), memo)
        return last

    def token_logprobs(self, prompt: list[int], token_ids: list[int]) -> torch.Tensor:
        """Log-probs of the given candidate next tokens after the prompt (a float32 CPU tensor): read from the full
        distribution, which costs one prefix-cached engine call and is memoised per prompt."""
        last, memo = self._next(prompt)
        chosen = last[list(token_ids)]
        self.note_tokens("tokens", prompt, list(token_ids), chosen.tolist(), memo)
        return chosen

    def generate(self, prompt: list[int], max_new_tokens: int, temperature: float, seed: int) -> str:
        """Sampled (T > 0) or greedy text after the prompt; the seed makes a sample reproducible."""
        return self.generate_many([(prompt, max_new_tokens, temperature, seed)])[0]

    def generate_many(self, requests: list[tuple[list[int], int, float, int]]) -> list[str]:
        """Several generations, the ones the memo cannot answer in one batched engine call."""
        keys = [("gen", tuple(p), int(n), float(t), int(s)) for p, n, t, s in requests]
        if not self.shared:
            out = self._generate_batch(keys)
            for k, (text, cost) in zip(keys, out):
                self.counter.requests += 1
                self.counter.naive += cost
                self.note_generate(list(k[1]), text, memo=False)
            return [text for text, _ in out]
        todo = [k for k in dict.fromkeys(keys) if k not in self._memo]
        self._memo.update(zip(todo, self._generate_batch(todo)))
        fresh, texts = set(todo), []
        for k in keys:  # a request repeated within the batch is a memo hit, as it would be one call at a time
            self.counter.requests += 1
            text, cost = self._memo[k]
            memo = k not in fresh
            fresh.discard(k)
            self.counter.memo_hits += memo
            self.counter.naive += cost
            self.note_generate(list(k[1]), text, memo)
            texts.append(text)
        return texts

    # -- internals ---------------------------------------------------------------------------------------------
    def _next(self, prompt: list[int]) -> tuple[torch.Tensor, bool]:
        """(next-token log-probs, whether the memo answered)."""
        self.counter.requests += 1
        self.counter.naive += len(prompt)
        key = ("next", tuple(prompt))
        if self.shared and key in self._memo:
            self.counter.memo_hits += 1
            return self._memo[key], True
        reply = self._call({"op": "next_logprobs", "prompts": [list(prompt)]})
        self.counter.computed += len(prompt) - int(reply["cached"][0])
        raw = base64.b64decode(reply["logprobs"][0])
        last = torch.from_numpy(np.frombuffer(raw, dtype="<f4").astype(np.float32))
        if self.shared:
            self._memo[key] = last
        return last, False

    def _generate_batch(self, keys: list) -> list[tuple[str, int]]:
        """(text, naive cost) per ("gen", prompt, max_new_tokens, temperature, seed) key, in one engine call."""
        if not keys:
            return []
        reply = self._call(
            {
                "op": "generate_batch",
                "requests": [
                    {"prompt_token_ids": list(k[1]), "max_tokens": k[2], "temperature": k[3], "seed": k[4]}
                    for k in keys
                ],
            }
        )
        out = []
        for k, gen in zip(keys, reply["outputs"]):
            new = list(gen["token_ids"])
            # decoded here with the tokenizer the transformers layer uses: the same tokens give the same text
            out.append((self.model.tokenizer.decode(new, skip_special_tokens=True), len(k[1]) + len(new)))
            self.counter.computed += len(k[1]) - int(gen.get("cached") or 0) + len(new)
        return out

    def _call(self, request: dict) -> dict:
        """One engine call, on an engine initialised for scoring; an engine's refusal is the point's error."""
        engine = self.model.scoring_engine()
        try:
            return engine.request(request, timeout=REQUEST_TIMEOUT_S)
        except VLLMProcessError as exc:
            error = (exc.response or {}).get("error")
            if error and "logprobs" in error and "max allowed" in error:
                raise QvalError(
                    "this method needs the full next-token distribution, and this vLLM engine returns fewer "
                    f"log-probs ({error}): leave `max_logprobs` out of the model's engine_args (qval's scoring "
                    "engine sets -1, the whole vocabulary)"
                ) from None
            if error:
                raise QvalError(f"vLLM refused a {request['op']} request: {error}") from None
            raise QvalError(f"vLLM engine failed during a {request['op']} request: {exc}") from None
