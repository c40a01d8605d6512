"""Base class of model sources and the loaded-model handle shared by scorers and decoding policies."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict


class ModelParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    dtype: str = "float32"


@dataclass
class LoadedModel:
    """A causal LM and its tokenizer, loaded once per worker shard."""

    name: str
    path: str
    model: Any
    tokenizer: Any
    device: str

    @property
    def eos_token_ids(self) -> set[int]:
        ids = set()
        eos = getattr(self.model.generation_config, "eos_token_id", None) or self.tokenizer.eos_token_id
        for tok in eos if isinstance(eos, (list, tuple)) else [eos]:
            if tok is not None:
                ids.add(int(tok))
        return ids

    def chat_ids(self, messages: list[dict]) -> list[int]:
        """Token ids of a chat ending with the assistant's turn opening (the tokenizer's own chat template).

        ``apply_chat_template`` returns a list in some transformers versions and a BatchEncoding in others.
        """
        encoded = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True)
        if hasattr(encoded, "keys") and "input_ids" in encoded:
            encoded = encoded["input_ids"]
        return list(encoded)


class ModelSource:
    """Knows where a model's HF folder is (materialising it if needed) and loads it with ``from_pretrained``."""

    name: ClassVar[str] = "model"
    Params: ClassVar[type[BaseModel]] = ModelParams

    def __init__(self, params: BaseModel):
        self.params = params

    def identity(self) -> dict:
        """What distinguishes this model's outputs: part of every cell id that uses it."""
        return {"source": self.name, **self.params.model_dump()}

    def local_path(self) -> Path:
        raise NotImplementedError

    def load(self, device: str | None = None) -> LoadedModel:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        path = self.local_path()
        dtype = getattr(torch, self.params.dtype)
        model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype).to(device).eval()
        tokenizer = AutoTokenizer.from_pretrained(path)
        return LoadedModel(self.name, str(path), model, tokenizer, device)


def cache_dir() -> Path:
    """Where converted models live: ``$QVAL_CACHE`` or ``~/.cache/qval`` (never the repo, never the results)."""
    return Path(os.environ.get("QVAL_CACHE", Path.home() / ".cache" / "qval"))
