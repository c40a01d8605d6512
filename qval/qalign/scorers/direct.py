"""Direct prompting: the model states a value for the action, as a number.

* direct: one prompt per candidate, the reply's number is the score; ``samples`` > 1 averages k sampled replies
  (QVal's direct-16);
* direct-batched: all candidates of a state in one prompt, one number per lettered line;
* direct-batch8-seq: QVal's sequential ablation: 8 points per conversation, one per user turn, each earlier reply
  kept as its bare answer;
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
        return self.means_of_samples([(prompt, salt)], point, read)[0]

    def means_of_samples(self, asks: list[tuple[list[int], object]], point, read=parse_number) -> list[float | Failed]:
        """The mean of ``samples`` replies to each (prompt, salt), over the replies that parsed (else the last
        failure). The replies do not depend on each other, so they go to the request layer together: one batched
        engine call on vLLM, one generation after another (in the same order) on transformers."""
        k = self.params.samples
        replies = self.llm.generate_many(
            [
                (prompt, self.params.max_new_tokens, self.temperature_for(), self.sample_seed(point, salt, j))
                for prompt, salt in asks
                for j in range(k)
            ]
        )
        out: list[float | Failed] = []
        for i in range(len(asks)):
            parsed = [read(reply) for reply in replies[i * k : (i + 1) * k]]
            values = [v for v in parsed if not isinstance(v, Failed)]
            out.append(float(np.mean(values)) if values else parsed[-1])
        return out


class DirectScorer(_NumericScorer):
    """Direct prompting, one prompt per candidate: the model states the action's value as a number (asked for 0 to 1),
    and that number is the score.

    ``samples: k`` averages k replies sampled at ``sample_temperature`` (QVal's direct-16 with k = 16), over the replies
    that parsed; a candidate none of whose replies holds a number is a recorded failure. Unlike direct-batched, each
    candidate is asked about alone; unlike gvl, the prompt names the action and asks for its value, not for the progress
    of its outcome."""

    name = "direct"
    version = "1-v1"

    def question(self, point, candidate) -> str:
        return load_prompt("direct").format(
            task=point.task, observation=point.observation, action=candidate.action, gamma=self.gamma
        )

    def score(self, point):
        return self.means_of_samples(
            [(self.llm.chat(self.question(point, c)), c.index) for c in point.candidates], point
        )


class DirectSequentialScorer(DirectScorer):
    """QVal's direct-batch8-seq ("direct-sequential"): direct's question for ``points_per_conversation`` (8) points in
    one conversation, one point per user turn, under a system message that asks to keep earlier estimates fixed.

    As QVal: each reply's number is kept in the conversation as the bare ``<answer>`` (the rest of the reply is not);
    a reply without a number ends its conversation, and the points not yet asked fail with that reason; a
    conversation of one point is direct's plain prompt; ``samples: k`` holds k conversations and averages. QVal asks
    about one action per point (the actor's); qval scores every candidate, so a batch of 8 points holds as many
    conversations as its points have candidates, and each conversation asks one candidate of every point (which
    candidate goes to which conversation is a seeded shuffle per point, so no conversation asks one move throughout).
    Points are grouped in the order the cell lists them (QVal: contiguous dataset order)."""

    name = "direct-batch8-seq"
    version = "1-v1"
    batch_points = 8  # one batch is one group of conversations; resuming never splits a conversation

    class Params(DirectParams):
        points_per_conversation: int = Field(default=8, ge=1, le=8)  # le: a conversation never spans two batches

    def score_batch(self, points):
        out: list[list] = [[None] * len(p.candidates) for p in points]
        size = self.params.points_per_conversation
        for start in range(0, len(points), size):
            group = points[start : start + size]
            orders = []
            for p in group:
                order = list(range(len(p.candidates)))
                random.Random(self.sample_seed(p, "conversation")).shuffle(order)
                orders.append(order)
            for j in range(max(len(p.candidates) for p in group)):
                asked = [(start + i, orders[i][j]) for i, p in enumerate(group) if j < len(p.candidates)]
                values = self.conversation([(points[k], points[k].candidates[c]) for k, c in asked])
                for (k, c), value in zip(asked, values):
                    out[k][c] = value
        return out

    def conversation(self, items) -> list[float | Failed]:
        """Each item's mean over the ``samples`` conversations whose reply to it held a number."""
        runs = [self._one_conversation(items, k) for k in range(self.params.samples)]
        out = []
        for i in range(len(items)):
            values = [run[i] for run in runs if not isinstance(run[i], Failed)]
            out.append(float(np.mean(values)) if values else runs[-1][i])
        return out

    def _one_conversation(self, items, k: int) -> list[float | Failed]:
        if len(items) == 1:  # as QVal: a group of one is the plain single-point prompt
            point, c = items[0]
            return [self._ask(self.llm.chat(self.question(point, c)), point, c, k)]
        messages = [{"role": "system", "content": load_prompt("direct_sequential_system")}]
        keep = " Keep your earlier answers fixed and answer only for the datapoint below."
        out: list[float | Failed] = []
        for t, (point, c) in enumerate(items):
            user = load_prompt("direct_sequential_turn").format(
                i=t + 1, n=len(items), keep=keep if t else "", prompt=self.question(point, c)
            )
            messages.append({"role": "user", "content": user})
            value = self._ask(self.llm.model.chat_ids(messages), point, c, k)
            out.append(value)
            if isinstance(value, Failed):
                stop = f"not asked: turn {t + 1} of its conversation had no number, which ends it (as QVal)"
                return out + [Failed(stop)] * (len(items) - t - 1)
            messages.append({"role": "assistant", "content": f"<answer>{value:g}</answer>"})
        return out

    def _ask(self, prompt: list[int], point, candidate, k: int) -> float | Failed:
        reply = self.llm.generate(
            prompt,
            self.params.max_new_tokens,
            self.temperature_for(),
            self.sample_seed(point, "seq", candidate.index, k),
        )
        return parse_number(reply)


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
        replies = self.llm.generate_many(
            [
                (prompt, self.params.max_new_tokens, self.temperature_for(), self.sample_seed(point, "batched", k))
                for k in range(self.params.samples)
            ]
        )
        per_sample = [parse_lettered_numbers(reply, n) for reply in replies]
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
        asks = []
        for c in point.candidates:
            context = [obs for obs, _ in point.history] + [point.observation]
            random.Random(self.sample_seed(point, "shuffle")).shuffle(context)  # GVL: no order cue from position
            frames = [*context, c.outcome]
            text = "\n\n".join(load_prompt("gvl_frame").format(n=i + 1, observation=o) for i, o in enumerate(frames))
            asks.append((self.llm.chat(load_prompt("gvl").format(task=point.task, frames=text)), c.index))
        return self.means_of_samples(asks, point)
