"""Scorers that ask the model to judge or order candidates.

* verifier (intrinsic): a 20-letter grade A…T (1.0…0.0); the score is the expected grade under the model's
  next-token probabilities of the letters (renormalised over the 20 letters), as in QVal;
* Δbelief (intrinsic): change in log P(Yes) to "will the agent complete the task?" after seeing the action and
  its outcome, relative to before (P renormalised over Yes/No);
* ranking: the model orders the lettered candidates best first; a reply that does not name every candidate is a
  recorded failure of the whole state (a partial order is not a ranking).
"""

from __future__ import annotations

import random

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from ...prompts import load_prompt
from .base import Failed
from .llm_base import LLMScorer
from .parsing import LETTERS, lettered, parse_ranking

GRADES = LETTERS[:20]


class VerifierScorer(LLMScorer):
    """Expected grade over the 20 letters A (1.0) … T (0.0) from the next-token distribution right after the
    prompt, renormalised over all 20 letter tokens (qval's reading). QVal instead samples a reply (with thinking),
    finds the token after ``<score_1>`` and renormalises over the letters present in its top-20 log-probs (case
    and spaces merged), falling back to the hard letter; that reading is not implemented here."""

    name = "verifier"
    family = "intrinsic"
    version = "1-v1"

    def score(self, point):
        letter_ids = [self.llm.encode(g)[0] for g in GRADES]
        values = np.linspace(1.0, 0.0, len(GRADES))
        out = []
        for c in point.candidates:
            user = load_prompt("verifier").format(
                task=point.task, observation=point.observation, action=c.action, outcome=c.outcome
            )
            logp = self.llm.token_logprobs(self.llm.chat(user), letter_ids).double().numpy()
            p = np.exp(logp - logp.max())
            out.append(float((p / p.sum()) @ values))
        return out


class DeltaBeliefScorer(LLMScorer):
    """log P(Yes) of eventual success, normalised over Yes+No, after minus before seeing the action and its
    outcome (QVal's formula). Differs from QVal: qval reads the first token of "Yes" and "No" where QVal scores
    each verbaliser as a whole continuation (equal when each is one token, as for SmolLM2), and the question's
    wording is qval's own (shorter)."""

    name = "delta-belief"
    family = "intrinsic"
    version = "1-v1"

    def _log_p_yes(self, point, situation: str) -> float:
        yes, no = self.llm.encode("Yes")[0], self.llm.encode("No")[0]
        logp = self.llm.token_logprobs(
            self.llm.chat(load_prompt("belief").format(task=point.task, situation=situation)), [yes, no]
        )
        a, b = float(logp[0]), float(logp[1])
        return a - np.logaddexp(a, b)

    def score(self, point):
        before = self._log_p_yes(point, load_prompt("belief_before").format(observation=point.observation))
        return [
            self._log_p_yes(
                point,
                load_prompt("belief_after").format(observation=point.observation, action=c.action, outcome=c.outcome),
            )
            - before
            for c in point.candidates
        ]


class RankingParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    max_new_tokens: int = Field(default=32, ge=1, le=4096)
    shuffle: bool = True  # present candidates in a seeded random order, so list position carries no signal


class RankingScorer(LLMScorer):
    """Ranking: the model orders a state's lettered candidates best first in one reply; a candidate's score is its place
    (n for the best, 1 for the worst).

    Candidates are shown in a seeded random order (``shuffle``, default on) so that list position carries no signal. A
    reply that does not name every candidate fails the whole state: a partial order is not a ranking."""

    name = "ranking"
    family = "ranking"
    version = "1-v1"
    Params = RankingParams

    def score(self, point):
        n = len(point.candidates)
        if n > len(LETTERS):
            raise ValueError(f"ranking letters at most {len(LETTERS)} candidates, got {n}")
        order = list(range(n))
        if self.params.shuffle:
            random.Random(self.sample_seed(point, "order")).shuffle(order)
        shown = [point.candidates[i].action for i in order]
        user = load_prompt("ranking").format(
            task=point.task, observation=point.observation, lettered=lettered(shown), example=", ".join(LETTERS[:n])
        )
        reply = self.llm.generate(
            self.llm.chat(user), self.params.max_new_tokens, self.temperature, self.sample_seed(point, "rank")
        )
        ranking = parse_ranking(reply, n)
        if isinstance(ranking, Failed):
            return [ranking] * n
        scores = [0.0] * n
        for rank, shown_index in enumerate(ranking):
            scores[order[shown_index]] = float(n - rank)  # best first gets the highest score
        return scores
