"""The Jacobi family beyond plain ``jacobi``: Lookahead decoding and Speculative Jacobi Decoding (SJD).

Model-free: the lookahead forward's layout (window nodes, mask, positions), the candidate trie, the pool's Jacobi
update, parameter validation, and SJD's rejection sampling on a tiny random Llama against the exact distribution.
On SmolLM2: both pass the policy contract (T = 0 and coupled), the lookahead forward leaves the cache of a plain
tree forward and its pool's n-grams get accepted on a repetitive prompt. Through the CLI: both beside AR.
"""

import itertools

import numpy as np
import pytest
import torch
from conftest import run_qval, write_suite
from pydantic import ValidationError
from scipy import stats

from qval import results as R
from qval.decode import tree
from qval.decode.engine import Draft, Engine
from qval.decode.lookahead import (
    LookaheadDrafter,
    LookaheadParams,
    LookaheadPolicy,
    candidate_trie,
    window_branch,
)
from qval.decode.sjd import SpeculativeJacobiDrafter, SpeculativeJacobiParams

# W = 3 columns, N − 1 = 2 levels: level 0 = 20 21 22 (depths 1 2 3), level 1 = 30 31 32 (depths 2 3 4).
LEVELS = [[20, 21, 22], [30, 31, 32]]


def test_window_nodes_follow_one_jacobi_trajectory_each():
    branch = window_branch(LEVELS)
    assert branch.tokens == [20, 21, 22, 30, 31, 32]
    assert branch.depths == [1, 2, 3, 2, 3, 4]
    # level 0 is causal within itself; level 1, column j sees level 0 up to column j, then itself
    assert branch.sees == [[], [0], [0, 1], [0], [0, 1], [0, 1, 2]]


def test_lookahead_mask_keeps_tree_and_window_apart():
    trie = tree.Tree([40, 41, 42], [-1, 0, -1])  # root ─ 40 ─ 41; root ─ 42
    mask, positions = tree.attention_inputs(
        trie, past=2, dtype=torch.float32, device="cpu", lookahead=window_branch(LEVELS)
    )
    assert mask.shape == (1, 1, 10, 12)
    # root, the trie at depths 1 2 1, the window at its own depths
    assert positions.tolist() == [[2, 3, 4, 3, 3, 4, 5, 4, 5, 6]]
    seen = (mask[0, 0] == 0).int()
    assert seen[:, :2].all()  # the cached past, for every query
    assert seen[:, 2:].tolist() == [
        # root 40 41 42 │ 20 21 22 30 31 32
        [1, 0, 0, 0, 0, 0, 0, 0, 0, 0],  # root
        [1, 1, 0, 0, 0, 0, 0, 0, 0, 0],  # 40
        [1, 1, 1, 0, 0, 0, 0, 0, 0, 0],  # 41
        [1, 0, 0, 1, 0, 0, 0, 0, 0, 0],  # 42: no window node in any trie row
        [1, 0, 0, 0, 1, 0, 0, 0, 0, 0],  # 20 (level 0, column 0)
        [1, 0, 0, 0, 1, 1, 0, 0, 0, 0],  # 21
        [1, 0, 0, 0, 1, 1, 1, 0, 0, 0],  # 22
        [1, 0, 0, 0, 1, 0, 0, 1, 0, 0],  # 30 (level 1, column 0): 20, itself
        [1, 0, 0, 0, 1, 1, 0, 0, 1, 0],  # 31: 20 21, itself
        [1, 0, 0, 0, 1, 1, 1, 0, 0, 1],  # 32: 20 21 22, itself
    ]
    # without a window the mask is the plain tree's
    plain, plain_positions = tree.attention_inputs(trie, past=2, dtype=torch.float32, device="cpu")
    torch.testing.assert_close(mask[..., :4, :6], plain)
    assert positions[:, :4].tolist() == plain_positions.tolist()


def test_lookahead_nodes_are_checked():
    with pytest.raises(ValueError, match="earlier nodes only"):
        tree.Lookahead([1, 2], [1, 2], [[], [1]])
    with pytest.raises(ValueError, match="depth must be"):
        tree.Lookahead([1], [0], [[]])
    with pytest.raises(ValueError, match="one depth and one attention row"):
        tree.Lookahead([1, 2], [1], [[]])


def test_candidate_trie_shares_prefixes():
    tokens, parents = candidate_trie([(5, 6), (5, 7), (8, 6), (5, 6)])
    assert tokens == [5, 6, 7, 8, 6] and parents == [-1, 0, 0, -1, 3]
    assert candidate_trie([]) == ([], [])


