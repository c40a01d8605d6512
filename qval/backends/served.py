"""Models served by an engine qval does not step itself (vLLM offline, an OpenAI-compatible server).

For these, qval cannot run its own draft-and-verify loop: the engine does the speculation. A decoding policy is
translated into the engine's own configuration (``ServedModel.configure``), each prompt is one request, and the
engine's per-request speculative-decoding counters become the same per-sample record the transformers backend
writes (target steps, drafted and accepted per step). The harness still owns the clock: the request is timed
around the call, and where the engine reports first- and last-token timestamps those split prefill from decode.

Their base class, ``ServedModel``, and its ``Generation`` live in ``qval.models.base``; this module keeps what the
served backends share.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import QvalError
from ..models.base import Generation, ServedModel  # noqa: F401 - re-exported: they lived here


class PolicyNotServable(QvalError):
    """The policy has no equivalent in this serving engine (e.g. Jacobi decoding in vLLM)."""


def registered_model_folder(name: str, dtype: str) -> Path:
    """The HF folder a registered model source materialises (e.g. ``smollm2-135m-instruct``)."""
    from ..registry import REGISTRY

    cls = REGISTRY.get("models", name)
    return cls(cls.Params(dtype=dtype)).local_path()


def tokenizer_and_eos(path) -> tuple:
    """What a served model keeps in this process: its tokenizer and EOS ids, read from the model folder."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path), eos_ids_of(path)


def eos_ids_of(path) -> set[int]:
    """EOS ids from a model folder's generation config (else its tokenizer), without loading the weights."""
    from transformers import AutoTokenizer, GenerationConfig

    ids: set[int] = set()
    try:
        eos = GenerationConfig.from_pretrained(path).eos_token_id
    except OSError:
        eos = None
    if eos is None:
        eos = AutoTokenizer.from_pretrained(path).eos_token_id
    for tok in eos if isinstance(eos, (list, tuple)) else [eos]:
        if tok is not None:
            ids.add(int(tok))
    return ids
