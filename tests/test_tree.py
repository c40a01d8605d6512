"""Token-tree verification (qval/decode/tree.py) and the token-recycling policy.

Model-free: the tree's mask and positions, greedy acceptance, SpecInfer's multi-round sampling (a distribution
test), the cache gather and the static template. On SmolLM2: one tree step leaves the cache equal to a fresh
forward's (SDPA and eager), token-recycling passes the policy contract, and a real decode through the CLI is
token-identical to AR.
"""

import tomllib
from importlib import metadata

import numpy as np
import pytest
import torch
from conftest import ROOT, run_qval, write_suite
from path_plugins import expose_package
from scipy import stats
from transformers import DynamicCache

from qval import results as R
from qval.decode import tree
from qval.decode.engine import Draft, Engine, _multinomial
from qval.decode.policies import TokenRecyclingParams, TokenRecyclingPolicy
from qval.decode.recycling import TokenRecyclingDrafter, static_tree
from qval.models import kv
from qval.testing import check_policy

# root ─ a(0) ─ c(2) ─ e(4)
#      │      └ d(3)
#      └ b(1)
TREE = tree.Tree([10, 11, 12, 13, 14], [-1, -1, 0, 0, 2])


def test_tree_mask_lets_each_node_see_the_past_and_exactly_its_ancestors():
    mask, positions = tree.attention_inputs(TREE, past=3, dtype=torch.float32, device="cpu")
    assert mask.shape == (1, 1, 6, 9) and positions.tolist() == [[3, 4, 4, 5, 5, 6]]
    seen = (mask[0, 0] == 0).int()
    assert seen[:, :3].all()  # the cached past, for every query
    assert seen[:, 3:].tolist() == [
        [1, 0, 0, 0, 0, 0],  # root
        [1, 1, 0, 0, 0, 0],  # a
        [1, 0, 1, 0, 0, 0],  # b: not its sibling a
        [1, 1, 0, 1, 0, 0],  # c
        [1, 1, 0, 0, 1, 0],  # d: not its sibling c
        [1, 1, 0, 1, 0, 1],  # e
    ]
    assert float(mask.min()) == torch.finfo(torch.float32).min


def test_tree_checks_and_clips():
    with pytest.raises(ValueError, match="parents must come first"):
        tree.Tree([1, 2], [1, -1])
    with pytest.raises(ValueError, match="one parent per token"):
        tree.Tree([1, 2], [-1])
    assert TREE.depths() == [1, 1, 2, 2, 3]
    clipped = TREE.clipped(2)
    assert clipped.tokens == [10, 11, 12, 13] and clipped.parents == [-1, -1, 0, 0]
    assert tree.is_chain([-1, 0, 1]) and not tree.is_chain(TREE.parents)


def _logits_choosing(rows: list[int], vocab: int = 20) -> torch.Tensor:
    logits = torch.zeros(len(rows), vocab)
    for i, tok in enumerate(rows):
        logits[i, tok] = 5.0
    return logits


def test_greedy_acceptance_takes_the_longest_matching_path():
    # argmax: after root 10 (a), after a 13 (d), after d 7 → path a, d, then the target's 7.
    logits = _logits_choosing([10, 13, 0, 0, 7, 0])
    assert tree.accept_greedy(TREE, logits) == ([10, 13, 7], [0, 3])
    # root predicts 11 (b), a leaf: b then the token after b.
    assert tree.accept_greedy(TREE, _logits_choosing([11, 0, 9, 0, 0, 0])) == ([11, 9], [1])
    # nothing matches: only the target's own token
    assert tree.accept_greedy(TREE, _logits_choosing([3, 0, 0, 0, 0, 0])) == ([3], [])


