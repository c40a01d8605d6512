"""Intrinsic scorer: log-probability the acting model gives each candidate action under a policy prompt."""
from __future__ import annotations

from importlib import resources

from .base import Scorer

PROMPT_VERSION = "v1"


def load_prompt(name: str) -> str:
    return resources.files("qval.prompts").joinpath(f"{name}.{PROMPT_VERSION}.txt").read_text(encoding="utf-8")


class ActionLogProbScorer(Scorer):
    """Sum of token log-probs of the action word as the assistant's answer (all candidates in one batch)."""

    name = "action-logprob"
    family = "intrinsic"
    version = f"1-{PROMPT_VERSION}"
    uses_model = True

    def __init__(self, params, model=None, seed=0, temperature=0.0):
        super().__init__(params, model, seed, temperature)
        self.template = load_prompt("action_logprob")

    def score(self, point):
        import torch

        tok, lm = self.model.tokenizer, self.model.model
        user = self.template.format(task=point.task, observation=point.observation,
                                    actions=", ".join(c.action for c in point.candidates))
        prefix = self.model.chat_ids([{"role": "user", "content": user}])
        answers = [tok(c.action, add_special_tokens=False)["input_ids"] for c in point.candidates]
        width = len(prefix) + max(len(a) for a in answers)
        pad = tok.pad_token_id if tok.pad_token_id is not None else 0
        ids = torch.full((len(answers), width), pad, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for i, ans in enumerate(answers):
            seq = prefix + ans
            ids[i, : len(seq)] = torch.tensor(seq)
            mask[i, : len(seq)] = 1
        with torch.inference_mode():
            logits = lm(input_ids=ids.to(self.model.device), attention_mask=mask.to(self.model.device)).logits
        logp = torch.log_softmax(logits.float(), dim=-1).cpu()
        scores = []
        for i, ans in enumerate(answers):
            positions = range(len(prefix) - 1, len(prefix) - 1 + len(ans))  # logits at t predict token t+1
            scores.append(float(sum(logp[i, p, t] for p, t in zip(positions, ans))))
        return scores