def _argmax_rows(tokens: list[int], vocab: int = 64) -> torch.Tensor:
    logits = torch.zeros(len(tokens), vocab)
    logits[torch.arange(len(tokens)), torch.tensor(tokens)] = 1.0
    return logits


def test_jacobi_window_warms_up_then_fills_the_pool():
    drafter = LookaheadDrafter(window=2, ngram=3, guesses=2)
    first = drafter.propose([9, 8, 7, 6])
    assert first.tokens == [] and first.lookahead is not None  # empty pool: the window alone
    assert len(drafter.levels) == 1 and set(drafter.levels[0]) <= {9, 8, 7, 6}
    drafter.levels = [[50, 51]]  # distinct first tokens, so the pool's keys below are known
    drafter.observe_lookahead(_argmax_rows([1, 2]))  # warm-up: a second level, nothing pooled
    assert drafter.levels == [[50, 51], [1, 2]] and drafter.pool == {}
    # the full window's rows: level 0's, then level 1's (whose argmax 3 4 completes the n-grams)
    drafter.observe_lookahead(_argmax_rows([0, 0, 3, 4]))
    assert drafter.levels == [[1, 2], [3, 4]]
    assert drafter.pool == {50: [(1, 3)], 51: [(2, 4)]}
    drafter.observe_lookahead(_argmax_rows([0, 0, 5, 6]))  # n-grams (1 3 5), (2 4 6)
    drafter.levels = [[1, 2], [7, 8]]
    drafter.observe_lookahead(_argmax_rows([0, 0, 9, 9]))  # (1 7 9): newest first, at most G kept
    drafter.levels = [[1, 2], [3, 4]]
    drafter.observe_lookahead(_argmax_rows([0, 0, 5, 5]))  # (1 3 5) again: moves to the front, no duplicate
    assert drafter.pool[1] == [(3, 5), (7, 9)]
    draft = drafter.propose([0, 1])
    assert draft.tokens == [3, 5, 7, 9] and draft.parents == [-1, 0, -1, 2]
    drafter.reset()
    assert drafter.pool == {} and drafter.levels == []


def test_lookahead_params_are_validated():
    assert LookaheadParams().model_dump() == {"window": 5, "ngram": 3, "guesses": 5}
    for bad in ({"ngram": 1}, {"window": 0}, {"guesses": 0}, {"window": 64, "guesses": 64, "ngram": 16}, {"w": 3}):
        with pytest.raises(ValidationError):
            LookaheadParams(**bad)
    with pytest.raises(ValidationError):
        SpeculativeJacobiParams(num_draft=0)


def test_a_lookahead_step_leaves_the_cache_of_a_fresh_forward(smollm):
    """The window's nodes change neither the trie's logits nor what the cache keeps."""
    model = smollm.model
    ids = smollm.chat_ids([{"role": "user", "content": "Count: one, two, three, four, five,"}])
    engine = Engine(model, smollm.eos_token_ids)
    ar = engine.decode(engine.prefill(ids), None, 6).token_ids
    seen = []

    class Watch:
        def observe_lookahead(self, logits):
            seen.append(logits.shape)

    state = engine.prefill(ids)
    draft = Draft([ar[1], ar[2]], lookahead=window_branch([[7, 8, 9], [10, 11, 12]]))  # a chain and a window
    emitted, accepted, drafted = engine._verify_tree(
        draft, ar[0], state.cache, 99, 1, 0.0, None, None, None, Watch().observe_lookahead
    )
    assert emitted == ar[1:4] and accepted == 2 and drafted == 2
    assert seen == [torch.Size([6, model.config.vocab_size])]
    sequence = ids + ar[:3]
    assert state.cache.get_seq_length() == len(sequence)
    from qval.models import kv

    step = kv.forward(model, torch.tensor([[ar[3]]]), state.cache).logits[0, -1]
    fresh = model(input_ids=torch.tensor([sequence + [ar[3]]])).logits[0, -1]
    torch.testing.assert_close(step, fresh, atol=1e-4, rtol=1e-4)


def test_lookahead_pool_ngrams_are_accepted_on_a_repetitive_prompt(smollm):
    engine = Engine(smollm.model, smollm.eos_token_ids)
    ids = smollm.chat_ids([{"role": "user", "content": "Repeat exactly: red green blue, red green blue, red green"}])
    ar = engine.decode(engine.prefill(ids), None, 40)
    drafter = LookaheadPolicy(LookaheadParams()).drafter(smollm)
    trace = engine.decode(engine.prefill(ids), drafter, 40)
    assert trace.token_ids == ar.token_ids
    assert drafter.pool  # the window filled it
    # Every draft came from the pool (the window's nodes are never drafted), so accepted tokens are pool n-grams'.
    assert sum(trace.accepted_per_step) > 0, trace.accepted_per_step
    assert trace.target_steps < len(trace.token_ids) - 1


