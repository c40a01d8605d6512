"""``learned-length``: a per-instance draft length (or stop threshold), predicted live from prefill features.

The selector file is what ``qval train-selector`` writes (``train_selector.py``) from a sweep that ``qval
export-sweeps`` wrote: the multinomial logistic regression of ``selector.py`` (the same model the offline replay
cross-validates), its standardisation, the candidate values of the knob it sets, the underlying policy with its
fixed params, and the samples it was trained on. The file carries a sha256 of its own content, checked on every
load; that hash is part of the policy's params, so a retrained file makes new cells instead of reusing old ones.
"""

from __future__ import annotations

import hashlib
import json
from importlib import resources
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from ..errors import QvalError
from .engine import Draft
from .features import computable, live_vector
from .policies import DecodePolicy
from .selector import _LogReg

SELECTOR_FORMAT = 1
SHIPPED_SELECTOR = "prompt-lookup-num_draft.json"  # in qval/data/selectors/, the default of ``selector``
# The knobs a selector may set: (underlying policy, knob) -> the attribute of its drafter that holds the value
# (NgramDrafter.k, ModelDrafter.k / .stop), set once per sample before drafting starts.
KNOB_ATTRIBUTES = {
    ("prompt-lookup", "num_draft"): "k",
    ("draft-model", "num_draft"): "k",
    ("adaptive-draft", "num_draft"): "k",
    ("adaptive-draft", "stop_threshold"): "stop",
    ("layer-skip", "num_draft"): "k",
    ("layer-skip", "stop_threshold"): "stop",
}


class TrainingSet(BaseModel):
    """Where the selector was trained: the samples a learned-length cell must never be scored on."""

    model_config = ConfigDict(extra="forbid")
    dataset: str = Field(min_length=1)  # the dataset plugin's name (sample ids are unique within it)
    dataset_label: str  # the sweep's dataset with its params, as the report shows it
    model: str
    temperature: float
    seed: int
    metric: Literal["speedup", "tau"]  # the per-sample value whose argmax over candidates is each label
    sample_ids: list[str] = Field(min_length=2)
    sweep_sha256: str = Field(pattern=r"^[0-9a-f]{64}$")  # of the sweep folder's files trained on
    cells: dict[str, str] = Field(default_factory=dict)  # knob value -> cell id of the sweep


class SelectorFile(BaseModel):
    """A trained selector (version ``format``). ``weights`` is (1 + len(features)) × len(candidates): the
    intercept row first, as ``selector._LogReg`` holds it; ``mean``/``scale`` standardise the features."""

    model_config = ConfigDict(extra="forbid")
    format: Literal[1] = SELECTOR_FORMAT
    policy: str  # the underlying policy that drafts
    knob: str
    fixed_params: dict  # the underlying policy's other params, as the sweep fixed them
    candidates: list[float] = Field(min_length=2)  # ascending knob values; ties in the logits go to the smaller
    fallback: float  # the best fixed value on the training samples: used when no features can be computed
    features: list[str] = Field(min_length=1)
    mean: list[float]
    scale: list[float]
    weights: list[list[float]]
    l2: float = Field(gt=0)
    trained_on: TrainingSet
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")

    @model_validator(mode="after")
    def _consistent(self):
        d, k = len(self.features), len(self.candidates)
        if (self.policy, self.knob) not in KNOB_ATTRIBUTES:
            known = ", ".join(f"{p}.{n}" for p, n in KNOB_ATTRIBUTES)
            raise ValueError(f"a selector cannot set {self.policy}.{self.knob}; it sets one of {known}")
        if sorted(self.candidates) != self.candidates or len(set(self.candidates)) != k:
            raise ValueError("candidates must be ascending and distinct")
        if len(self.mean) != d or len(self.scale) != d or any(s <= 0 for s in self.scale):
            raise ValueError("mean and scale need one entry per feature, scales > 0")
        if len(self.weights) != d + 1 or any(len(row) != k for row in self.weights):
            raise ValueError(f"weights must be {d + 1} rows (intercept + features) of {k} candidates")
        if self.fallback not in self.candidates:
            raise ValueError("fallback must be one of the candidates")
        bad = [f for f in self.features if not computable(f)]
        if bad:
            raise ValueError(f"features {bad} are not computable at prefill")
        return self

    def content_sha256(self) -> str:
        """What ``sha256`` must be: the hash of everything else in the file."""
        return content_sha256(self.model_dump(exclude={"sha256"}))

    def model(self) -> _LogReg:
        return _LogReg(np.array(self.mean), np.array(self.scale), np.array(self.weights))

    def value(self, index: int) -> int | float:
        value = self.candidates[index]
        return int(value) if float(value).is_integer() and self.knob == "num_draft" else value

    def predict(self, x: np.ndarray) -> int | float:
        return self.value(int(self.model().predict(x.reshape(1, -1))[0]))


