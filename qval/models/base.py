"""Model sources (the ``qval.models`` plugins) and the loaded models they give: ``LocalModel`` or ``ServedModel``."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict

from ..errors import QvalError
from .requests import Requests


class ModelParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    dtype: str = "float32"


class Model:
    """A loaded model, as scorers and decoding policies see it: a name, the folder its tokenizer comes from, the
    tokenizer (chat template and token ids, identical on every backend), its EOS ids, and the worker-wide request
    layer of Q-alignment scorers (``requests()``). Either a ``LocalModel`` (the weights live in this process) or a
    ``ServedModel`` (an engine or server answers); code tells them apart with ``isinstance``."""

    def __init__(self, name: str, path: str, tokenizer: Any):
        self.name, self.path, self.tokenizer = name, path, tokenizer
        self._requests: Requests | None = None

    @property
    def eos_token_ids(self) -> set[int]:
        raise NotImplementedError

    def chat_ids(self, messages: list[dict]) -> list[int]:
        """Token ids of a chat ending with the assistant's turn opening: the tokenizer's own chat template, or, for a
        tokenizer without one (a base model), qval's plain-text format (``plain_chat``) after the tokenizer's own
        special tokens (BOS), as a template would start.

        ``apply_chat_template`` returns a list in some transformers versions and a BatchEncoding in others.
        """
        if not getattr(self.tokenizer, "chat_template", None):
            return list(self.tokenizer(plain_chat(messages), add_special_tokens=True)["input_ids"])
        encoded = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True)
        if hasattr(encoded, "keys") and "input_ids" in encoded:
            encoded = encoded["input_ids"]
        return list(encoded)

    def requests(self) -> Requests:
        """The request layer of this model: one per loaded model, so its memo spans scorers and cells."""
        if self._requests is None:
            self._requests = self.make_requests()
        return self._requests

    def make_requests(self) -> Requests:
        """A new request layer (``requests()`` keeps one); a model that cannot serve Q-alignment scorers raises."""
        raise QvalError(f"Q-alignment scorers cannot run on {type(self).__name__} models")

    def close(self) -> None:
        """Release what this model started (engine processes); idempotent."""


def plain_chat(messages: list[dict]) -> str:
    """qval's own plain-text chat format, for base models whose tokenizer has no chat template (it is no model's
    training format): each message is ``<Role>: <content>`` (the role capitalised: ``System``, ``User``,
    ``Assistant``), messages are separated by a blank line, and the prompt ends with the assistant's prefix
    ``Assistant:`` and a newline, so the reply starts a line, as it does after a chat template's assistant header.

    ``[{"role": "user", "content": "Hi"}]`` gives ``"User: Hi\n\nAssistant:\n"``. Deterministic: the same messages
    always give the same text, so cell ids need nothing more than the model's identity.
    """
    turns = [f"{str(m['role']).capitalize()}: {m['content']}" for m in messages]
    return "\n\n".join([*turns, "Assistant:\n"])


class LocalModel(Model):
    """A causal LM and its tokenizer in this process (transformers), loaded once per worker shard."""

    def __init__(self, name: str, path: str, model: Any, tokenizer: Any, device: str):
        super().__init__(name, path, tokenizer)
        self.model, self.device = model, device

    @property
    def eos_token_ids(self) -> set[int]:
        ids = set()
        eos = getattr(self.model.generation_config, "eos_token_id", None) or self.tokenizer.eos_token_id
        for tok in eos if isinstance(eos, (list, tuple)) else [eos]:
            if tok is not None:
                ids.add(int(tok))
        return ids

    def make_requests(self) -> Requests:
        from ..qalign.llm import LLMRequests

        return LLMRequests(self)


LoadedModel = LocalModel  # the name before served models had a base class of their own (kept for plugins)


@dataclass
class Generation:
    """One request to a served model, as the harness clocked it and the engine counted it."""

    token_ids: list[int]
    finish_reason: str | None
    wall_s: float  # the whole request, clocked by the harness around the call
    prefill_s: float | None = None  # request start → first token, when the engine reports timestamps
    decode_s: float | None = None  # first → last token, when the engine reports timestamps
    per_step_accepted: list[int] | None = None  # verify steps that drafted ≥ 1 token (vLLM counts only those)
    per_step_drafted: list[int] | None = None
    info: dict = field(default_factory=dict)

    def steps(self) -> tuple[list[int], list[int]]:
        """(drafted, accepted) per target step, including steps where nothing was drafted.

        After the first token (from the prefill), each verify step emits its accepted drafts plus one token, so the
        steps without a draft number new_tokens − 1 − Σ(accepted + 1) over the drafting steps (≥ 0: a stop string
        or the length cap can cut a step's tokens). Their order among the drafting steps is unknown; they go last,
        which no metric depends on.
        """
        drafted = list(self.per_step_drafted or [])
        accepted = list(self.per_step_accepted or [])
        plain = max(0, len(self.token_ids) - 1 - sum(a + 1 for a in accepted))
        return drafted + [0] * plain, accepted + [0] * plain


class ServedModel(Model):
    """A model behind a serving engine (vLLM, an OpenAI-compatible server). Nothing of it lives in this process
    but its tokenizer (for chat templates and token ids, so prompts are byte-identical to a local model's).

    A decoding policy is translated into the engine's own configuration (``configure``), and each prompt is one
    timed request (``generate``). Q-alignment scorers need ``make_requests``, which only some engines give."""

    backend: ClassVar[str] = "served"  # the name policies' ``served_config`` is asked for
    local_engine: ClassVar[bool] = False  # True: the engine is a child of the worker (its CPU load is ours)

    def __init__(self, name: str, path: str, tokenizer: Any, eos_ids: set[int]):
        super().__init__(name, path, tokenizer)
        self._eos = set(eos_ids)

    @property
    def eos_token_ids(self) -> set[int]:
        return set(self._eos)

    @property
    def threads(self) -> int | None:
        """The CPU threads the engine decodes with, as it reports them; None where that is unknown (a server)."""
        return None

    def configure(self, policy) -> None:
        """Make the engine decode with this policy (restart it with a speculative config, pick a server…)."""
        raise NotImplementedError

    def generate(self, prompt_ids: list[int], max_new_tokens: int, temperature: float, seed: int) -> Generation:
        raise NotImplementedError

    def make_requests(self) -> Requests:
        raise QvalError(
            f"the {self.backend} backend gives Q-alignment scorers no request layer: they run on transformers "
            "models, on vLLM's offline engine (`source: vllm`) and on OpenAI-compatible servers (`source: openai`)"
        )


class ModelSource:
    """A model plugin (entry-point group ``qval.models``): its params, its identity in cell ids, and ``load()``.

    Subclass ``LocalModelSource`` (weights loaded into the worker) or ``ServedModelSource`` (an engine answers).
    A direct subclass of ModelSource loads locally, as before the two existed."""

    name: ClassVar[str] = ""  # the entry-point name (the registry sets it when a class leaves it empty)
    Params: ClassVar[type[BaseModel]] = ModelParams

    def __init__(self, params: Any):  # an instance of the class's own Params
        self.params = params

    def identity(self) -> dict:
        """What distinguishes this model's outputs: part of every cell id that uses it."""
        return {"source": self.name, **self.params.model_dump()}

    def local_path(self) -> Path:
        """The HF folder of the weights (or of the tokenizer, for a served model)."""
        raise NotImplementedError

    def check_source(self) -> tuple[str, str] | None:
        """(param, reason) when this source cannot work as configured and that shows without loading anything (a
        model folder that does not exist): the suite is refused at `qval plan` instead of a worker failing once the
        run has started. None: nothing found. Sources that name a model a server knows have nothing to check."""
        return None

    def load(self, device: str | None = None) -> Model:
        return _load_transformers(self, device)


class LocalModelSource(ModelSource):
    """A model whose weights the worker loads (transformers): ``load()`` gives a ``LocalModel``."""

    def load(self, device: str | None = None) -> LocalModel:
        return _load_transformers(self, device)


class ServedModelSource(ModelSource):
    """A model an engine or server runs: ``load()`` gives a ``ServedModel`` (the tokenizer, and a client)."""

    def load(self, device: str | None = None) -> ServedModel:
        raise NotImplementedError


def _load_transformers(source: ModelSource, device: str | None) -> LocalModel:
    """``from_pretrained`` from the source's ``local_path()``, onto ``device`` (default: cuda if there is one)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    path = source.local_path()
    dtype = getattr(torch, source.params.dtype)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
    model = model.to(device).eval()  # type: ignore[arg-type]  # transformers types `to` as an unbound wrapper
    tokenizer = AutoTokenizer.from_pretrained(path)
    return LocalModel(source.name, str(path), model, tokenizer, device)


def hf_folder_problem(path: Path) -> str | None:
    """Why ``path`` cannot be given to ``from_pretrained`` from this machine, or None: a folder with config.json,
    or a hub id (org/name) already in the local Hugging Face cache."""
    if path.is_dir():
        if (path / "config.json").is_file():
            return None
        return f"{path} has no config.json: give the folder of a Hugging Face model (the one holding config.json)"
    if path.exists():
        return f"{path} is a file: give the folder of a Hugging Face model (the one holding config.json)"
    if _cached_hub_id(str(path)):
        return None
    return (
        f"{path} does not exist (nor is it a hub id in the local Hugging Face cache): give the folder of a Hugging "
        "Face model (the one holding config.json), or download it first (`huggingface-cli download ORG/NAME`)"
    )


def _cached_hub_id(text: str) -> bool:
    if text.count("/") != 1 or text.startswith((".", "/", "~")):
        return False
    try:
        from huggingface_hub import try_to_load_from_cache

        return isinstance(try_to_load_from_cache(text, "config.json"), str)
    except Exception:  # noqa: BLE001 - not a valid repo id, or no hub library: not a cached model either
        return False


def cache_dir() -> Path:
    """Where converted models live: ``$QVAL_CACHE`` or ``~/.cache/qval`` (never the repo, never the results)."""
    return Path(os.environ.get("QVAL_CACHE", Path.home() / ".cache" / "qval"))