def _tiny_llama(vocab: int):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=vocab,
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=64,
        tie_word_embeddings=False,
    )
    model = LlamaForCausalLM(config).eval()
    with torch.no_grad():
        model.lm_head.weight.mul_(12)  # peaked, unequal next-token distributions (random init is near uniform)
    return model


class _GuessNotFromQ(SpeculativeJacobiDrafter):
    """A broken SJD (the test's control): reports the distributions q but drafts their argmax instead of a sample
    from them, so min(1, p/q) is applied to tokens that were not drawn from q."""

    def propose(self, context, temperature=0.0, generator=None):
        draft = super().propose(context, temperature, generator)
        if draft.probs is None:
            return draft
        return Draft(draft.probs.argmax(dim=-1).tolist(), draft.probs)


def test_sjd_rejection_sampling_is_lossless_in_distribution():
    """On a 3-token random Llama the first 6 sampled tokens (729 sequences) follow AR's exact distribution, and
    the same chi-square test catches a drafter whose guesses are not drawn from the q it reports. The first step
    drafts copies of the last token; from the second on, guesses are sampled from the previous step's rows."""
    vocab, length, prompt, n = 3, 6, [1, 2, 0], 1500
    model = _tiny_llama(vocab)
    sequences = list(itertools.product(range(vocab), repeat=length))
    with torch.no_grad():
        logp = torch.log_softmax(
            model(input_ids=torch.tensor([prompt + list(s) for s in sequences])).logits.double(), -1
        )
    steps = torch.arange(length)
    chosen = logp[:, len(prompt) - 1 + steps].gather(-1, torch.tensor(sequences)[..., None])[..., 0]
    exact = chosen.sum(-1).exp().numpy()
    assert exact.sum() == pytest.approx(1.0, abs=1e-6)
    index = {s: i for i, s in enumerate(sequences)}
    engine = Engine(model, set())

    def chi_square(drafter, n: int) -> tuple[float, float]:
        counts = np.zeros(len(sequences))
        generator = torch.Generator().manual_seed(1)
        accepted = drafted = 0
        for _ in range(n):
            trace = engine.decode(engine.prefill(prompt), drafter, length, 1.0, generator)
            counts[index[tuple(trace.token_ids)]] += 1
            accepted, drafted = accepted + sum(trace.accepted_per_step), drafted + sum(trace.drafted_per_step)
        expected = exact * n
        big = expected >= 5  # bins expected below 5 are pooled into one
        observed = np.append(counts[big], counts[~big].sum())
        return stats.chisquare(observed, np.append(expected[big], expected[~big].sum())).pvalue, accepted / drafted

    pvalue, rate = chi_square(SpeculativeJacobiDrafter(3), n)
    assert pvalue > 1e-3 and rate > 0.2, (pvalue, rate)  # drafts are accepted, and the output is AR's distribution
    broken, _ = chi_square(_GuessNotFromQ(3), n)
    assert broken < 1e-3, broken


def test_lookahead_and_sjd_through_the_cli_beside_ar(tmp_path):
    suite = write_suite(
        tmp_path / "jacobi.yaml",
        """\
        name: jacobi-family
        models: [smollm2-135m-instruct]
        decode:
          datasets: [{name: spec-bench, params: {categories: [summarization], limit_per_category: 1, max_turns: 1}}]
          policies: [ar, lookahead, sjd]
          temperatures: [0]
          max_new_tokens: 16
          metrics: [speedup, lossless, mean_accepted_tokens]
        """,
    )
    results = tmp_path / "results"
    proc = run_qval("run", suite, "--results", results, "--workers", "1", timeout=1800)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    board = R.leaderboard(results, "jacobi-family", "decode").set_index("method")
    samples = R.samples(results, "decode", "jacobi-family")
    methods = R.cells(results, "jacobi-family").set_index("cell_id")["method"]
    by_method = {methods[row.cell_id]: row for row in samples.itertuples(index=False)}
    for name in ("lookahead", "sjd"):
        assert board.loc[name, "lossless"] == 1.0 and board.loc[name, "lossless__n"] == 1
        assert board.loc[name, "mean_accepted_tokens"] >= 1.0
        row = by_method[name]
        assert list(row.output_ids) == list(by_method["ar"].output_ids)
        assert len(row.accepted) == len(row.drafted) == row.target_steps > 0  # per-step statistics recorded