def test_specinfer_multi_round_sampling_is_lossless():
    """Emitted pairs (x1, x2) follow p_root(x1) · p_after(x1)(x2), whatever the tree proposes."""
    vocab = 4
    # root ─ 1 (node 0) ─ 3 (node 2); root ─ 2 (node 1)
    small = tree.Tree([1, 2, 3], [-1, -1, 0])
    p_root = torch.tensor([0.1, 0.3, 0.4, 0.2], dtype=torch.float64)
    p_after_1 = torch.tensor([0.25, 0.25, 0.4, 0.1], dtype=torch.float64)  # row 1 (after node 0 = token 1)
    p_after_2 = torch.tensor([0.5, 0.1, 0.1, 0.3], dtype=torch.float64)  # row 2 (after node 1 = token 2)
    p_after_3 = torch.tensor([0.25, 0.25, 0.25, 0.25], dtype=torch.float64)
    logits = torch.log(torch.stack([p_root, p_after_1, p_after_2, p_after_3]))
    gen = torch.Generator().manual_seed(0)
    n = 6000
    first, pairs = np.zeros(vocab), {1: np.zeros(vocab), 2: np.zeros(vocab)}
    for _ in range(n):
        emitted, path = tree.accept_specinfer(small, logits, 1.0, gen, _multinomial)
        first[emitted[0]] += 1
        if emitted[0] in pairs:
            assert len(emitted) == (3 if emitted[:2] == [1, 3] else 2)  # 1 → 3 → the target's own token
            pairs[emitted[0]][emitted[1]] += 1
        else:
            assert emitted == [emitted[0]] and path == []
    assert stats.chisquare(first, p_root.double().numpy() * n).pvalue > 1e-3
    for tok, p_next in ((1, p_after_1), (2, p_after_2)):
        counts = pairs[tok]
        assert stats.chisquare(counts, p_next.double().numpy() * counts.sum()).pvalue > 1e-3


def test_keep_path_gathers_the_accepted_rows_and_drops_the_rest():
    cache = DynamicCache()
    keys = torch.arange(8, dtype=torch.float32).view(1, 1, 8, 1).repeat(1, 2, 1, 3)
    for layer in range(2):
        cache.update(keys.clone(), -keys.clone(), layer)
    kv.keep_path(cache, 3, [4, 6, 7])
    assert cache.get_seq_length() == 6
    for layer in cache.layers:
        assert layer.keys[0, 0, :, 0].tolist() == [0, 1, 2, 4, 6, 7]
        assert layer.values[0, 1, :, 2].tolist() == [0, -1, -2, -4, -6, -7]


def test_static_tree_is_breadth_first_and_closed_under_prefixes():
    template = static_tree(32, 6, 8)
    assert len(template) == 32 and template[0] == (-1, 0)
    depth = []
    for i, (parent, rank) in enumerate(template):
        assert parent < i and 0 <= rank < 8
        depth.append(1 if parent < 0 else depth[parent] + 1)
        # a node of rank r > 0 has its rank r − 1 sibling in the template
        assert rank == 0 or (parent, rank - 1) in template[:i]
    assert depth == sorted(depth) and max(depth) == 6


def test_recycling_matrix_is_int32_under_two_megabytes_and_recycles_every_fed_token():
    drafter = TokenRecyclingDrafter(49152, 8, static_tree(32, 6, 8), carry_over=False)
    assert drafter.table.dtype == torch.int32 and drafter.state_bytes == 49152 * 8 * 4 < 2_000_000
    assert drafter.propose([5, 6]) == Draft([], parents=[])  # nothing seen yet
    logits = torch.zeros(3, 49152)
    logits[0, 100:108] = torch.arange(8, 0, -1, dtype=torch.float32)  # after token 6: 100 > 101 > … > 107
    logits[1, 200:208] = torch.arange(8, 0, -1, dtype=torch.float32)  # after token 100: 200 > …
    logits[2, 300] = 1.0
    drafter.observe_forward([6, 100, 6], logits)  # 6 is fed twice: its last row (position 2) wins
    assert drafter.table[6, 0] == 300 and drafter.table[100].tolist() == list(range(200, 208))
    drafter.observe_forward([6], logits[:1])
    draft = drafter.propose([1, 6])
    width = sum(parent < 0 for parent, _ in drafter.template)  # the template's first level, breadth first
    assert 1 < width <= 8
    below_100 = [200 + rank for parent, rank in drafter.template if parent == 0]
    # Only rows seen so far draft: 6's candidates, then 100's; 101…107 and 200… have empty rows.
    assert draft.tokens == [*range(100, 100 + width), *below_100]
    assert draft.parents == [-1] * width + [0] * len(below_100)
    drafter.reset()  # carry_over=False: every generation starts empty
    assert int(drafter.table.max()) == -1


