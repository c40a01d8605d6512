"""Token Recycling's drafter (Luo et al. 2024, arXiv:2408.08696): an adjacency matrix of top-k candidate tokens
recycled from the target's own forwards, expanded into a static tree and verified as a tree (``tree.py``).

The matrix has one row per vocabulary token: row t holds the k tokens the target ranked highest the last time it
read t. It is int32 (a 49,152-token vocabulary at k = 8 is 1.5 MiB, under the paper's 2 MB), -1 where nothing was
seen yet. After every verification the engine passes the tokens it fed and their logits (``observe_forward``) and
each fed token's row is overwritten with the top-k of its logits: the rejected branches' candidates are recycled
too. Drafting fills a fixed tree template breadth first from the pending token: a template node (parent, rank)
becomes row[parent's token][rank]; a node whose candidate is still -1 is left out with its subtree.
"""

from __future__ import annotations

import heapq

import torch

from .engine import Draft


def static_tree(num_nodes: int, max_depth: int, top_k: int, decay: float = 0.5) -> list[tuple[int, int]]:
    """A static template of ``num_nodes`` (parent template index, candidate rank) pairs in BFS order.

    The paths kept are those with the highest prior Π decay^(rank + 1) over their ranks (rank 0 = the matrix's top
    candidate), at most ``max_depth`` deep: a path's prior is below its prefix's and below that of a sibling of
    lower rank, so the kept set is a tree that widens where candidates are likeliest, as Medusa's and the paper's
    static trees do."""
    heap: list[tuple[float, tuple[int, ...]]] = [(-decay, (0,))]
    kept: list[tuple[int, ...]] = []
    while heap and len(kept) < num_nodes:
        neg, path = heapq.heappop(heap)
        kept.append(path)
        if path[-1] + 1 < top_k:  # the next sibling
            heapq.heappush(heap, (neg * decay, (*path[:-1], path[-1] + 1)))
        if len(path) < max_depth:  # the first child
            heapq.heappush(heap, (neg * decay, (*path, 0)))
    kept.sort(key=lambda p: (len(p), p))  # breadth first: every parent before its children
    index = {path: i for i, path in enumerate(kept)}
    return [(index[path[:-1]] if len(path) > 1 else -1, path[-1]) for path in kept]


class TokenRecyclingDrafter:
    def __init__(self, vocab_size: int, top_k: int, template: list[tuple[int, int]], carry_over: bool):
        self.k, self.template, self.carry_over = top_k, template, carry_over
        self.table = torch.full((vocab_size, top_k), -1, dtype=torch.int32)

    @property
    def state_bytes(self) -> int:
        return self.table.numel() * self.table.element_size()

    def reset(self) -> None:
        # The paper keeps the matrix from one query to the next (its "hot start"); carry_over=False starts every
        # generation empty so a sample's numbers do not depend on the prompts decoded before it.
        if not self.carry_over:
            self.table.fill_(-1)

    def propose(self, context: list[int], temperature: float = 0.0, generator=None) -> Draft:
        rows: dict[int, list[int]] = {}
        tokens: list[int] = []
        parents: list[int] = []
        placed: dict[int, int] = {}  # template index -> draft node index
        for t, (parent_t, rank) in enumerate(self.template):
            if parent_t < 0:
                source, parent = context[-1], -1
            elif parent_t in placed:
                parent = placed[parent_t]
                source = tokens[parent]
            else:
                continue  # its parent had no candidate: the subtree goes too
            if source not in rows:
                rows[source] = self.table[source].tolist()
            candidate = rows[source][rank]
            if candidate < 0:
                continue
            placed[t] = len(tokens)
            tokens.append(candidate)
            parents.append(parent)
        return Draft(tokens, parents=parents)

    def observe_forward(self, input_ids: list[int], logits: torch.Tensor) -> None:
        top = torch.topk(logits, self.k, dim=-1).indices.to("cpu", torch.int32)
        # A token fed twice in one forward (two tree nodes) keeps its last row: written explicitly, since
        # index_put_ leaves the winner of duplicate indices unspecified.
        last = {token: row for row, token in enumerate(input_ids)}
        self.table[torch.tensor(list(last), dtype=torch.long)] = top[torch.tensor(list(last.values()))]
