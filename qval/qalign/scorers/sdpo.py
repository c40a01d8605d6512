"""Self-distillation (SDPO): how much more likely the action becomes when the model sees its outcome.

score = mean token log p_teacher(a) − mean token log p_student(a), where the student is the policy prompt and the
teacher is the same prompt plus hindsight: the outcome of taking a. ``sdpo-gt`` (QVal's oracle ablation) also
tells the teacher which move an expert would make here (the reference-optimal candidate), so it reads the labels:
an upper bound for the family, not a deployable method.
"""
from __future__ import annotations

import numpy as np

from .llm_base import LLMScorer


class SDPOScorer(LLMScorer):
    name = "sdpo"
    family = "self-distillation"
    version = "1-v1"
    with_oracle = False

    def score(self, point):
        student = self.action_token_logprobs(self.policy_prompt(point), point)
        expert = ""
        if self.with_oracle:
            best = max(point.candidates, key=lambda c: c.ref_q)
            expert = f"An expert would now play: {best.action}\n"
        out = []
        for i, c in enumerate(point.candidates):
            teacher_prefix = self.policy_prompt(point, template="sdpo_teacher", action=c.action, outcome=c.outcome,
                                                oracle=expert)
            teacher = self.llm.continuation_logprobs(teacher_prefix, [self.llm.encode(c.action)])[0]
            out.append(float(np.mean(teacher) - np.mean(student[i])))
        return out


class SDPOOracleScorer(SDPOScorer):
    name = "sdpo-gt"
    with_oracle = True
