"""entropy-switch (LOSSY): the draft model's tokens stand while the target's entropy is below the threshold. The
policy contract as a lossy policy, threshold 0 = plain AR's tokens at T = 0, and the rule itself at engine level.
Its real-CLI run (beside ar and learned-length) is in test_learned_length.py."""

from __future__ import annotations

import math

import pytest
import torch

from qval.cell import LOSSY_FAMILY
from qval.decode.engine import Engine
from qval.decode.entropy_switch import EntropySwitchDrafter, EntropySwitchParams, EntropySwitchPolicy, entropy

PROMPT = "List the colours of the rainbow, then list them again: red, orange,"


def test_it_is_declared_lossy():
    # Its plugin contract (the lossy rules) runs in tests/test_contracts.py.
    assert EntropySwitchPolicy.family == LOSSY_FAMILY


def _decode(smollm, threshold: float, temperature: float = 0.0, coupled_seed=None):
    engine = Engine(smollm.model, smollm.eos_token_ids)
    ids = list(smollm.tokenizer(PROMPT)["input_ids"])
    drafter = EntropySwitchPolicy(EntropySwitchParams(threshold=threshold, num_draft=4)).drafter(smollm)
    ar = engine.decode(engine.prefill(ids), None, 20, temperature, coupled_seed=coupled_seed)
    out = engine.decode(engine.prefill(ids), drafter, 20, temperature, coupled_seed=coupled_seed)
    return ar, out


def test_threshold_zero_emits_exactly_ars_tokens(smollm):
    # Entropy is never below 0: no draft token stands, each step emits the target's own token (AR's argmax).
    ar, out = _decode(smollm, 0.0)
    assert out.token_ids == ar.token_ids
    assert sum(out.accepted_per_step) == 0 and out.target_steps == len(out.token_ids) - 1
    # Under coupled sampling the target's own token is AR's coupled sample: identical at T = 1 as well.
    ar, out = _decode(smollm, 0.0, temperature=1.0, coupled_seed=5)
    assert out.token_ids == ar.token_ids


def test_a_high_threshold_lets_every_draft_stand(smollm):
    # Above the largest possible entropy (log of the vocabulary size) every draft token stands unverified.
    vocab = smollm.model.config.vocab_size
    _, out = _decode(smollm, math.log(vocab) + 1.0)
    assert out.accepted_per_step == out.drafted_per_step


def test_the_rule_reads_the_targets_entropy():
    drafter = EntropySwitchDrafter(inner=None, threshold=1.0)
    uniform = torch.zeros(4)  # entropy log 4 ≈ 1.386 nats
    peaked = torch.tensor([10.0, 0.0, 0.0, 0.0])
    assert entropy(uniform, 0.0) == pytest.approx(math.log(4))
    assert not drafter.accept(uniform, 0, 0.0)
    assert drafter.accept(peaked, 3, 0.0)  # any token stands where the target is sure, even one it would not pick
    # At T > 0 the entropy is that of softmax(logits / T): a hotter target is less sure.
    assert entropy(peaked, 5.0) > entropy(peaked, 0.0) and not drafter.accept(peaked, 0, 20.0)


def test_params_check_the_draft_source():
    with pytest.raises(ValueError, match="path"):
        EntropySwitchParams(draft="path")
    with pytest.raises(ValueError):
        EntropySwitchParams(threshold=-0.1)
