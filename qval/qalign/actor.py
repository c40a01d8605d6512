"""An LLM that acts in an environment (the scripted optimal policy is plain argmax of Q*, inline where used).

The LLM actor is the cell's model under the policy prompt: it scores each legal action by its log-probability
as the answer (the action-logprob scorer's prompt) and plays the argmax at temperature 0, else samples from the
softmax of those log-probs / T. QVal collects trajectories and labels Q with LLM actors; this is the local-model
equivalent. Points and labels then depend on the model, so such cells are per model (see plan.py).
"""

from __future__ import annotations

import numpy as np

from ..prompts import load_prompt


class LLMActor:
    def __init__(self, model, temperature: float = 0.0):
        self.llm, self.temperature = model.requests(), temperature

    def __call__(self, env, state: int, rng: np.random.Generator) -> int:
        actions = env.actions(state)
        user = load_prompt("action_logprob").format(
            task=env.task(state), observation=env.describe(state), actions=", ".join(actions)
        )
        logps = self.llm.continuation_logprobs(self.llm.chat(user), [self.llm.encode(a) for a in actions])
        scores = np.array([sum(lp) for lp in logps])
        if self.temperature <= 0:
            return int(np.argmax(scores))
        z = scores / self.temperature
        p = np.exp(z - z.max())
        return int(rng.choice(len(actions), p=p / p.sum()))
