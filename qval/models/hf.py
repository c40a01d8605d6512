"""Any Hugging Face model folder or hub id already on disk: the path a GPU user points at Qwen or Llama."""

from __future__ import annotations

from pathlib import Path

from pydantic import ConfigDict

from .base import LocalModelSource, ModelParams, hf_folder_problem


class HFPathParams(ModelParams):
    model_config = ConfigDict(extra="forbid")
    path: str


class HFPathModel(LocalModelSource):
    """Any Hugging Face model folder, or a hub id already in the local HF cache, loaded with transformers in the worker:
    decoding cells and every scorer.

    ``qval plan`` refuses a ``path`` that is neither, before any worker starts."""

    name = "hf"
    Params = HFPathParams

    def local_path(self) -> Path:
        return Path(self.params.path).expanduser()

    def check_source(self) -> tuple[str, str] | None:
        problem = hf_folder_problem(self.local_path())
        return ("path", problem) if problem else None
