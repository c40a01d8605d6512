"""qval's own forward pass for Llama-architecture causal LMs over a preallocated KV cache: the decode engine's fast
path (issue #17).

Why: at batch 1 on a CPU, a transformers forward of a small model spends a large share of each step in Python and
small tensor ops around the matrix products (module calls, mask construction, output capturing, a cache that grows
by ``torch.cat``), and its matrix products read each weight in the layout that suits training, not a one-row
decode step. This forward reads the model's own modules (``model.model.layers``, its rotary embedding, its norms
and LM head), so a view that shares a target's first layers (layer-skip drafters) works too; nothing in the model
is changed.

The levers, each measured in benchmarks/bench_engine_levers.py (README, "AR engine vs vLLM"):
- a preallocated KV cache filled in place (``StaticCache``) and no per-call module machinery;
- the decode layout: q, k and v fused into one matrix product, gate and up into another, and those plus the output
  projection and the LM head stored input-major ([in, out], contiguous). On the CPU, a one-row product against a
  wide [out, in] weight (the layout ``nn.Linear`` keeps) streams the weight about half as fast as against its
  input-major copy; the down projection (narrow output) is fastest in its own layout and keeps it. The copies cost
  memory: about 80% of the model's weights again, made by ``prepare`` (the engine calls it when it is built, and
  each ``StaticCache`` when it is made, which also remakes a copy whose weights changed) and dropped with the
  modules (``release`` drops them at once). ``decode.forward: transformers`` makes none;
- the rotary embedding on the query and key heads in one pass (they are adjacent in the fused product's output).
  Two more candidates measured no faster and are not used: the residual additions inside the products (``addmm``)
  and ``F.rms_norm`` (on the CPU the same composite of operations as transformers' RMSNorm).

What it matches: transformers' Llama forward with SDPA attention, operation for operation apart from the matrix
products (RMSNorm in float32 then the weight, the model's own ``rotary_emb``, SDPA with ``enable_gqa`` when no mask
is needed, ``repeat_kv`` and a mask otherwise). The fused and re-laid-out products may sum in another order than
transformers', so logits agree within float rounding, not always to the bit; tests/test_fast_llama.py checks the
logits, tree masks, hidden states, crop and keep_path against transformers' DynamicCache within a tolerance and
with the same greedy tokens. The keyword arguments are those qval's engine, token trees and drafters pass to a
transformers forward (``logits_to_keep``, ``attention_mask`` as a 4D float mask, ``position_ids``,
``output_hidden_states``).

Supported: ``llama``, ``mistral`` (without a sliding window) and ``qwen2`` (attention bias, no sliding window)
with plain ``nn.Linear`` projections and SiLU MLPs; anything else (Gemma 3's sliding windows, a quantized drafter)
keeps transformers' forward (``unsupported`` says why).
"""

from __future__ import annotations

import functools
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

ARCHITECTURES = ("llama", "mistral", "qwen2")
_GROW = 256  # capacity is allocated in steps of this many positions


def unsupported(model: Any) -> str | None:
    """Why this forward cannot run ``model``, or None when it can."""
    config: Any = getattr(model, "config", None)
    kind = getattr(config, "model_type", None)
    if config is None or kind not in ARCHITECTURES:
        return f"model type {kind!r} (the fast forward covers {', '.join(ARCHITECTURES)})"
    if getattr(config, "sliding_window", None) and getattr(config, "use_sliding_window", kind == "mistral"):
        return "a sliding-window attention"
    if getattr(config, "hidden_act", "silu") != "silu":
        return f"MLP activation {config.hidden_act!r}"
    if getattr(config, "pretraining_tp", 1) not in (None, 1):
        return "pretraining_tp > 1"
    inner = getattr(model, "model", None)
    if inner is None or not hasattr(inner, "rotary_emb") or not hasattr(inner, "layers"):
        return "no model.model.layers / rotary_emb"
    for layer in inner.layers[: config.num_hidden_layers]:
        attn, mlp = layer.self_attn, layer.mlp
        for proj in (attn.q_proj, attn.k_proj, attn.v_proj, attn.o_proj, mlp.gate_proj, mlp.up_proj, mlp.down_proj):
            if type(proj) is not torch.nn.Linear:
                return f"a {type(proj).__name__} projection (a quantized model)"
        if getattr(attn, "q_norm", None) is not None or getattr(attn, "sliding_window", None):
            return "per-head query/key norms or a sliding window"
    if type(model.lm_head) is not torch.nn.Linear:
        return f"a {type(model.lm_head).__name__} LM head"
    return None


