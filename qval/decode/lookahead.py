"""Lookahead decoding (Fu et al. 2024): a Jacobi window that fills an n-gram pool, and a trie of pool candidates
verified in the same target forward (``tree.Lookahead`` carries the window's nodes)."""

from __future__ import annotations

import random

import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator

from . import tree
from .engine import Draft
from .policies import DecodePolicy

# One forward feeds the root, the verification trie and the window: kept well under any model's context.
MAX_NODES = 1024
INIT_SEED = 0  # the window's first level is drawn from the context with this seed: a generation is reproducible


class LookaheadParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    window: int = Field(default=5, ge=1, le=64)  # W: columns of the Jacobi window
    ngram: int = Field(default=3, ge=2, le=16)  # N: the pool's n-grams; the window has N − 1 levels
    guesses: int = Field(default=5, ge=1, le=64)  # G: pool candidates verified per step

    @model_validator(mode="after")
    def _size(self):
        nodes = (self.window + self.guesses) * (self.ngram - 1)
        if nodes > MAX_NODES:
            raise ValueError(f"(window + guesses) × (ngram − 1) = {nodes} tokens per forward; keep it ≤ {MAX_NODES}")
        return self


def window_branch(levels: list[list[int]]) -> tree.Lookahead:
    """The window as lookahead nodes, level-major: level l, column j sits at depth 1 + l + j and sees level 0's
    columns up to j, then column j of levels 1 … l − 1, then itself: the consecutive positions 1 … l + j + 1,
    one Jacobi trajectory (the paper's Figure 2b)."""
    width = len(levels[0])
    tokens, depths, sees = [], [], []
    for level_index, level in enumerate(levels):
        for column, token in enumerate(level):
            tokens.append(token)
            depths.append(1 + level_index + column)
            sees.append([*range(column), *(k * width + column for k in range(level_index))])
    return tree.Lookahead(tokens, depths, sees)


def candidate_trie(candidates: list[tuple[int, ...]]) -> tuple[list[int], list[int]]:
    """Candidates that share a prefix share its nodes: (tokens, parents) in topological order."""
    tokens: list[int] = []
    parents: list[int] = []
    node_of: dict[tuple[int, int], int] = {}  # (parent node, token) -> node
    for gram in candidates:
        parent = -1
        for token in gram:
            node = node_of.get((parent, token))
            if node is None:
                node = node_of[(parent, token)] = len(tokens)
                tokens.append(token)
                parents.append(parent)
            parent = node
    return tokens, parents


class LookaheadDrafter:
    def __init__(self, window: int, ngram: int, guesses: int):
        self.w, self.n, self.g = window, ngram, guesses
        self.levels: list[list[int]] = []  # levels[l][j]: the window's guess at depth 1 + l + j
        self.pool: dict[int, list[tuple[int, ...]]] = {}  # first token -> its continuations, newest first

    def reset(self) -> None:
        self.levels, self.pool = [], {}

    def propose(self, context: list[int], temperature: float = 0.0, generator=None) -> Draft:
        if not self.levels:
            rng = random.Random(INIT_SEED)
            self.levels = [[rng.choice(context) for _ in range(self.w)]]
        tokens, parents = candidate_trie(self.pool.get(context[-1], []))
        return Draft(tokens, parents=parents, lookahead=window_branch(self.levels))

    def observe_lookahead(self, logits: torch.Tensor) -> None:
        """One Jacobi step: the last level's argmax is the next level; once the window has N − 1 levels, each
        column plus that new token is an n-gram for the pool, and the oldest level goes."""
        newest = logits[-self.w :].argmax(dim=-1).tolist()
        if len(self.levels) < self.n - 1:  # warming up: one level more per step
            self.levels.append(newest)
            return
        for column, token in enumerate(newest):
            self._remember((*(level[column] for level in self.levels), token))
        self.levels = [*self.levels[1:], newest]

    def _remember(self, gram: tuple[int, ...]) -> None:
        kept = self.pool.setdefault(gram[0], [])
        follow = gram[1:]
        if follow in kept:
            kept.remove(follow)
        kept.insert(0, follow)
        del kept[self.g :]  # only the G newest are ever proposed


class LookaheadPolicy(DecodePolicy):
    """Lookahead decoding (Fu, Bailis, Stoica and Zhang 2024, "Break the Sequential Dependency of LLM Inference
    Using Lookahead Decoding", ICML; arXiv:2402.02057). No draft model: every target forward carries a lookahead
    branch, a 2D Jacobi window of ``window`` (W) columns × ``ngram`` − 1 (N − 1) levels whose newest level comes
    from the target's argmax at the previous one, and whose columns give n-grams for a pool; and a verification
    branch, up to ``guesses`` (G) pool n-grams that start with the pending token, their N − 1 following tokens
    verified as drafts. Lossless: the verification branch is verified like any token tree (greedy longest path,
    coupled exact match, SpecInfer at T > 0) and the window's nodes are never accepted.

    Where qval's version differs from the paper:
    - the G candidates are merged into a trie (candidates sharing a prefix share its nodes) and verified by
      qval's token-tree verification, where the paper verifies G separate rows; the accepted tokens are the same,
      with fewer nodes. At T > 0 the trie goes through SpecInfer's multi-round sampling (the paper's sampling
      verification is the same rule for one-hot drafts);
    - the window is laid out as the paper's Figure 2b (level l, column j at the pending token's position + 1 + l
      + j, attending to level 0 up to column j and column j's lower levels); after every step it moves one level
      whatever the number of tokens accepted, so after a step that emitted k > 1 tokens its positions are k − 1
      behind the text (only the pool's contents, not positions, reach the verification);
    - the window's first level is W tokens drawn from the context with a fixed seed (reproducible), and the first
      N − 2 steps add one level each before n-grams enter the pool; the window is always updated with the
      target's argmax, sampling or not;
    - the pool keeps, per first token, the G most recently seen distinct continuations (older ones could never
      be proposed) and is emptied before every generation; it is filled from the window only, not the prompt;
    - the step's statistics count the verification trie's nodes as ``drafted``; the window's W × (N − 1) nodes
      are computed in the same forward but not counted."""

    name = "lookahead"
    family = "parallel"
    Params = LookaheadParams

    def drafter(self, model):
        p = self.params
        return LookaheadDrafter(p.window, p.ngram, p.guesses)
