"""qval's own forward pass for Llama-architecture causal LMs over a preallocated KV cache: the decode engine's fast
path (issue #17).

Why: at batch 1 on a CPU, a transformers forward of a small model spends a large share of each step in Python and
small tensor ops around the matrix products (module calls, mask construction, output capturing, a cache that grows
by ``torch.cat``). This forward runs the same weights through the same operations with none of that: it reads the
model's own modules (``model.model.layers``, its rotary embedding, its norms and LM head), so a view that shares a
target's first layers (layer-skip drafters) works too, and nothing is copied or changed in the model.

What it matches: transformers' Llama forward with SDPA attention, operation for operation where that is cheap
(RMSNorm in float32, rotary embedding from the model's own ``rotary_emb``, SDPA with ``enable_gqa`` when no mask is
needed, ``repeat_kv`` and a mask otherwise), so greedy outputs agree with transformers' (tests/test_fast_llama.py
compares logits, tree masks, hidden states, crop and keep_path against transformers' DynamicCache). The keyword
arguments are those qval's engine, token trees and drafters pass to a transformers forward
(``logits_to_keep``, ``attention_mask`` as a 4D float mask, ``position_ids``, ``output_hidden_states``).

Supported: ``llama``, ``mistral`` (without a sliding window) and ``qwen2`` (attention bias, no sliding window)
with plain ``nn.Linear`` projections and SiLU MLPs; anything else (Gemma 3's sliding windows, a quantized drafter)
keeps transformers' forward (``unsupported`` says why).
"""

from __future__ import annotations

import weakref
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


# Weights prepacked for MKL's one-row GEMM (``pack_weights``), per Linear module; absent: the module's own forward.
_PACKED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def pack_weights(model: Any) -> int:
    """Prepack every projection and the LM head of a CPU float32 model for MKL's one-row GEMM (what a decode step
    is at batch 1); returns how many were packed (0 where MKL or the dtype does not allow it). The packed copy
    doubles the weights' memory, so it is a choice, not a default."""
    mkl = getattr(torch.ops, "mkl", None)
    if mkl is None or not hasattr(mkl, "_mkl_linear") or not torch.backends.mkl.is_available():
        return 0
    count = 0
    for module in model.modules():
        if (
            type(module) is torch.nn.Linear
            and module.weight.dtype == torch.float32
            and module.weight.device.type == "cpu"
        ):
            if module not in _PACKED:
                _PACKED[module] = torch.ops.mkl._mkl_reorder_linear_weight(module.weight.detach(), 1)
            count += 1
    return count


def unpack_weights(model: Any) -> None:
    """Drop the packed copies ``pack_weights`` made for ``model``."""
    for module in model.modules():
        _PACKED.pop(module, None)


def _linear(module: Any, x: torch.Tensor) -> torch.Tensor:
    packed = _PACKED.get(module) if x.shape[-2] == 1 else None
    if packed is None:
        return module(x)
    flat = x.reshape(1, x.shape[-1])
    return torch.ops.mkl._mkl_linear(flat, packed, module.weight, module.bias, 1).view(*x.shape[:-1], -1)


def _rms(x: torch.Tensor, norm: Any) -> torch.Tensor:
    # As transformers' LlamaRMSNorm: in float32, then back to the input dtype before the weight.
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
    x = inner.embed_tokens(input_ids)
    if position_ids is None:
        position_ids = torch.arange(past, past + n, device=x.device)[None]
    cos, sin = inner.rotary_emb(x, position_ids)
    cos, sin = cos[:, None], sin[:, None]
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
    hidden: list[torch.Tensor] = [x] if output_hidden_states else []
    end = past + n
    for index, layer in enumerate(inner.layers[: config.num_hidden_layers]):
        attn, mlp = layer.self_attn, layer.mlp
        h = _rms(x, layer.input_layernorm)
        q = _linear(attn.q_proj, h).view(1, n, heads, head_dim).transpose(1, 2)
        k = _linear(attn.k_proj, h).view(1, n, kv_heads, head_dim).transpose(1, 2)
        v = _linear(attn.v_proj, h).view(1, n, kv_heads, head_dim).transpose(1, 2)
        q = q * cos + _rotate_half(q) * sin
        k = k * cos + _rotate_half(k) * sin
        keys, values = cache.keys[index], cache.values[index]
        keys[:, :, past:end] = k
        values[:, :, past:end] = v
        k_all, v_all = keys[:, :, :end], values[:, :, :end]
        if mask is None:
            out = F.scaled_dot_product_attention(
                q, k_all, v_all, is_causal=causal, scale=attn.scaling, enable_gqa=groups > 1
            )
        else:
            out = F.scaled_dot_product_attention(
                q, _repeat_kv(k_all, groups), _repeat_kv(v_all, groups), attn_mask=mask, scale=attn.scaling
            )
        x = x + _linear(attn.o_proj, out.transpose(1, 2).reshape(1, n, heads * head_dim))
        h = _rms(x, layer.post_attention_layernorm)
        x = x + _linear(mlp.down_proj, F.silu(_linear(mlp.gate_proj, h)) * _linear(mlp.up_proj, h))
        if output_hidden_states:
            hidden.append(x)
    cache.length = end
    x = _rms(x, inner.norm)
    if output_hidden_states:
        hidden[-1] = x  # transformers' last hidden state is the normed one
    kept = x if not logits_to_keep else x[:, -logits_to_keep:]
    return Output(_linear(model.lm_head, kept), tuple(hidden) if output_hidden_states else None)
