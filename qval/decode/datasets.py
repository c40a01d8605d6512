"""Prompt datasets (entry-point group ``qval.datasets``) with stable sample ids."""
from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources

from pydantic import BaseModel, ConfigDict, Field, field_validator

from ..plugin_base import Plugin

SPEC_BENCH_CATEGORIES = ("writing", "roleplay", "reasoning", "math", "coding", "extraction", "stem", "humanities",
                         "translation", "summarization", "qa", "math_reasoning", "rag")


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