def content_sha256(doc: dict) -> str:
    """sha256 of a document's canonical JSON (sorted keys, no spaces)."""
    text = json.dumps(doc, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(text.encode()).hexdigest()


def selector_path(selector: str | None) -> Path:
    if selector is None:
        return Path(str(resources.files("qval.data").joinpath("selectors", SHIPPED_SELECTOR)))
    return Path(selector).expanduser()


def load_selector(selector: str | None) -> SelectorFile:
    """Read and validate a selector file; ValueError with the reason (suite validation shows it as a problem)."""
    path = selector_path(selector)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"cannot read selector {path}: {exc}; write one with `qval train-selector`") from None
    try:
        doc = SelectorFile.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise ValueError(f"selector {path} is not a valid selector file ({where}: {first['msg']})") from None
    if doc.sha256 != doc.content_sha256():
        raise ValueError(f"selector {path}: its sha256 does not match its content (edited by hand?); retrain it")
    return doc


class HeldOutError(QvalError):
    """A learned-length cell was asked to score a sample its selector was trained on."""


class LearnedLengthParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    # A file `qval train-selector` wrote; None: the selector shipped with qval (qval/data/selectors/, trained on
    # the first 6 prompts of four Spec-Bench categories: suites/decode-learned-train.yaml).
    selector: str | None = None
    # Filled from the file: part of the cell id, so a retrained selector never reuses cells of the old one; a file
    # that changed after the suite was planned is refused.
    selector_sha256: str | None = Field(default=None, pattern=r"^[0-9a-f]{64}$")

    @model_validator(mode="after")
    def _load(self):
        doc = load_selector(self.selector)
        if self.selector_sha256 is None:
            self.selector_sha256 = doc.sha256
        elif self.selector_sha256 != doc.sha256:
            raise ValueError(
                f"selector {selector_path(self.selector)} changed since it was planned (sha256 {doc.sha256[:12]}…, "
                f"planned {self.selector_sha256[:12]}…): run the suite again to plan the new selector's cells"
            )
        return self


class LearnedLengthDrafter:
    """The underlying policy's drafter, its knob set per sample from the selector's prediction.

    ``begin_sample`` (the harness, before the clock) says which sample comes next and refuses a training sample;
    ``prefilled`` (the engine, inside the decode clock) computes the features and predicts. A sample's later turns
    keep its first turn's choice, as the offline selector (features of turn 0) has it. Without an announced sample
    (warm-up, engine-level checks) the category indicators are 0."""

    def __init__(self, selector: SelectorFile, inner, attribute: str):
        self.selector, self.inner, self.attribute = selector, inner, attribute
        self.training = {(selector.trained_on.dataset, sid) for sid in selector.trained_on.sample_ids}
        self.sample: tuple[str, str, str, int] | None = None  # (dataset, sample id, category, turn)
        self.chosen: dict[tuple[str, str], int | float] = {}  # (dataset, sample id) -> its turn-0 choice
        self.last_features: np.ndarray | None = None
        self.value: int | float = selector.value(selector.candidates.index(selector.fallback))
        setattr(inner, attribute, self.value)
        for hook in ("observe", "observe_forward"):
            if hasattr(inner, hook):
                setattr(self, hook, getattr(inner, hook))

    def begin_sample(self, dataset: str, sample_id: str, category: str, turn: int) -> None:
        if (dataset, str(sample_id)) in self.training:
            raise HeldOutError(
                f"sample {sample_id} of {dataset} is in the selector's training set "
                f"({len(self.training)} samples); learned-length is scored on held-out samples only"
            )
        self.sample = (dataset, str(sample_id), category, turn)

    def reset(self) -> None:
        if hasattr(self.inner, "reset"):
            self.inner.reset()

    def prefilled(self, context: list[int], next_logits) -> None:
        key = self.sample[:2] if self.sample is not None else None
        if key is not None and self.sample is not None and self.sample[3] > 0 and key in self.chosen:
            self.value = self.chosen[key]
        else:
            category = self.sample[2] if self.sample is not None else None
            self.last_features = live_vector(self.selector.features, len(context), next_logits, category)
            self.value = self.selector.predict(self.last_features)
            if key is not None:
                self.chosen[key] = self.value
        setattr(self.inner, self.attribute, self.value)

    def propose(self, context: list[int], temperature: float = 0.0, generator=None) -> Draft:
        return self.inner.propose(context, temperature, generator)


