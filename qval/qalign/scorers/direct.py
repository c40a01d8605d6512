"""Direct prompting: the model states a value for the action, as a number.

* direct: one prompt per candidate, the reply's number is the score; ``samples`` > 1 averages k sampled replies
  (QVal's direct-16);
* direct-batched: all candidates of a state in one prompt, one number per lettered line;
* gvl: GVL-style, the earlier observations of the trajectory shuffled as context and the action's outcome last;
  the model rates task progress of that last observation.

Unparsable replies are recorded failures. Averaging over samples uses the samples that parsed; if none did, the
candidate fails.
"""

from __future__ import annotations

import random

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from ...prompts import load_prompt
from .base import Failed
from .llm_base import LLMScorer
from .parsing import LETTERS, lettered, parse_lettered_numbers, parse_number


class DirectParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    samples: int = Field(default=1, ge=1, le=64)  # > 1: mean of k sampled replies
    sample_temperature: float = Field(default=0.7, gt=0.0, le=2.0)  # used when samples > 1 (or the cell's T > 0)
    max_new_tokens: int = Field(default=24, ge=1, le=4096)


class _NumericScorer(LLMScorer):
    family = "direct"
    Params = DirectParams

    def temperature_for(self) -> float:
        if self.temperature > 0:
            return self.temperature
        return self.params.sample_temperature if self.params.samples > 1 else 0.0

    def mean_of_samples(self, prompt: list[int], point, salt, read=parse_number) -> float | Failed:
        values, last = [], None
        for k in range(self.params.samples):
            reply = self.llm.generate(
                prompt, self.params.max_new_tokens, self.temperature_for(), self.sample_seed(point, salt, k)
            )
            value = read(reply)
            if isinstance(value, Failed):
                last = value
            else:
                values.append(value)
        return float(np.mean(values)) if values else last


class DirectScorer(_NumericScorer):
    """Direct prompting, one prompt per candidate: the model states the action's value as a number (asked for 0 to 1),
    and that number is the score.

    ``samples: k`` averages k replies sampled at ``sample_temperature`` (QVal's direct-16 with k = 16), over the replies
    that parsed; a candidate none of whose replies holds a number is a recorded failure. Unlike direct-batched, each
    candidate is asked about alone; unlike gvl, the prompt names the action and asks for its value, not for the progress
    of its outcome."""

    name = "direct"
    version = "1-v1"

    def score(self, point):
        out = []
        for c in point.candidates:
            user = load_prompt("direct").format(
                task=point.task, observation=point.observation, action=c.action, gamma=self.gamma
            )
            out.append(self.mean_of_samples(self.llm.chat(user), point, c.index))
        return out


class DirectBatchedScorer(_NumericScorer):
    """qval's own packing, not QVal's direct-batched: all candidates of *one* state in one prompt, one lettered
    value each. QVal's direct-batched packs 4 separate evaluation points (each with its own state, actor action and
    next state) into one prompt and reads a comma-separated list; that variant is not implemented here."""

    name = "direct-batched"
    version = "1-v1"

    class Params(DirectParams):
        max_new_tokens: int = Field(default=64, ge=1, le=4096)

    def score(self, point):
        n = len(point.candidates)
        if n > len(LETTERS):
            raise ValueError(f"direct-batched letters at most {len(LETTERS)} candidates, got {n}")
        user = load_prompt("direct_batched").format(
            task=point.task,
            observation=point.observation,
            lettered=lettered([c.action for c in point.candidates]),
            gamma=self.gamma,
        )
        prompt = self.llm.chat(user)
        per_sample = [
            parse_lettered_numbers(
                self.llm.generate(
                    prompt, self.params.max_new_tokens, self.temperature_for(), self.sample_seed(point, "batched", k)
                ),
                n,
            )
            for k in range(self.params.samples)
        ]
        out = []
        for i in range(n):
            values = [s[i] for s in per_sample if not isinstance(s[i], Failed)]
            out.append(float(np.mean(values)) if values else per_sample[-1][i])
        return out


class GVLScorer(_NumericScorer):
    """GVL-style: the model rates the task progress (0 to 100%) of the candidate's outcome, shown after the trajectory's
    observations so far in shuffled order.

    The prompt names no action, only observations: the score depends on the outcome alone (direct asks for the action's
    value). Differs from GVL (Ma et al., 2024), which shows a vision-language model the shuffled frames of one video and
    asks for the progress of every frame: qval's observations are text, shuffled with a seed per point, the outcome is
    always last, and only its number is read. ``samples: k`` averages k sampled replies, as for direct."""

    name = "gvl"
    version = "1-v1"

    def score(self, point):
        out = []
        for c in point.candidates:
            context = [obs for obs, _ in point.history] + [point.observation]
            random.Random(self.sample_seed(point, "shuffle")).shuffle(context)  # GVL: no order cue from position
            frames = [*context, c.outcome]
            text = "\n\n".join(load_prompt("gvl_frame").format(n=i + 1, observation=o) for i, o in enumerate(frames))
            prompt = self.llm.chat(load_prompt("gvl").format(task=point.task, frames=text))
            out.append(self.mean_of_samples(prompt, point, c.index))
        return out
