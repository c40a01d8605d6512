"""One draft-and-verify engine for every decoding policy, plain autoregressive decoding included.

A policy only *proposes* draft tokens; this engine verifies them against the target model with a KV cache and
decides what is emitted. AR decoding is the same loop with an empty draft, so AR and speculative cells share one
code path and their outputs are comparable token for token. The engine never reads a clock: the harness times
``prefill`` and ``decode`` from outside.

Verification rule (Leviathan et al. 2023): at T = 0 a draft token is accepted iff it equals the target argmax; at
T > 0 a draft x from q is accepted with probability min(1, p(x)/q(x)); on rejection the engine samples from the
normalised residual max(0, p − q). Drafters without a distribution (n-gram lookup) have a one-hot q.

Coupled sampling (``coupled_seed`` given, T > 0): the token at output position j is argmax(logits/T + G_j), where
G_j is Gumbel noise drawn from a generator seeded by (coupled_seed, j) — an exact sample from softmax(logits/T)
(the Gumbel-max trick). Drafts are greedy, and verification is exact match against that sample (as DFlash and
vLLM's ``strict`` rule do). Every policy then emits exactly the tokens plain AR decoding emits with the same
coupled seed, so losslessness at T > 0 is checked token for token, as at T = 0.

A draft may also be a token tree (``Draft.parents``): ``tree.py`` verifies it in one forward with a tree attention
mask, accepts the longest matching path (T = 0, coupled) or runs SpecInfer's multi-round sampling over siblings
(T > 0), and the cache keeps the accepted path only.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import torch

from ..models import fast_llama, kv
from . import tree


@dataclass
class Draft:
    tokens: list[int]
    # q[i] is the drafter's distribution over the vocabulary at draft position i; None means one-hot (deterministic).
    probs: torch.Tensor | None = None
    # A token tree (``tree.py``): parents[i] is the index of token i's parent, -1 for the pending token; None means
    # a chain. Tree drafts are deterministic (probs must be None).
    parents: list[int] | None = None
    # Nodes fed in the same forward but never accepted (Lookahead decoding's Jacobi window, ``tree.Lookahead``);
    # a draft that has them is verified as a tree (a chain is a tree too).
    lookahead: tree.Lookahead | None = None


class Drafter(Protocol):
    """Proposes draft tokens. May also define ``observe(target_tokens, accepted)``: after each verification of a
    chain the engine then passes the target's argmax at every verified position (Jacobi-style drafters iterate on
    it); and ``observe_forward(input_ids, logits)``: after every verification, the tokens fed (pending token first)
    and the target's logits there (Token Recycling keeps their top-k); and ``observe_lookahead(logits)``: after
    the verification of a draft with ``lookahead`` nodes, the target's logits at those nodes, one row per node in
    order (Lookahead decoding's Jacobi update). Lookahead nodes are never accepted and their keys/values are
    dropped with the rejected branches, so they cannot change what is emitted.

    A LOSSY drafter may define ``accept(logits, token, temperature) -> bool``, its own acceptance rule for one draft
    token given the target's logits at that position (Medusa's typical acceptance); the engine then accepts the
    drafts up to the first it refuses and emits the target's own token there, sampled as AR samples it. Lossless
    policies never define it: the engine's rules below are what keeps them lossless.

    ``prefilled(context, next_logits)``: called once at the start of ``decode``, after ``reset``, with the prompt
    and the target's logits for the first generated position; a per-instance policy (learned-length) makes its
    choice there, so the harness's decode clock covers it.

    ``observe_step(emitted, hidden_states)``: after every chain verification, the tokens that step emitted (the
    accepted drafts, then the target's own token; ``emitted[i]`` follows fed token i, pending token first), so a
    drafter knows the new context without waiting for the next ``propose`` (PEARL settles its background drafting
    there). ``hidden_states`` is None unless the drafter sets ``wants_hidden_states = True``: the verification
    forward then runs with ``output_hidden_states`` and the model's tuple is passed (entry ℓ: the residual stream
    after ℓ decoder layers at every fed position; DEL's shadow tokens read it). Not called for tree drafts."""

    def propose(self, context: list[int], temperature: float = 0.0, generator=None) -> Draft: ...


@dataclass
class DecodeTrace:
    """What one generation did: the harness turns this into a per-sample record."""

    token_ids: list[int] = field(default_factory=list)
    # Accepted draft tokens per target step (for a tree: the accepted path's length, so the step emitted one more).
    accepted_per_step: list[int] = field(default_factory=list)
    drafted_per_step: list[int] = field(default_factory=list)  # proposed draft tokens (tree nodes) per target step
    stopped_on_eos: bool = False

    @property
    def target_steps(self) -> int:
        return len(self.accepted_per_step)


@dataclass
class PrefillState:
    cache: object
    next_logits: torch.Tensor  # logits for the first generated position
    context: list[int]


class Engine:
    """Draft-and-verify over a Hugging Face causal LM, with a KV cache built and fed through ``models.kv``.

    ``fast=True`` (the default) runs qval's own forward over a preallocated cache (``models.fast_llama``) where it
    covers the model: transformers' operations without transformers' per-step overhead, its matrix products over
    a decode layout of the weights (made here, so no timed step pays for it), the same greedy tokens and logits
    within float rounding; ``forward`` says which one runs ("qval" or "transformers"), and why when it is not qval's.
    ``fast=False`` keeps transformers' forward and its DynamicCache (the baseline qval measured against before)."""

    def __init__(self, model, eos_token_ids: set[int], fast: bool = True):
        self.model = model
        self.eos = set(eos_token_ids)
        self.device = next(model.parameters()).device
        reason = fast_llama.unsupported(model) if fast else "fast=False"
        self.forward = "transformers" if reason else "qval"
        self.forward_reason = reason
        if self.forward == "qval":
            fast_llama.prepare(model)

    @torch.inference_mode()
    def prefill(self, prompt_ids: list[int]) -> PrefillState:
        # Support was decided once in __init__: the prefill (timed) does not walk the model's layers again.
        cache = fast_llama.StaticCache(self.model) if self.forward == "qval" else kv.new_cache(self.model)
        ids = torch.tensor([prompt_ids], device=self.device)
        out = kv.forward(self.model, ids, cache, logits_to_keep=1)
        return PrefillState(cache, out.logits[0, -1].float(), list(prompt_ids))

    @torch.inference_mode()
    def decode(
        self,
        state: PrefillState,
        drafter: Drafter | None,
        max_new_tokens: int,
        temperature: float = 0.0,
        generator: torch.Generator | None = None,
        coupled_seed: int | None = None,
    ) -> DecodeTrace:
        trace = DecodeTrace()
        coupled = _Coupled(coupled_seed, temperature) if coupled_seed is not None and temperature > 0 else None
        draft_temperature = 0.0 if coupled is not None else temperature
        context = state.context
        cache = state.cache
        observe = getattr(drafter, "observe", None)
        accept = getattr(drafter, "accept", None)
        watch = getattr(drafter, "observe_forward", None)
        step_hook = getattr(drafter, "observe_step", None)
        # Hidden states only when asked for: they cost memory on every verification.
        forward_kw = {"output_hidden_states": True} if getattr(drafter, "wants_hidden_states", False) else {}
        look = getattr(drafter, "observe_lookahead", None)
        if hasattr(drafter, "reset"):
            drafter.reset()  # drafters keep state (caches, guesses) within one generation only
        if hasattr(drafter, "prefilled"):
            drafter.prefilled(context, state.next_logits)
        pending = (
            coupled.sample(state.next_logits, 0)
            if coupled is not None
            else self._sample(state.next_logits, temperature, generator)
        )  # first token: prefill logits
        trace.token_ids.append(pending)
        if pending in self.eos:
            trace.stopped_on_eos = True
            return trace
        while len(trace.token_ids) < max_new_tokens:
            room = max_new_tokens - len(trace.token_ids)
            draft = (
                drafter.propose(context + trace.token_ids, draft_temperature, generator)
                if drafter is not None
                else Draft([])
            )
            if draft.lookahead is not None or (draft.parents is not None and not tree.is_chain(draft.parents)):
                emitted, accepted, drafted = self._verify_tree(
                    draft, pending, cache, room, len(trace.token_ids), temperature, generator, coupled, watch, look
                )
                trace.accepted_per_step.append(accepted)
                trace.drafted_per_step.append(drafted)
                if self._emit(trace, emitted, max_new_tokens):
                    return trace
                pending = emitted[-1]
                continue
            # Never draft past the output cap: extra drafts would be verified for nothing.
            tokens = draft.tokens[: max(room - 1, 0)]
            probs = draft.probs[: len(tokens)] if draft.probs is not None else None
            ids = torch.tensor([[pending, *tokens]], device=self.device)
            out = kv.forward(self.model, ids, cache, **forward_kw)
            logits = out.logits[0].float()  # position i predicts the token after input i
            if accept is not None:
                emitted, accepted = self._verify_own_rule(
                    accept, logits, tokens, temperature, generator, coupled, len(trace.token_ids)
                )
            elif coupled is not None:
                emitted, accepted = coupled.verify(logits, tokens, len(trace.token_ids))
            else:
                emitted, accepted = self._verify(logits, tokens, probs, temperature, generator)
            if observe is not None:
                observe(logits.argmax(dim=-1).tolist(), accepted)
            if watch is not None:
                watch([pending, *tokens], logits)
            if step_hook is not None:
                step_hook(emitted, out.hidden_states if forward_kw else None)
            trace.accepted_per_step.append(accepted)
            trace.drafted_per_step.append(len(tokens))
            # The cache now holds pending + all drafts; keep pending + the accepted prefix only.
            rejected = len(tokens) - accepted
            if rejected:
                cache.crop(-rejected)  # a negative value removes tokens from the end (transformers 4.x and 5.x)
            if self._emit(trace, emitted, max_new_tokens):
                return trace
            pending = emitted[-1]
        return trace

    def _emit(self, trace: DecodeTrace, emitted: list[int], max_new_tokens: int) -> bool:
        """Append a step's tokens; True once the generation is over (EOS or the token cap)."""
        for tok in emitted:
            trace.token_ids.append(tok)
            if tok in self.eos:
                trace.stopped_on_eos = True
                return True
            if len(trace.token_ids) >= max_new_tokens:
                return True
        return False

    def _verify_tree(
        self, draft: Draft, pending, cache, room, position, temperature, generator, coupled, watch, look=None
    ) -> tuple[list[int], int, int]:
        """One tree verification (``tree.py``): (emitted tokens, accepted path length, nodes verified; lookahead
        nodes are not counted)."""
        if draft.probs is not None:
            raise ValueError("tree drafts are deterministic: a tree Draft carries no probs")
        parents = draft.parents if draft.parents is not None else list(range(-1, len(draft.tokens) - 1))
        drafted = tree.Tree(draft.tokens, parents).clipped(max(room - 1, 0))
        past = cache.get_seq_length()
        logits = tree.forward(self.model, cache, pending, drafted, draft.lookahead)
        if draft.lookahead is not None:
            size = len(drafted.tokens) + 1
            if look is not None:
                look(logits[size:])
            logits = logits[:size]
        if coupled is not None:
            emitted, path = tree.accept_coupled(drafted, logits, coupled, position)
        elif temperature > 0:
            emitted, path = tree.accept_specinfer(drafted, logits, temperature, generator, _multinomial)
        else:
            emitted, path = tree.accept_greedy(drafted, logits)
        if watch is not None:
            watch([pending, *drafted.tokens], logits)
        # The cache holds the past, the root, every node and the lookahead nodes; keep the root and the accepted path.
        kv.keep_path(cache, past + 1, [past + 1 + node for node in path])
        return emitted, len(path), len(drafted.tokens)

    def _verify(self, logits, tokens, q_probs, temperature, generator) -> tuple[list[int], int]:
        """Return (emitted tokens, number of accepted drafts). Emits accepted drafts + one target token."""
        emitted: list[int] = []
        if temperature <= 0.0:
            target = logits.argmax(dim=-1).tolist()
            for i, tok in enumerate(tokens):
                if tok != target[i]:
                    return emitted + [target[i]], i
                emitted.append(tok)
            return emitted + [target[len(tokens)]], len(tokens)
        p_all = torch.softmax(logits / temperature, dim=-1)
        for i, tok in enumerate(tokens):
            p = p_all[i]
            q_tok = 1.0 if q_probs is None else float(q_probs[i, tok])
            ratio = min(1.0, float(p[tok]) / q_tok) if q_tok > 0 else 0.0
            if torch.rand((), generator=generator, device="cpu").item() < ratio:
                emitted.append(tok)
                continue
            if q_probs is None:
                residual = p.clone()
                residual[tok] = 0.0
            else:
                residual = torch.clamp(p - q_probs[i].to(p.device), min=0.0)
            if float(residual.sum()) <= 0.0:  # p == q: any token is fine, sample p itself
                residual = p
            return emitted + [_multinomial(residual, generator)], i
        return emitted + [_multinomial(p_all[len(tokens)], generator)], len(tokens)

    def _verify_own_rule(
        self, accept, logits, tokens, temperature, generator, coupled, first_position: int
    ) -> tuple[list[int], int]:
        """A lossy drafter's rule: drafts up to the first refused, then the target's own token at that position
        (coupled: its position-seeded sample; otherwise as ``_sample``)."""
        taken = 0
        while taken < len(tokens) and accept(logits[taken], tokens[taken], temperature):
            taken += 1
        row = logits[taken]
        own = (
            coupled.sample(row, first_position + taken)
            if coupled is not None
            else self._sample(row, temperature, generator)
        )
        return [*tokens[:taken], own], taken

    def _sample(self, logits: torch.Tensor, temperature: float, generator) -> int:
        if temperature <= 0.0:
            return int(logits.argmax())
        return _multinomial(torch.softmax(logits / temperature, dim=-1), generator)


class _Coupled:
    """Position-seeded Gumbel-max sampling: the same (seed, position, logits) always gives the same token."""

    def __init__(self, seed: int, temperature: float):
        self.seed, self.temperature = int(seed), float(temperature)

    def noise(self, position: int, size: int) -> torch.Tensor:
        generator = torch.Generator().manual_seed((self.seed * 1_000_003 + position) % (2**63 - 1))
        u = torch.rand(size, generator=generator, dtype=torch.float64).clamp_(1e-300, 1.0 - 1e-16)
        return -torch.log(-torch.log(u))

    def sample(self, logits: torch.Tensor, position: int) -> int:
        scores = logits.detach().to("cpu", torch.float64) / self.temperature
        return int(torch.argmax(scores + self.noise(position, scores.shape[-1])))

    def verify(self, logits, tokens, first_position: int) -> tuple[list[int], int]:
        """Exact-match verification: logits[i] predicts output position first_position + i."""
        emitted: list[int] = []
        for i, tok in enumerate(tokens):
            target = self.sample(logits[i], first_position + i)
            if tok != target:
                return emitted + [target], i
            emitted.append(tok)
        return emitted + [self.sample(logits[len(tokens)], first_position + len(tokens))], len(tokens)


def _multinomial(probs: torch.Tensor, generator) -> int:
    # Sample on the CPU with the harness's seeded generator, so runs with the same seed are reproducible.
    probs = probs.detach().to("cpu", torch.float64)
    return int(torch.multinomial(probs / probs.sum(), 1, generator=generator))
