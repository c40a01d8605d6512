"""Models served by an engine qval does not step itself (vLLM offline, an OpenAI-compatible server).

For these, qval cannot run its own draft-and-verify loop: the engine does the speculation. A decoding policy is
translated into the engine's own configuration (``ServedModel.configure``), each prompt is one request, and the
engine's per-request speculative-decoding counters become the same per-sample record the transformers backend
writes (target steps, drafted and accepted per step). The harness still owns the clock: the request is timed
around the call, and where the engine reports first- and last-token timestamps those split prefill from decode.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..errors import QvalError
from ..models.base import LoadedModel


class PolicyNotServable(QvalError):
    """The policy has no equivalent in this serving engine (e.g. Jacobi decoding in vLLM)."""


@dataclass
class Generation:
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


class ServedModel(LoadedModel):
    """A model behind a serving engine. ``model`` is None: nothing of it lives in this process but its tokenizer
    (for chat templates and token ids, so prompts are byte-identical to the transformers backend's)."""

    backend = "served"

    def __init__(self, name: str, path: str, tokenizer, eos_ids: set[int]):
        super().__init__(name=name, path=path, model=None, tokenizer=tokenizer, device="served")
        self._eos = set(eos_ids)

    @property
    def eos_token_ids(self) -> set[int]:
        return set(self._eos)

    def configure(self, policy) -> None:
        """Make the engine decode with this policy (restart it with a speculative config, pick a server…)."""
        raise NotImplementedError

    def generate(self, prompt_ids: list[int], max_new_tokens: int, temperature: float, seed: int) -> Generation:
        raise NotImplementedError

    def close(self) -> None:
        """Stop whatever this model started (engine processes); idempotent."""


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
