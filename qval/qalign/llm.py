"""The one door through which Q-alignment scorers call a language model.

Many methods send the same or overlapping prompts: every candidate of a state shares the state's prompt, Δbelief's
"before" prompt is the same for all candidates, entropy and self-certainty read the same forward pass, and a
k-sample method repeats its prompt k times. So requests are

* deduplicated: an identical request (same model, same token ids, same decoding settings) is computed once per
  worker and answered from a memo afterwards, across scorers and cells;
* prefix-shared: the key/value cache of a shared prompt prefix is computed once and reused for each continuation;
* batched: the continuations after one prefix run in one forward pass.

A model gives its worker-wide layer with ``model.requests()``: this one for a ``LocalModel``, ``HTTPRequests`` for
an OpenAI-compatible server. ``ForwardCounter`` records the tokens actually run through the model next to what a
naive loop (one full forward per request, no memo, no shared prefix) would have run;
``benchmarks/bench_qalign_requests.py`` reports both.
"""

from __future__ import annotations

import copy
from collections import OrderedDict

from ..models import kv, transcript
from ..models.requests import ForwardCounter, Requests

PREFIX_CACHE_SIZE = 8  # prompts whose KV cache is kept; scorers walk points one by one, so recent ones matter
TOP_SHOWN = 5  # next-token requests: the most likely tokens a transcript shows (the reply is a distribution)


class LLMRequests(Requests):
    """Memoised, prefix-sharing access to a ``LocalModel``. ``shared=False`` gives the naive loop (benchmarks)."""

    def __init__(self, model, shared: bool = True):
        self.model, self.shared = model, shared
        self.counter = ForwardCounter()
        self._memo: dict = {}
        self._prefixes: OrderedDict = OrderedDict()

    # -- requests ----------------------------------------------------------------------------------------------
    def continuation_logprobs(self, prefix: list[int], continuations: list[list[int]]) -> list[list[float]]:
        """Per-token log-probs of each continuation after the prefix."""
        self.counter.requests += len(continuations)
        # A full forward of prefix + continuation; its last token is never fed (nothing after it is scored).
        self.counter.naive += sum(len(prefix) + max(len(c) - 1, 0) for c in continuations)
        key = ("cont", tuple(prefix), tuple(map(tuple, continuations)))
        if self.shared and key in self._memo:
            self.counter.memo_hits += len(continuations)
            self.note_continuations(prefix, continuations, self._memo[key], memo=True)
            return self._memo[key]
        if self.shared:
            out = self._continuations_shared(prefix, continuations)
        else:
            out = [self._continuations_shared(prefix, [c], cache_prefix=False)[0] for c in continuations]
        if self.shared:
            self._memo[key] = out
        self.note_continuations(prefix, continuations, out, memo=False)
        return out

    def next_token_logprobs(self, prompt: list[int]):
        """Log-probs over the vocabulary of the token after the prompt (a float32 CPU tensor)."""
        last, memo = self._next(prompt)
        if transcript.active():  # the reply as read: the most likely next tokens
            top = last.topk(min(TOP_SHOWN, last.numel()))
            self.note_tokens("next", prompt, top.indices.tolist(), top.values.tolist(), memo)
        return last

    def token_logprobs(self, prompt: list[int], token_ids: list[int]):
        """Log-probs of the given candidate next tokens after the prompt (a float32 CPU tensor)."""
        last, memo = self._next(prompt)
        chosen = last[token_ids]
        self.note_tokens("tokens", prompt, list(token_ids), chosen.tolist(), memo)
        return chosen

    def _next(self, prompt: list[int]):
        """(next-token log-probs, whether the memo answered)."""
        self.counter.requests += 1
        self.counter.naive += len(prompt)
        key = ("next", tuple(prompt))
        if self.shared and key in self._memo:
            self.counter.memo_hits += 1
            return self._memo[key], True
        _, last = self._prefix_state(prompt, cache_prefix=self.shared)
        if self.shared:
            self._memo[key] = last
        return last, False

    def generate(self, prompt: list[int], max_new_tokens: int, temperature: float, seed: int) -> str:
        """Sampled (T > 0) or greedy text after the prompt; the seed makes a sample reproducible."""
        import torch

        key = ("gen", tuple(prompt), max_new_tokens, float(temperature), int(seed))
        self.counter.requests += 1
        if self.shared and key in self._memo:
            self.counter.memo_hits += 1
            self.counter.naive += self._memo[key][1]
            self.note_generate(prompt, self._memo[key][0], memo=True)
            return self._memo[key][0]
        lm, tok = self.model.model, self.model.tokenizer
        ids = torch.tensor([prompt], device=self.model.device)
        torch.manual_seed(seed)
        sampling = (
            {"do_sample": True, "temperature": temperature, "top_k": 0, "top_p": 1.0}
            if temperature > 0
            else {"do_sample": False}
        )
        with torch.inference_mode():
            out = lm.generate(
                ids,
                attention_mask=torch.ones_like(ids),
                max_new_tokens=max_new_tokens,
                pad_token_id=tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id,
                **sampling,
            )
        new = out[0, len(prompt) :].tolist()
        text = tok.decode(new, skip_special_tokens=True)
        cost = len(prompt) + len(new)
        self.counter.computed += cost
        self.counter.naive += cost
        if self.shared:
            self._memo[key] = (text, cost)
        self.note_generate(prompt, text, memo=False)
        return text

    # -- internals ---------------------------------------------------------------------------------------------
    def _prefix_state(self, prefix: list[int], cache_prefix: bool):
        """(KV cache after the prefix, log-probs of the next token), from the prefix cache when possible."""
        import torch

        key = tuple(prefix)
        if cache_prefix and key in self._prefixes:
            self._prefixes.move_to_end(key)
            return self._prefixes[key]
        cache = kv.new_cache(self.model.model)
        ids = torch.tensor([prefix], device=self.model.device)
        with torch.inference_mode():
            out = kv.forward(self.model.model, ids, cache, logits_to_keep=1)
        self.counter.computed += len(prefix)
        state = (cache, torch.log_softmax(out.logits[0, -1].float(), -1).cpu())
        if cache_prefix:
            self._prefixes[key] = state
            while len(self._prefixes) > PREFIX_CACHE_SIZE:
                self._prefixes.popitem(last=False)
        return state

    def _continuations_shared(self, prefix, continuations, cache_prefix: bool = True) -> list[list[float]]:
        import torch

        cache, first = self._prefix_state(prefix, cache_prefix)
        out = [[float(first[c[0]])] if c else [] for c in continuations]
        longest = max((len(c) for c in continuations), default=0)
        if longest > 1:
            # Right padding needs no attention mask: a causal model never lets a pad influence earlier positions,
            # and logits after a sequence's end are not read.
            pad = continuations[0][0]
            ids = torch.tensor([c[:-1] + [pad] * (longest - len(c)) for c in continuations], device=self.model.device)
            batch_cache = copy.deepcopy(cache)
            batch_cache.batch_repeat_interleave(len(continuations))
            with torch.inference_mode():
                logits = kv.forward(self.model.model, ids, batch_cache).logits
            self.counter.computed += sum(len(c) - 1 for c in continuations if c)
            logp = torch.log_softmax(logits.float(), -1).cpu()
            for i, c in enumerate(continuations):
                out[i] += [float(logp[i, j, c[j + 1]]) for j in range(len(c) - 1)]
        return out
