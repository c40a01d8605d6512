"""How qval runs a Hugging Face causal LM over its own KV cache.

qval builds each ``DynamicCache`` itself, passes it to every forward and keeps its own reference: a forward fills
the cache in place, so the cache is never read back from the model's output, and it is cropped with its own
``crop`` method. No legacy tuple cache is ever built.

transformers 5.24 renamed the forward keyword ``past_key_values`` to ``cache`` (the old name warns from 5.24 and
goes in 5.40; outputs' ``.past_key_values`` warns too). qval supports transformers from 5.17, whose models know only
``past_key_values``; there ``cache`` would land in the forward's catch-all ``**kwargs`` instead of being rejected
(not checked on those releases). So the keyword is read from the model's own ``forward`` signature, once per model
class.
"""

from __future__ import annotations

import inspect
from typing import Any

_KEYWORD: dict[type, str] = {}  # model class -> the keyword its forward takes the cache under


def cache_keyword(model: Any) -> str:
    """``cache`` for models of transformers >= 5.24, ``past_key_values`` for older ones."""
    cls = type(model)
    if cls not in _KEYWORD:
        params = inspect.signature(model.forward).parameters
        if "cache" in params:
            _KEYWORD[cls] = "cache"
        elif "past_key_values" in params:
            _KEYWORD[cls] = "past_key_values"
        else:
            raise TypeError(f"{cls.__name__}.forward takes no KV cache (neither `cache` nor `past_key_values`)")
    return _KEYWORD[cls]


def new_cache(model: Any) -> Any:
    """An empty ``DynamicCache`` laid out for the model (its layer types come from the config).

    Sliding-window layers (Gemma 3: five in six layers) keep only the last window of keys by default and then refuse
    ``crop``, which speculative decoding calls after every rejection; recording the past keeps the keys a crop needs.
    A layer that records keeps all its keys until a crop trims them, as a full-attention layer does, and the model
    still attends to the window only."""
    from transformers import DynamicCache

    cache = DynamicCache(config=model.config)
    if any(getattr(layer, "is_sliding", False) for layer in cache.layers):
        cache.activate_past_recording()
    return cache


def new_static_cache(model: Any) -> Any:
    """A preallocated cache for qval's own forward (``fast_llama``), or None when that forward does not cover the
    model (then use ``new_cache``). Every ``forward``/``keep_path`` on it runs qval's forward."""
    from . import fast_llama

    return None if fast_llama.unsupported(model) else fast_llama.StaticCache(model)


def forward(model: Any, input_ids: Any, cache: Any, **kwargs: Any) -> Any:
    """One forward pass that reads and extends ``cache`` in place; returns the model's output (logits).
    A ``fast_llama.StaticCache`` selects qval's own forward, any other cache transformers'."""
    from . import fast_llama

    if isinstance(cache, fast_llama.StaticCache):
        return fast_llama.forward(model, input_ids, cache, **kwargs)
    return model(input_ids=input_ids, use_cache=True, **{cache_keyword(model): cache}, **kwargs)


def keep_path(cache: Any, start: int, rows: list[int]) -> None:
    """Keep the cache's first ``start`` positions and then only ``rows`` (increasing, all ≥ ``start``), in that
    order: after a token-tree verification, the root and the accepted path; the rejected branches go.

    Works on full-attention ``DynamicLayer``s (their keys/values are plain tensors over every position); a sliding
    window layer keeps a bookkeeping length of its own and is refused rather than silently corrupted."""
    import torch
    from transformers.cache_utils import DynamicLayer, DynamicSlidingWindowLayer

    from . import fast_llama

    if isinstance(cache, fast_llama.StaticCache):
        cache.keep_path(start, rows)
        return
    end = start + len(rows)
    for layer in cache.layers:
        if type(layer) is not DynamicLayer:
            kind = "sliding-window" if isinstance(layer, DynamicSlidingWindowLayer) else type(layer).__name__
            raise TypeError(f"token-tree verification needs full-attention cache layers, not {kind}")
        keys, values = layer.keys, layer.values
        if not layer.is_initialized or keys is None or values is None:
            continue
        if rows != list(range(start, end)):
            index = torch.tensor(rows, device=keys.device)
            # The right-hand side is gathered before it is written, so overlapping rows are safe.
            keys[..., start:end, :] = keys.index_select(-2, index)
            values[..., start:end, :] = values.index_select(-2, index)
        layer.keys, layer.values = keys[..., :end, :], values[..., :end, :]
