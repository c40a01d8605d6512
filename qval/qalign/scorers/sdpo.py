"""Self-distillation (SDPO): how much more likely the action becomes when the model sees its outcome.

score = mean token log p_teacher(a) − mean token log p_student(a), where the student is the policy prompt and the
teacher is the same prompt plus hindsight: the outcome of taking a (QVal's ``sdpo``; qval's prompt wording is its
own and the student sees no history).

``sdpo-gt`` is QVal's oracle ablation (``SDPOShortExpertContinuationRankingMethod``): the teacher also sees, for
each candidate, the reference policy's continuation *from the state the candidate leads to*: the expert's next
move there and a summary of its rollout (reached the goal or not, moves to the goal, final reward). qval's
reference policy is the exact optimal one (greedy in Q*), so the rollout is the one QVal's stored Monte-Carlo
rollout approximates; the wording follows QVal's evidence block. It still reads privileged information, so it is
an upper bound for the family, not a deployable method.

``sdpo-best-action`` is qval's earlier, stronger hint: the teacher is told which candidate is the reference-optimal
move at the current state (the label's argmax), the same line for every candidate. Not QVal's method.
"""

from __future__ import annotations

import numpy as np

from .llm_base import LLMScorer

EXPERT_ROLLOUT_STEPS = 100  # the expert continuation stops here if the goal is not reached

_EVIDENCE = """The expert move below occurs after the candidate move has already been executed.
Use it only as evidence about the original candidate move; it is not a replacement move to output.
Best next expert move after candidate result: {move}
Structured stored expert rollout summary:
Stored expert rollout reached goal: {reached}
{distance}
Final observed environment reward: {reward:g}
Stored expert rollout outcome: {outcome}
"""


class SDPOScorer(LLMScorer):
    """Self-distillation (QVal's sdpo): mean token log-prob of the action when the policy prompt adds hindsight, the
    action's outcome, minus the same without it.

    The teacher sees the outcome and nothing privileged, unlike sdpo-gt (the expert's continuation from the outcome) and
    sdpo-best-action (the best move at this state). Differs from QVal in wording: qval's prompts are its own and the
    student sees no history."""

    name = "sdpo"
    family = "self-distillation"
    version = "1-v1"

    def hint(self, point, candidate) -> str:
        return ""

    def score(self, point):
        student = self.action_token_logprobs(self.policy_prompt(point), point)
        out = []
        for i, c in enumerate(point.candidates):
            teacher_prefix = self.policy_prompt(
                point, template="sdpo_teacher", action=c.action, outcome=c.outcome, oracle=self.hint(point, c)
            )
            teacher = self.llm.continuation_logprobs(teacher_prefix, [self.llm.encode(c.action)])[0]
            out.append(float(np.mean(teacher) - np.mean(student[i])))
        return out


class SDPOOracleScorer(SDPOScorer):
    """QVal's sdpo-gt: per candidate, the expert's continuation from the candidate's resulting state."""

    name = "sdpo-gt"
    version = "2-v1"  # 2: QVal's per-candidate expert continuation (1 told every candidate the best move here)

    def hint(self, point, candidate) -> str:
        move, moves, reward, reached = self._expert_rollout(point, candidate)
        if reached:
            distance = (
                f"Expert moves from candidate result to success: {moves}\n"
                f"Remaining distance proxy: {moves} expert move(s) to goal"
            )
        else:
            distance = (
                f"Expert moves from candidate result observed: {moves}\n"
                "Remaining distance proxy: goal was not observed in the stored expert rollout"
            )
        return _EVIDENCE.format(
            move=move,
            reached="yes" if reached else "no success observed",
            distance=distance,
            reward=reward,
            outcome="success" if reached else "failure",
        )

    def _expert_rollout(self, point, candidate) -> tuple[str, int, float, bool]:
        """(expert's first move from s', moves until the goal or the end, final reward, goal reached)."""
        if candidate.done:
            return "none (the episode ended with this move)", 0, candidate.reward, candidate.reward > 0
        q = self._q()
        rng = np.random.default_rng(self.sample_seed(point, candidate.index, "expert"))
        state, first, reward = candidate.next_state, None, 0.0
        for step in range(1, EXPERT_ROLLOUT_STEPS + 1):
            action = int(np.argmax(q[state]))
            if first is None:
                first = self.env.actions(state)[action]
            state, reward, done = self.env.step(state, action, rng)
            if done:
                return first, step, reward, reward > 0
        return first or "unknown", EXPERT_ROLLOUT_STEPS, reward, False

    def _q(self):
        if getattr(self, "_reference_q", None) is None:
            self._reference_q = self.env.reference_q(self.gamma)
        return self._reference_q


class SDPOBestActionScorer(SDPOScorer):
    """qval's own oracle variant (not QVal's): the teacher is told the reference-optimal move at this state."""

    name = "sdpo-best-action"
    version = "1-v1"

    def hint(self, point, candidate) -> str:
        best = max(point.candidates, key=lambda c: c.ref_q)
        return f"An expert would now play: {best.action}\n"