@pytest.mark.parametrize("attention", ["sdpa", "eager", "qval"])
def test_a_tree_step_leaves_the_cache_of_a_fresh_forward(smollm, attention):
    """After verifying a tree whose accepted path is interleaved with rejected branches, the next step's logits
    equal those of one fresh forward over the whole emitted sequence: on transformers' forward with either attention
    (the mask is additive for eager), and on qval's own forward (models/fast_llama.py, the engine's default)."""
    model = smollm.model
    before = model.config._attn_implementation
    model.set_attn_implementation("sdpa" if attention == "qval" else attention)
    try:
        ids = smollm.chat_ids([{"role": "user", "content": "Count: one, two, three, four, five,"}])
        engine = Engine(model, smollm.eos_token_ids, fast=attention == "qval")
        assert engine.forward == ("qval" if attention == "qval" else "transformers")
        ar = engine.decode(engine.prefill(ids), None, 6).token_ids
        state = engine.prefill(ids)
        pending = ar[0]
        # The right path ar[1], ar[2], ar[3] at nodes 1, 3, 5, wrong siblings and a wrong subtree around it.
        wrong = [(t + 17) % 1000 for t in ar]
        draft = Draft([wrong[1], ar[1], wrong[2], ar[2], wrong[3], ar[3]], parents=[-1, -1, 0, 1, 1, 3])
        emitted, accepted, drafted = engine._verify_tree(draft, pending, state.cache, 99, 1, 0.0, None, None, None)
        assert emitted == ar[1:5] and accepted == 3 and drafted == 6
        sequence = ids + ar[:4]
        assert state.cache.get_seq_length() == len(sequence)
        step = kv.forward(model, torch.tensor([[ar[4]]]), state.cache).logits[0, -1]
        fresh = model(input_ids=torch.tensor([sequence + [ar[4]]])).logits[0, -1]
        torch.testing.assert_close(step, fresh, atol=1e-4, rtol=1e-4)
    finally:
        model.set_attn_implementation(before)


def test_token_recycling_passes_the_policy_contract_and_accepts_tree_paths(smollm):
    report = check_policy(TokenRecyclingPolicy, smollm, max_new_tokens=40)
    assert any("tree draft" in rule for rule in report.passed)
    assert any("coupled sampling" in rule for rule in report.passed)
    engine = Engine(smollm.model, smollm.eos_token_ids)
    ids = smollm.chat_ids([{"role": "user", "content": "Repeat exactly: red green blue, red green blue, red green"}])
    drafter = TokenRecyclingPolicy(TokenRecyclingParams()).drafter(smollm)
    ar = engine.decode(engine.prefill(ids), None, 40)
    for _ in range(2):  # the second generation starts from the carried-over matrix
        trace = engine.decode(engine.prefill(ids), drafter, 40)
        assert trace.token_ids == ar.token_ids
    assert max(trace.accepted_per_step) >= 2 and max(trace.drafted_per_step) > max(trace.accepted_per_step)
    assert 1 + sum(a + 1 for a in trace.accepted_per_step) >= len(trace.token_ids)


def _installed_policies() -> set[str]:
    return {ep.name for ep in metadata.entry_points(group="qval.policies")}


def test_token_recycling_through_the_cli_is_token_identical_to_ar(tmp_path):
    # The shared environment's editable install declares the entry points of the pyproject it was installed from;
    # a checkout that adds one is made visible the way tests/path_plugins.py makes any package visible.
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["entry-points"]["qval.policies"]
    assert "token-recycling" in declared
    env = {} if "token-recycling" in _installed_policies() else expose_package(tmp_path / "site", ROOT)
    suite = write_suite(
        tmp_path / "tree.yaml",
        """\
        name: tree
        models: [smollm2-135m-instruct]
        decode:
          datasets: [{name: spec-bench, params: {categories: [summarization], limit_per_category: 2, max_turns: 1}}]
          policies: [ar, {name: token-recycling, params: {num_nodes: 16}}]
          max_new_tokens: 16
          metrics: [speedup, lossless, mean_accepted_tokens]
        """,
    )
    results = tmp_path / "results"
    proc = run_qval("run", suite, "--results", results, "--workers", "1", env=env, timeout=1800)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    board = R.leaderboard(results, "tree", "decode").set_index("method")
    assert board.loc["token-recycling", "lossless"] == 1.0 and board.loc["token-recycling", "lossless__n"] == 2
    assert board.loc["token-recycling", "mean_accepted_tokens"] >= 1.0
    samples = R.samples(results, "decode", "tree")
    methods = R.cells(results, "tree").set_index("cell_id")["method"]
    outputs = {(methods[row.cell_id], row.sample_id): list(row.output_ids) for row in samples.itertuples(index=False)}
    assert len(outputs) == 4
    for (_, sample_id), ids in outputs.items():
        assert ids == outputs["ar", sample_id]
    tree_rows = samples[samples["cell_id"].map(methods) == "token-recycling"]
    assert all(len(d) == steps for d, steps in zip(tree_rows["drafted"], tree_rows["target_steps"], strict=True))
