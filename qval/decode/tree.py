"""Token-tree verification: several draft branches verified in ONE target forward (SpecInfer, Miao et al. 2024).

A tree draft is a list of nodes, each a token and the index of its parent node (-1: the root, i.e. the pending
token the target has not yet seen). Nodes come in topological order (a parent before its children), so a path
from the root visits increasing indices. The forward feeds [root, node 0, node 1, …] with

- a 4D float attention mask (0 = attend, the dtype's minimum = masked): every query sees the whole cached past
  and, inside the tree, exactly its own ancestors and itself. transformers returns a 4D mask as given
  (``masking_utils._preprocess_mask_arguments``), and a float mask is added to the scores by both the SDPA and
  the eager attention (a bool mask would be wrong for eager, which adds it);
- tree position ids: the past length + the node's depth (the root has depth 0), so siblings share a position.

Acceptance walks down from the root. At T = 0 it follows the child whose token is the target's argmax (the
longest path that matches); with coupled sampling it follows the child equal to the position-seeded sample, so
the output is AR's token for token; at T > 0 with rejection sampling it runs SpecInfer's multi-round speculative
sampling over the siblings (lossless). Afterwards the cache holds the root and the accepted path only
(``kv.keep_path``): the rejected branches' keys and values are dropped.

Statistics per verify step: ``accepted`` = draft tokens on the accepted path, so accepted + 1 is the number of
tokens the step emitted; ``drafted`` = tree nodes verified.

A draft may also carry ``Lookahead`` nodes (Lookahead decoding's Jacobi window): fed after the tree in the same
forward, each with its own attention row and position, never seen by a tree node and never accepted. Their logits
go back to the drafter (``observe_lookahead``) and their keys/values go with the rejected branches.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..models import kv


@dataclass
class Tree:
    tokens: list[int]
    parents: list[int]  # parents[i] < i, or -1 for a child of the root

    def __post_init__(self) -> None:
        if len(self.tokens) != len(self.parents):
            raise ValueError(f"a tree draft needs one parent per token ({len(self.tokens)} vs {len(self.parents)})")
        for i, parent in enumerate(self.parents):
            if not -1 <= parent < i:
                raise ValueError(f"tree node {i} has parent {parent}: parents must come first (-1 = the root)")

    def depths(self) -> list[int]:
        """Depth of each node (a child of the root has depth 1)."""
        depth: list[int] = []
        for parent in self.parents:
            depth.append(1 if parent < 0 else depth[parent] + 1)
        return depth

    def children(self) -> list[list[int]]:
        """children[0] are the root's children; children[i + 1] are node i's, in the order the drafter gave them."""
        kids: list[list[int]] = [[] for _ in range(len(self.tokens) + 1)]
        for i, parent in enumerate(self.parents):
            kids[parent + 1].append(i)
        return kids

    def clipped(self, max_depth: int) -> Tree:
        """The nodes at depth ≤ max_depth (never draft past the output cap), parents renumbered."""
        keep = [i for i, d in enumerate(self.depths()) if d <= max_depth]
        if len(keep) == len(self.tokens):
            return self
        new_index = {old: new for new, old in enumerate(keep)}
        return Tree([self.tokens[i] for i in keep], [new_index.get(self.parents[i], -1) for i in keep])


@dataclass
class Lookahead:
    """Nodes verified in the same forward as a tree but never accepted: node i sits at the root's position +
    ``depths[i]`` and attends to the cached past, the root, the earlier lookahead nodes listed in ``sees[i]`` and
    itself. No tree node attends to a lookahead node, and a lookahead node to no tree node, so the tree's logits
    are those of a forward without them."""

    tokens: list[int]
    depths: list[int]  # ≥ 1: the root has depth 0
    sees: list[list[int]]  # sees[i] ⊆ range(i)

    def __post_init__(self) -> None:
        if not len(self.tokens) == len(self.depths) == len(self.sees):
            raise ValueError("a lookahead branch needs one depth and one attention row per token")
        for i, (depth, seen) in enumerate(zip(self.depths, self.sees, strict=True)):
            if depth < 1 or any(not 0 <= k < i for k in seen):
                raise ValueError(f"lookahead node {i}: depth must be ≥ 1 and it may see earlier nodes only")


def is_chain(parents: list[int]) -> bool:
    return all(parent == i - 1 for i, parent in enumerate(parents))


def attention_inputs(
    tree: Tree, past: int, dtype: torch.dtype, device, lookahead: Lookahead | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """(4D mask of shape (1, 1, n + 1, past + n + 1), position ids of shape (1, n + 1)) for [root, *nodes], the
    lookahead nodes (if any) counted in n after the tree's."""
    size = len(tree.tokens) + 1
    extra = lookahead.tokens if lookahead is not None else []
    n = size + len(extra)
    allowed = torch.zeros(n, n, dtype=torch.bool)
    allowed[:, 0] = True  # every node descends from the root
    for i, parent in enumerate(tree.parents):
        row = i + 1
        allowed[row, row] = True
        if parent >= 0:
            allowed[row] |= allowed[parent + 1]
    depths = [0, *tree.depths()]
    if lookahead is not None:
        for i, seen in enumerate(lookahead.sees):
            row = size + i
            allowed[row, row] = True
            allowed[row, [size + k for k in seen]] = True
        depths += lookahead.depths
    tree_part = torch.full((n, n), torch.finfo(dtype).min, dtype=dtype)
    tree_part.masked_fill_(allowed, 0.0)
    mask = torch.cat([torch.zeros(n, past, dtype=dtype), tree_part], dim=1)[None, None].to(device)
    positions = torch.tensor([[past + d for d in depths]], device=device)
    return mask, positions


