"""Losslessness at T > 0: coupled sampling (token-exact vs AR) and the distributional test (rejection sampling)."""

import json

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import write_suite
from scipy import stats

from qval.decode.engine import Engine, _Coupled
from qval.decode.metrics import (
    DistributionalLossless,
    Lossless,
    ModelledSpeedup,
    chi_square_statistic,
    paired_token_test,
)
from qval.decode.task import run_decode_group
from qval.plan import build_plan
from qval.suite import load_suite


def test_chi_square_statistic_matches_scipy():
    rng = np.random.default_rng(1)
    for _ in range(20):
        a, b = rng.integers(0, 30, 8).astype(float), rng.integers(0, 30, 8).astype(float)
        a[3] = b[3] = 0  # an empty bin is allowed and contributes nothing
        keep = (a + b) > 0
        expected = stats.chi2_contingency(np.vstack([a[keep], b[keep]]), correction=False).statistic
        assert chi_square_statistic(a, b) == pytest.approx(expected)


def _outputs(rng, probs, n_pairs, length=12):
    return [rng.choice(len(probs), length, p=probs).tolist() for _ in range(n_pairs)]


def test_distributional_test_is_calibrated_and_has_power():
    rng = np.random.default_rng(0)
    p = np.array([0.4, 0.25, 0.15, 0.1, 0.05, 0.05])
    # Under the null the p-value is (super-)uniform: about 5% of datasets fall below 0.05.
    null_p = [
        paired_token_test(_outputs(rng, p, 20), _outputs(rng, p, 20), n_resamples=300, seed=i)[1] for i in range(200)
    ]
    assert np.mean(np.array(null_p) < 0.05) <= 0.09
    # A lossy policy that shifts 10% of the mass is caught on 40 prompts.
    q = np.array([0.3, 0.25, 0.15, 0.1, 0.1, 0.1])
    assert paired_token_test(_outputs(rng, p, 40), _outputs(rng, q, 40), n_resamples=1000)[1] < 0.01


def test_coupled_gumbel_sampling_draws_from_the_softmax():
    logits = torch.tensor([2.0, 1.0, 0.5, 0.0, -1.0])
    temperature = 0.7
    draws = [_Coupled(seed, temperature).sample(logits, 3) for seed in range(4000)]
    observed = np.bincount(draws, minlength=5)
    expected = torch.softmax(logits / temperature, -1).double().numpy() * len(draws)
    assert stats.chisquare(observed, expected).pvalue > 1e-3
    # the same (seed, position) is the same token; another position draws afresh
    assert _Coupled(7, temperature).sample(logits, 3) == _Coupled(7, temperature).sample(logits, 3)


def test_coupled_engine_emits_ar_tokens_for_any_drafter(smollm):
    """Exact-match verification against position-seeded samples: a drafter changes speed, never tokens."""
    from qval.decode.policies import NgramDrafter

    engine = Engine(smollm.model, smollm.eos_token_ids)
    ids = smollm.chat_ids([{"role": "user", "content": "Repeat: the cat sat on the mat, the cat sat on the mat."}])

    class Wild:  # proposes junk half the time: outputs must still match AR exactly
        def propose(self, context, temperature=0.0, generator=None):
            from qval.decode.engine import Draft

            return Draft([context[-1], 5, 7] if len(context) % 2 else context[-3:])

    outputs = set()
    for seed in (1, 2, 3):
        ar = engine.decode(engine.prefill(ids), None, 24, 1.0, coupled_seed=seed).token_ids
        outputs.add(tuple(ar))
        for drafter in (NgramDrafter(4, 3, 1), Wild()):
            assert engine.decode(engine.prefill(ids), drafter, 24, 1.0, coupled_seed=seed).token_ids == ar
    assert len(outputs) > 1  # different seeds do sample different outputs


class RecordingWriter:
    def __init__(self):
        self.rows = []

    def done_sample_ids(self):
        return set()

    def add_sample(self, rows):
        self.rows += rows


def _run(tmp_path, smollm, sampling):
    suite = write_suite(
        tmp_path / f"{sampling}.yaml",
        f"""\
        name: lossless-{sampling}
        models: [smollm2-135m-instruct]
        decode:
          datasets: [{{name: spec-bench, params: {{categories: [summarization], limit_per_category: 3, max_turns: 1}}}}]
          policies: [ar, {{name: prompt-lookup, params: {{num_draft: 4}}}}, {{name: layer-skip, params: {{layers: 26}}}}]
          temperatures: [1.0]
          sampling: {sampling}
          max_new_tokens: 20
        """,
    )
    cells = list(build_plan(load_suite(suite)).cells.values())
    writers = {c.cell_id: RecordingWriter() for c in cells}
    outcome = run_decode_group(cells, smollm, writers, lambda *a, **k: None, warmup=0)
    assert all(v == (3, 0) for v in outcome.values())
    frames = {c.method: pd.DataFrame(writers[c.cell_id].rows) for c in cells}
    rows = {
        c.method: {"temperature": 1.0, "method": c.method, "identity": json.dumps({"settings": c.settings})}
        for c in cells
    }
    return frames, rows


def test_coupled_sampling_is_token_exact_at_t1_and_rejection_sampling_is_not(tmp_path, smollm):
    frames, rows = _run(tmp_path, smollm, "coupled")
    for method in ("prompt-lookup", "layer-skip"):
        value = Lossless().compute(frames[method], frames["ar"], rows[method])
        assert (value.value, value.n) == (1.0, 3)
        assert (frames[method]["output_sha"].to_numpy() == frames["ar"]["output_sha"].to_numpy()).all()
    assert DistributionalLossless().compute(frames["layer-skip"], frames["ar"], rows["layer-skip"]).value is None

    frames, rows = _run(tmp_path, smollm, "rejection")
    assert Lossless().compute(frames["prompt-lookup"], frames["ar"], rows["prompt-lookup"]).value is None
    # each cell samples with its own stream: outputs differ from AR's, the distributional test applies
    assert (frames["layer-skip"]["output_sha"].to_numpy() != frames["ar"]["output_sha"].to_numpy()).any()
    for frame in frames.values():
        frame["early_ids"] = [ids[1:33] for ids in frame["output_ids"]]
    dist = DistributionalLossless().compute(frames["layer-skip"], frames["ar"], rows["layer-skip"])
    assert dist.n == 3 and 0.0 < dist.value <= 1.0


def test_modelled_speedup_formula():
    policy = pd.DataFrame(
        {
            "sample_id": ["a", "b"],
            "turn": [0, 0],
            "accepted_total": [6, 2],
            "target_steps": [4, 4],
            "draft_s": [0.4, 0.4],
            "decode_s": [9.9, 9.9],
        }
    )
    ar = pd.DataFrame(
        {
            "sample_id": ["a", "b"],
            "turn": [0, 0],
            "accepted_total": [0, 0],
            "target_steps": [10, 10],
            "draft_s": [0.0, 0.0],
            "decode_s": [1.0, 1.0],
        }
    )
    value = ModelledSpeedup().compute(policy, ar, {"run_id": "r", "baseline_run_id": "r"})
    tau = (8 + 8) / 8  # 2.0 tokens per verify step
    draft_share = (0.8 / 8) / (2.0 / 20)  # 0.1 s of drafting per step vs a 0.1 s AR step
    assert value.value == pytest.approx(tau / (1 + draft_share)) and value.n == 2
    assert value.ci_low <= value.value <= value.ci_high
    assert ModelledSpeedup().compute(policy, ar, {"run_id": "r", "baseline_run_id": "other"}).value is None
