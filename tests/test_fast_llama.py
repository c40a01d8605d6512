"""qval's own forward (qval/models/fast_llama.py) against transformers' on the real SmolLM2: the same logits and
hidden states (within float rounding: the fused, re-laid-out products sum in another order) and the same greedy
choices after a prefill, a chain verification, a crop, a token-tree verification with its 4D mask and the
cache gathered to the accepted path, and on a layer-skip view; the engine decodes the same tokens with either
forward; and models it does not cover keep transformers' forward, with the reason."""

import pytest
import torch

from qval.decode import tree
from qval.decode.drafters import first_layers_view, int8_copy
from qval.decode.engine import Engine
from qval.decode.policies import NgramDrafter
from qval.models import fast_llama, kv

PROMPT = [{"role": "user", "content": "Write a short story about a robot learning to paint."}]


def _same(a: torch.Tensor, b: torch.Tensor) -> None:
    # Rounding-level agreement: the largest difference within 1e-5 of the largest magnitude (measured on SmolLM2 on
    # this machine: prefills equal to the bit, decode steps' logits up to about 2e-6 of the largest), and for logits
    # the same argmax at every position.
    assert a.shape == b.shape
    error, scale = float((a - b).abs().max()), float(a.abs().max())
    assert error <= 1e-5 * scale, (error, scale)
    if a.shape[-1] > 1000:  # logits
        assert torch.equal(a.argmax(-1), b.argmax(-1))


@torch.inference_mode()
def test_logits_hidden_states_and_cache_operations_equal_transformers(smollm):
    model = smollm.model
    assert fast_llama.unsupported(model) is None
    ids = smollm.chat_ids(PROMPT)
    theirs, ours = kv.new_cache(model), kv.new_static_cache(model)
    assert isinstance(ours, fast_llama.StaticCache)
    a = kv.forward(model, torch.tensor([ids]), theirs, output_hidden_states=True)
    b = kv.forward(model, torch.tensor([ids]), ours, output_hidden_states=True)
    _same(a.logits, b.logits)
    assert len(a.hidden_states) == len(b.hidden_states) == model.config.num_hidden_layers + 1
    for x, y in zip(a.hidden_states, b.hidden_states):
        _same(x, y)
    # A chain verification (pending token + 3 drafts) past the prompt, then a crop of the 2 rejected drafts.
    chain = torch.tensor([[int(a.logits[0, -1].argmax()), 42, 77, 1000]])
    _same(kv.forward(model, chain, theirs).logits, kv.forward(model, chain, ours).logits)
    theirs.crop(-2)
    ours.crop(-2)
    assert theirs.get_seq_length() == ours.get_seq_length() == len(ids) + 2
    one = torch.tensor([[5]])
    _same(
        kv.forward(model, one, theirs, logits_to_keep=1).logits, kv.forward(model, one, ours, logits_to_keep=1).logits
    )
    # A token tree: two branches under the pending token; the cache keeps the root and the path 1 -> 3.
    drafted = tree.Tree([11, 22, 33, 44], [-1, -1, 0, 1])
    past = ours.get_seq_length()
    _same(tree.forward(model, theirs, 9, drafted), tree.forward(model, ours, 9, drafted))
    for cache in (theirs, ours):
        kv.keep_path(cache, past + 1, [past + 1 + 1, past + 1 + 3])
    assert theirs.get_seq_length() == ours.get_seq_length() == past + 3
    _same(kv.forward(model, one, theirs).logits, kv.forward(model, one, ours).logits)


@torch.inference_mode()
def test_capacity_grows_past_its_first_allocation_without_changing_the_logits(smollm):
    model = smollm.model
    ids = smollm.chat_ids(PROMPT)
    theirs, ours = kv.new_cache(model), kv.new_static_cache(model)
    kv.forward(model, torch.tensor([ids]), theirs)
    kv.forward(model, torch.tensor([ids]), ours)
    first = ours.capacity
    block = torch.tensor([list(range(100, 100 + first))])  # more than the room left: the buffers are reallocated
    _same(
        kv.forward(model, block, theirs, logits_to_keep=1).logits,
        kv.forward(model, block, ours, logits_to_keep=1).logits,
    )
    assert ours.capacity > first and ours.get_seq_length() == len(ids) + first