def forward(model, cache, pending: int, tree: Tree, lookahead: Lookahead | None = None) -> torch.Tensor:
    """Verify the tree in one forward; returns float logits of shape (n + 1 [+ lookahead nodes], vocab): row 0
    predicts the token after the root, row i + 1 the token after node i, then one row per lookahead node."""
    past = cache.get_seq_length()
    device = next(model.parameters()).device
    mask, positions = attention_inputs(tree, past, next(model.parameters()).dtype, device, lookahead)
    extra = lookahead.tokens if lookahead is not None else []
    ids = torch.tensor([[pending, *tree.tokens, *extra]], device=device)
    out = kv.forward(model, ids, cache, attention_mask=mask, position_ids=positions)
    return out.logits[0].float()


def accept_greedy(tree: Tree, logits: torch.Tensor) -> tuple[list[int], list[int]]:
    """Longest path whose tokens equal the target's argmax: (emitted tokens, accepted node indices)."""
    target = logits.argmax(dim=-1).tolist()
    return _walk(tree, lambda row, siblings: _match(tree, siblings, target[row]), lambda row: target[row])


def accept_coupled(tree: Tree, logits: torch.Tensor, coupled, first_position: int) -> tuple[list[int], list[int]]:
    """Follow the child equal to the position-seeded sample (``engine._Coupled``): AR's tokens exactly."""
    depth = [0, *tree.depths()]
    cache: dict[int, int] = {}

    def sample(row: int) -> int:
        if row not in cache:
            cache[row] = coupled.sample(logits[row], first_position + depth[row])
        return cache[row]

    return _walk(tree, lambda row, siblings: _match(tree, siblings, sample(row)), sample)


def accept_specinfer(
    tree: Tree, logits: torch.Tensor, temperature: float, generator, multinomial
) -> tuple[list[int], list[int]]:
    """SpecInfer's multi-round speculative sampling (Miao et al. 2024, Algorithm 2) for deterministic drafts.

    At a node with target distribution p and children x_1..x_m (each a one-hot q): accept x_j with probability
    min(1, p'(x_j) / 1) = p'(x_j), where p' is the residual so far; on rejection p' ← norm(max(0, p' − onehot(x_j)))
    = p' with x_j removed. Each sibling round is one speculative-sampling step, so the emitted token follows p
    (lossless); when every child is rejected, the token is sampled from the final residual."""
    residual: dict[int, torch.Tensor] = {}

    def probs(row: int) -> torch.Tensor:  # only the rows on the walked path are ever needed
        return torch.softmax(logits[row].to("cpu", torch.float64) / temperature, dim=-1)

    def choose(row: int, siblings: list[int]) -> int | None:
        p = probs(row)
        for child in siblings:
            tok = tree.tokens[child]
            total = float(p.sum())
            share = float(p[tok]) / total if total > 0 else 0.0
            if torch.rand((), generator=generator).item() < share:
                return child
            p[tok] = 0.0
        residual[row] = p
        return None

    def bonus(row: int) -> int:
        p = residual[row] if row in residual else probs(row)
        return multinomial(p if float(p.sum()) > 0 else probs(row), generator)

    return _walk(tree, choose, bonus)


def _match(tree: Tree, siblings: list[int], token: int) -> int | None:
    return next((child for child in siblings if tree.tokens[child] == token), None)


def _walk(tree: Tree, choose, bonus) -> tuple[list[int], list[int]]:
    """From the root: ``choose(row, children)`` picks the accepted child (None: stop), ``bonus(row)`` gives the
    target's own token at the last accepted row. Rows are logits rows (0 = root, i + 1 = node i)."""
    kids = tree.children()
    row, path = 0, []
    while kids[row]:
        child = choose(row, kids[row])
        if child is None:
            break
        path.append(child)
        row = child + 1
    return [tree.tokens[i] for i in path] + [bonus(row)], path