class StaticCache:
    """Keys and values of every layer in preallocated buffers ([1, kv_heads, capacity, head_dim] each), filled in
    place; the methods the engine calls on a transformers cache (``get_seq_length``, ``crop``) plus ``keep_path``.
    Capacity grows in steps of ``_GROW`` positions (a copy), so a long generation costs a few copies, not one per
    token as a cache that grows by concatenation does."""

    def __init__(self, model: Any):
        config = model.config
        self.layers = int(config.num_hidden_layers)
        self.kv_heads = int(config.num_key_value_heads)
        self.head_dim = int(getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads)
        weight = model.lm_head.weight
        self.dtype, self.device = weight.dtype, weight.device
        self.length = 0
        self.capacity = 0
        self.keys: list[torch.Tensor] = []
        self.values: list[torch.Tensor] = []
        # A cache is one sequence: the decode layout is checked against the weights here, once per sequence, so
        # that each forward only looks it up (checking every weight's version each forward cost ~1 ms a step).
        prepare(model)

    def get_seq_length(self, layer_idx: int = 0) -> int:
        return self.length

    def crop(self, max_length: int) -> None:
        """transformers' semantics: keep the first ``max_length`` positions; a negative value removes that many
        from the end."""
        if max_length < 0:
            max_length = self.length - abs(max_length)
        self.length = max(0, min(self.length, max_length))

    def keep_path(self, start: int, rows: list[int]) -> None:
        """Keep positions [0, start) and then only ``rows`` (increasing, all ≥ start), in that order."""
        end = start + len(rows)
        if rows != list(range(start, end)):
            index = torch.tensor(rows, device=self.device)
            # The buffers are inference tensors (made in ``forward``): they may only be written in inference mode.
            with torch.inference_mode():
                for buffer in (*self.keys, *self.values):
                    buffer[:, :, start:end] = buffer.index_select(2, index)
        self.length = end

    def reserve(self, extra: int) -> None:
        """Room for ``extra`` more positions."""
        need = self.length + extra
        if need <= self.capacity:
            return
        capacity = max(2 * self.capacity, -(-need // _GROW) * _GROW)
        shape = (1, self.kv_heads, capacity, self.head_dim)
        keys = [torch.empty(shape, dtype=self.dtype, device=self.device) for _ in range(self.layers)]
        values = [torch.empty(shape, dtype=self.dtype, device=self.device) for _ in range(self.layers)]
        for new, old in zip((*keys, *values), (*self.keys, *self.values)):
            new[:, :, : self.length] = old[:, :, : self.length]
        self.keys, self.values, self.capacity = keys, values, capacity


@dataclass
class Output:
    """The fields of a transformers ``CausalLMOutputWithPast`` that qval reads."""

    logits: torch.Tensor
    hidden_states: tuple[torch.Tensor, ...] | None = None


@dataclass
class _Layer:
    """One decoder layer's projections in the decode layout: q, k and v as one matrix and gate and up as another
    (one matrix product each instead of three and two), stored input-major ([in, out], contiguous) with the output
    projection. The down projection is not copied."""

    qkv: torch.Tensor
    qkv_bias: torch.Tensor | None
    o: torch.Tensor
    o_bias: torch.Tensor | None
    gate_up: torch.Tensor
    gate_up_bias: torch.Tensor | None


@dataclass
class _Made:
    """A module's decode layout (a ``_Layer``, or the LM head's [in, out] weight) and what it was made from."""

    layout: Any
    source: tuple
    input_major: bool


# The decode layout of each decoder layer and LM head, keyed by the module and dropped with it: a view that shares
# a model's first layers (layer-skip drafters) shares their copies too.
_LAYOUT: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _version(tensor: torch.Tensor) -> int | None:
    try:
        return tensor._version
    except RuntimeError:  # an inference tensor (a model built under inference mode) keeps no version counter
        return None


def _source(*modules: Any) -> tuple:
    # A weight changed in place (a new _version) or replaced (a new object or storage) makes its copy stale.
    return tuple((id(p), p.data_ptr(), _version(p)) for m in modules for p in (m.weight, m.bias) if p is not None)


def _fused(weights: tuple[torch.Tensor, ...], input_major: bool) -> torch.Tensor:
    """The weights stacked along their outputs, as the [in, out] operand of ``h @ W``: a contiguous input-major copy,
    or (``input_major=False``, a lever for benchmarks/bench_engine_levers.py) a transposed view of an [out, in]
    stack, which for one weight is no copy at all."""
    stacked = weights[0].detach() if len(weights) == 1 else torch.cat([w.detach() for w in weights])
    return stacked.t().contiguous() if input_major else stacked.t()


def _bias(*modules: Any) -> torch.Tensor | None:
    biases = [m.bias for m in modules]
    if all(b is None for b in biases):
        return None
    return torch.cat(
        [b.detach() if b is not None else m.weight.new_zeros(m.out_features) for b, m in zip(biases, modules)]
    )


def _check(module: Any, parts: tuple, input_major: bool | None, make: Callable[[bool], Any]) -> None:
    """(Re)make ``module``'s decode layout with ``make`` when it is missing, stale against the weights of ``parts``,
    or not in the ``input_major`` layout asked for (None: the one made before, else input-major)."""
    source = _source(*parts)
    made = _LAYOUT.get(module)
    if input_major is None:
        input_major = made.input_major if made is not None else True
    if made is None or made.source != source or made.input_major != input_major:
        with torch.inference_mode():
            _LAYOUT[module] = _Made(make(input_major), source, input_major)


def _layer_layout(layer: Any, input_major: bool) -> _Layer:
    attn, mlp = layer.self_attn, layer.mlp
    return _Layer(
        qkv=_fused((attn.q_proj.weight, attn.k_proj.weight, attn.v_proj.weight), input_major),
        qkv_bias=_bias(attn.q_proj, attn.k_proj, attn.v_proj),
        o=_fused((attn.o_proj.weight,), input_major),
        o_bias=_bias(attn.o_proj),
        gate_up=_fused((mlp.gate_proj.weight, mlp.up_proj.weight), input_major),
        gate_up_bias=_bias(mlp.gate_proj, mlp.up_proj),
    )


def prepare(model: Any, input_major: bool | None = None) -> None:
    """Make the decode layout of every layer and the LM head that is missing or stale (a copy of most weights:
    about 0.3 s for a 135M model on 2 CPU cores), so that no timed forward pays for it. The engine calls it when it
    is built, and every ``StaticCache`` when it is made. ``input_major=False`` keeps the fused weights in
    ``nn.Linear``'s [out, in] layout (and the LM head uncopied): the fusion without the layout, a lever the
    benchmarks measure apart; None keeps the layout made before (input-major the first time)."""
    for layer in model.model.layers[: model.config.num_hidden_layers]:
        attn, mlp = layer.self_attn, layer.mlp
        parts = (attn.q_proj, attn.k_proj, attn.v_proj, attn.o_proj, mlp.gate_proj, mlp.up_proj)
        _check(layer, parts, input_major, functools.partial(_layer_layout, layer))
    head = model.lm_head
    _check(head, (head,), input_major, lambda chosen: _fused((head.weight,), chosen))


def release(model: Any) -> None:
    """Drop the decode-layout copies made for ``model`` now, rather than when its modules are collected."""
    for module in model.modules():
        _LAYOUT.pop(module, None)


def _rms(x: torch.Tensor, norm: Any) -> torch.Tensor:
    # As transformers' LlamaRMSNorm: in float32, then back to the input dtype before the weight. (F.rms_norm was no
    # faster here: on the CPU it runs the same composite of operations.)
    dtype = x.dtype
    h = x.to(torch.float32)
    h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + norm.variance_epsilon)
    return norm.weight * h.to(dtype)


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def _repeat_kv(x: torch.Tensor, groups: int) -> torch.Tensor:
    if groups == 1:
        return x
    batch, heads, length, dim = x.shape
    return x[:, :, None].expand(batch, heads, groups, length, dim).reshape(batch, heads * groups, length, dim)


@torch.inference_mode()
def forward(
    model: Any,
    input_ids: torch.Tensor,
    cache: StaticCache,
    *,
    attention_mask: torch.Tensor | None = None,
    position_ids: torch.Tensor | None = None,
    logits_to_keep: int = 0,
    output_hidden_states: bool = False,
    use_cache: bool = True,
) -> Output:
    """One forward over ``input_ids`` ([1, n]) that reads and extends ``cache`` (the fed tokens take positions
    ``past .. past + n − 1`` of the cache, whatever their ``position_ids``); ``attention_mask``, when given, is a 4D
    float mask over [n, past + n] (0 = attend) as qval's token trees build it."""
    inner, config = model.model, model.config
    n = int(input_ids.shape[1])
    past = cache.length
    cache.reserve(n)
    heads = int(config.num_attention_heads)
    kv_heads, head_dim = cache.kv_heads, cache.head_dim
    groups = heads // kv_heads
    q_width, qk_width, qk_heads = heads * head_dim, (heads + kv_heads) * head_dim, heads + kv_heads
    x = inner.embed_tokens(input_ids)[0]  # [n, hidden]: the batch of one is dropped until the output
    if position_ids is None:
        position_ids = torch.arange(past, past + n, device=x.device)[None]
    cos, sin = inner.rotary_emb(x[None], position_ids)
    cos, sin = cos[0, :, None], sin[0, :, None]  # [n, 1, head_dim]: broadcast over the heads
    # Masks as transformers' SDPA path uses them: none for one query (or a causal prefill), else explicit.
    mask = attention_mask
    causal = False
    if mask is None and n > 1:
        if past == 0:
            causal = True
        else:
            seen = (
                torch.arange(past + n, device=x.device)[None] <= torch.arange(past, past + n, device=x.device)[:, None]
            )
            mask = seen[None, None]
    hidden: list[torch.Tensor] = [x[None]] if output_hidden_states else []
    end = past + n
    for index, layer in enumerate(inner.layers[: config.num_hidden_layers]):
        weights: _Layer = _LAYOUT[layer].layout  # made by prepare when the cache was
        h = _rms(x, layer.input_layernorm)
        qkv = h @ weights.qkv if weights.qkv_bias is None else torch.addmm(weights.qkv_bias, h, weights.qkv)
        # Rotary embedding on the query and key heads at once (they are adjacent in the fused output).
        qk = qkv[:, :qk_width].view(n, qk_heads, head_dim)
        qk = qk * cos + _rotate_half(qk) * sin
        q = qk[:, :heads].transpose(0, 1)[None]
        keys, values = cache.keys[index], cache.values[index]
        keys[0, :, past:end] = qk[:, heads:].transpose(0, 1)
        values[0, :, past:end] = qkv[:, qk_width:].view(n, kv_heads, head_dim).transpose(0, 1)
        k_all, v_all = keys[:, :, :end], values[:, :, :end]
        if mask is None:
            out = F.scaled_dot_product_attention(
                q, k_all, v_all, is_causal=causal, scale=layer.self_attn.scaling, enable_gqa=groups > 1
            )
        else:
            out = F.scaled_dot_product_attention(
                q, _repeat_kv(k_all, groups), _repeat_kv(v_all, groups), attn_mask=mask, scale=layer.self_attn.scaling
            )
        attended = out[0].transpose(0, 1).reshape(n, q_width)
        x = x + (attended @ weights.o if weights.o_bias is None else torch.addmm(weights.o_bias, attended, weights.o))
        h = _rms(x, layer.post_attention_layernorm)
        gate_up = (
            h @ weights.gate_up
            if weights.gate_up_bias is None
            else torch.addmm(weights.gate_up_bias, h, weights.gate_up)
        )
        width = gate_up.shape[-1] // 2
        down = layer.mlp.down_proj  # a narrow output: fastest in nn.Linear's own layout
        x = x + F.linear(F.silu(gate_up[:, :width]) * gate_up[:, width:], down.weight, down.bias)
        if output_hidden_states:
            hidden.append(x[None])
    cache.length = end
    x = _rms(x, inner.norm)
    if output_hidden_states:
        hidden[-1] = x[None]  # transformers' last hidden state is the normed one
    kept = x if not logits_to_keep else x[-logits_to_keep:]
    logits = kept @ _LAYOUT[model.lm_head].layout
    if model.lm_head.bias is not None:
        logits = logits + model.lm_head.bias
    return Output(logits[None], tuple(hidden) if output_hidden_states else None)