@torch.inference_mode()
def test_a_layer_skip_view_runs_on_the_fast_forward_too(smollm):
    view = first_layers_view(smollm.model, 6)
    assert fast_llama.unsupported(view) is None
    ids = torch.tensor([smollm.chat_ids(PROMPT)])
    theirs, ours = kv.new_cache(view), kv.new_static_cache(view)
    assert ours.layers == 6
    _same(kv.forward(view, ids, theirs).logits, kv.forward(view, ids, ours).logits)


def test_models_it_does_not_cover_keep_transformers_forward_with_the_reason(smollm):
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig, LlamaConfig, LlamaForCausalLM

    tiny = dict(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2)
    llama = LlamaForCausalLM(LlamaConfig(**tiny, num_key_value_heads=1))
    assert fast_llama.unsupported(llama) is None
    quantized = int8_copy(llama)  # PEARL's and draft-model's int8 drafters
    assert "quantized" in fast_llama.unsupported(quantized)
    assert kv.new_static_cache(quantized) is None
    gemma = Gemma3ForCausalLM(Gemma3TextConfig(**tiny, num_key_value_heads=1, head_dim=8))
    assert "gemma3" in fast_llama.unsupported(gemma)
    engine = Engine(gemma, set())
    assert engine.forward == "transformers" and "gemma3" in engine.forward_reason
    assert Engine(smollm.model, set(), fast=False).forward == "transformers"


@pytest.mark.slow
def test_the_engine_decodes_the_same_tokens_with_either_forward(smollm):
    fast, slow = Engine(smollm.model, smollm.eos_token_ids), Engine(smollm.model, smollm.eos_token_ids, fast=False)
    assert (fast.forward, slow.forward) == ("qval", "transformers")
    ids = smollm.chat_ids(PROMPT)
    ar = fast.decode(fast.prefill(ids), None, 16)
    assert ar.token_ids == slow.decode(slow.prefill(ids), None, 16).token_ids
    for engine in (fast, slow):  # a speculative policy: lossless on both, the same steps
        trace = engine.decode(engine.prefill(ids), NgramDrafter(4, 3, 1), 16)
        assert trace.token_ids == ar.token_ids


def test_biases_and_a_changed_weight_reach_the_decode_layout():
    """Llama with attention and MLP biases and Qwen2 (q/k/v biases) match transformers; a weight changed in place
    after the first forward is not served from a stale decode-layout copy."""
    from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(0)
    tiny = dict(vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4)
    models = (
        LlamaForCausalLM(LlamaConfig(**tiny, num_key_value_heads=2, attention_bias=True, mlp_bias=True)),
        Qwen2ForCausalLM(Qwen2Config(**tiny, num_key_value_heads=2)),
    )
    ids = torch.tensor([[1, 5, 9, 3, 7, 2]])
    for model in models:
        model.eval().requires_grad_(False)
        for module in model.modules():  # nonzero biases, so a dropped one would show
            if isinstance(module, torch.nn.Linear) and module.bias is not None:
                module.bias.normal_()
        assert fast_llama.unsupported(model) is None
        _same(
            kv.forward(model, ids, kv.new_cache(model)).logits,
            kv.forward(model, ids, kv.new_static_cache(model)).logits,
        )
        model.model.layers[1].mlp.up_proj.weight.mul_(2.0)
        model.lm_head.weight.add_(0.5)
        _same(
            kv.forward(model, ids, kv.new_cache(model)).logits,
            kv.forward(model, ids, kv.new_static_cache(model)).logits,
        )
        # The fusion without the input-major copies (a benchmark lever): the same logits, and forward keeps it.
        fast_llama.prepare(model, input_major=False)
        _same(
            kv.forward(model, ids, kv.new_cache(model)).logits,
            kv.forward(model, ids, kv.new_static_cache(model)).logits,
        )
        assert not fast_llama._LAYOUT[model.model.layers[0]].input_major
        fast_llama.release(model)
        assert not any(module in fast_llama._LAYOUT for module in model.modules())