class LearnedLengthPolicy(DecodePolicy):
    """BlockPilot's per-instance selection (a small model predicts each instance's block size from prefill
    features), applied live to autoregressive drafting: a multinomial logistic regression predicts each prompt's
    draft length (prompt lookup's ``num_draft``) or stop threshold (``adaptive-draft``'s ``stop_threshold``) from
    the target's prefill, and the underlying policy drafts with that value. Lossless: the underlying drafter's
    drafts are verified by the engine as always.

    Where qval's version differs from BlockPilot: BlockPilot picks a block size for block-diffusion drafting
    (DFlash) and scores it offline on released sweeps; here the knob is an autoregressive drafter's draft length or
    stop threshold, the selector is trained on qval's own sweeps (``qval export-sweeps`` → ``qval
    train-selector``), the features are the target's next-token entropy and top probability after the prompt, the
    log prompt length and the category one-hot (all known at prefill), and the prediction runs live inside the
    timed decode (the engine's ``prefilled`` hook, clocked as drafting time). A sample the selector was trained on
    is refused: at planning when the suite's dataset holds one, and again by the drafter, which fails that sample
    with the reason.
    """

    name = "learned-length"
    family = "adaptive"  # chooses its draft length per instance: never the "best fixed" policy of a headroom
    Params = LearnedLengthParams

    def selector(self) -> SelectorFile:
        return load_selector(self.params.selector)

    def sweep_target(self) -> tuple[str, str]:
        """(policy, knob) of the sweep whose per-instance oracle this policy tries to reach."""
        doc = self.selector()
        return doc.policy, doc.knob

    def drafter(self, model):
        from ..registry import REGISTRY

        doc = self.selector()
        if doc.sha256 != self.params.selector_sha256:
            raise ValueError(f"selector {selector_path(self.params.selector)} changed since it was planned")
        cls = REGISTRY.get("policies", doc.policy)
        underlying = cls(cls.Params.model_validate({**doc.fixed_params, doc.knob: doc.fallback}))
        for value in doc.candidates:  # every value the selector may pick is a valid setting of the policy
            cls.Params.model_validate({**doc.fixed_params, doc.knob: doc.value(doc.candidates.index(value))})
        return LearnedLengthDrafter(doc, underlying.drafter(model), KNOB_ATTRIBUTES[(doc.policy, doc.knob)])

    @classmethod
    def dataset_problem(cls, params: LearnedLengthParams, dataset_cls, dataset_params) -> str | None:
        """Why this cell may not run on that dataset (its samples include training samples), or None."""
        doc = load_selector(params.selector)
        if dataset_cls.name != doc.trained_on.dataset:
            return None
        ids = {s.sample_id for s in dataset_cls(dataset_params).samples()}
        overlap = sorted(ids & set(doc.trained_on.sample_ids), key=lambda s: (len(s), s))
        if not overlap:
            return None
        shown = ", ".join(overlap[:8]) + (" …" if len(overlap) > 8 else "")
        return (
            f"selector {selector_path(params.selector)} was trained on {len(overlap)} of this dataset's samples "
            f"({shown}); learned-length is evaluated on held-out samples only: pick other prompts "
            f"(spec-bench: skip_per_category, or other categories) or train the selector on other samples"
        )
