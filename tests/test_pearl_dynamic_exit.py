"""The `pearl` (PEARL: background drafting while the target verifies) and `dynamic-exit` (DEL: exit layer and draft
length chosen from per-layer shadow-token acceptance) policies: the policy contract on SmolLM2, that PEARL's drafter
really drafts while a verification is in flight and leaves no thread behind, DEL's (ℓ, d) choice and shadow tokens,
PEARL's modelled speedup against a hand computation, and one real CLI run of both beside AR."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import tomllib
from importlib import metadata

import pytest
import torch
from conftest import ROOT, run_qval, write_suite
from path_plugins import expose_package
from pydantic import ValidationError

from qval import results as R
from qval.decode.drafters import first_layers_view
from qval.decode.dynamic_exit import DynamicExitParams, DynamicExitPolicy, best_exit, tokens_per_layer
from qval.decode.engine import Engine
from qval.decode.pearl import THREAD_NAME, PearlParams, PearlPolicy, acceptance_rate, modelled_speedup

PROMPT = "Repeat exactly: red green blue, red green blue, red green blue, red green"


def _pearl_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == THREAD_NAME and t.is_alive()]


@pytest.fixture(scope="module")
def pearl(smollm):
    return PearlPolicy(PearlParams()).drafter(smollm)


def test_pearl_drafts_while_the_target_verifies_and_leaves_no_thread(smollm, pearl):
    engine = Engine(smollm.model, smollm.eos_token_ids)
    ids = smollm.chat_ids([{"role": "user", "content": PROMPT}])
    threads = torch.get_num_threads()
    ar = engine.decode(engine.prefill(ids), None, 40)
    before = dict(pearl.stats)
    trace = engine.decode(engine.prefill(ids), pearl, 40)
    assert trace.token_ids == ar.token_ids
    drafted = pearl.stats["drafted"] - before["drafted"]
    during = pearl.stats["drafted_during_verify"] - before["drafted_during_verify"]
    # Tokens appeared in the background job while the engine's verification forward was running.
    assert drafted > 0 and during > 0, pearl.stats
    assert pearl.stats["post_verify"] > before["post_verify"] and max(trace.accepted_per_step) >= 1
    # Pre-verify rounds propose nothing; post-verify rounds propose window − 1 tokens (or fewer at the token cap).
    assert set(trace.drafted_per_step) <= set(range(PearlParams().window))
    # Every job is settled inside the engine's hooks: nothing runs once decode returns, and the decoding thread
    # has its intra-op thread count back.
    assert not _pearl_threads() and pearl.job is None
    assert torch.get_num_threads() == threads


def test_pearl_reset_stops_a_running_job(smollm, pearl):
    ids = smollm.chat_ids([{"role": "user", "content": PROMPT}])
    threads = torch.get_num_threads()
    pearl.reset()
    draft = pearl.propose(ids)  # a pre-verify round: the job drafts in the background, no verification follows
    assert draft.tokens == [] and pearl.job is not None
    assert torch.get_num_threads() == max(1, threads - 1)  # the target's share while the drafter runs
    pearl.reset()
    assert not _pearl_threads() and pearl.job is None
    assert torch.get_num_threads() == threads


def test_pearl_modelled_speedup_matches_a_hand_computation():
    # α = 0.5, γ = 3, a draft step 1 s, a verification 2 s, an AR step 1.5 s:
    # a surviving window's round lasts max(2, 3·1) = 3 s, any other max(2, 1) = 2 s.
    # pre-verify: 1 token, survives with α = 0.5: 0.5·3 + 0.5·2 = 2.5 s.
    # post-verify: 2 drafts, 1 + 0.5 + 0.25 = 1.75 tokens; survives with α³ = 0.125: 0.125·3 + 0.875·2 = 2.125 s.
    # π_post / π_pre = 0.5 / 0.875 = 4/7, so tokens per second = (1 + 4/7·1.75) / (2.5 + 4/7·2.125) = 2 / (26/7)
    # = 7/13, and the speedup is 1.5 · 7/13 = 21/26.
    assert modelled_speedup(0.5, 3, 1.0, 2.0, 1.5) == pytest.approx(21 / 26)
    # Never accepted: one token per round of max(verify, draft step); always accepted: γ tokens per long round.
    assert modelled_speedup(0.0, 4, 1.0, 3.0, 3.0) == pytest.approx(1.0)
    assert modelled_speedup(1.0, 4, 1.0, 3.0, 3.0) == pytest.approx(4 * 3.0 / 4.0)
    # α from a run's steps: 5 accepted drafts, 2 steps that ended on a rejection; steps without drafts ignored.
    assert acceptance_rate([2, 0, 3, 1], [2, 0, 3, 2]) == pytest.approx(6 / 7)
    assert acceptance_rate([0, 0], [0, 0]) is None


def test_dynamic_exit_picks_the_layer_and_length_with_most_tokens_per_layer():
    # TPL(ℓ, d) = (Σ_{i≤d} α^i) / (d·ℓ + 30). With α_8 = 0.2, α_16 = 0.6, α_24 = 0.95:
    # ℓ = 8, d = 1: 1.2 / 38 = 0.0316; ℓ = 16, d = 1: 1.6 / 46 = 0.0348; ℓ = 24: d = 1: 1.95 / 54 = 0.0361,
    # d = 2: 2.8525 / 78 = 0.03657, d = 3: 3.7099 / 102 = 0.03637: the deep layer, two drafts.
    assert best_exit({8: 0.2, 16: 0.6, 24: 0.95}, 30, 6) == (24, 2)
    assert tokens_per_layer(0.95, 24, 2, 30) == pytest.approx(2.8525 / 78)
    # Equal estimates: the cheapest layer; d = 1 (1.5 / 38 = 0.0395) beats d = 2 (1.75 / 46 = 0.0380).
    assert best_exit({8: 0.5, 16: 0.5, 24: 0.5}, 30, 6) == (8, 1)
    # A reliable shallow layer drafts long, but not as long as allowed: ℓ = 8 at α = 0.9 scores
    # d = 4: 4.0951 / 62 = 0.06605, d = 5: 4.68559 / 70 = 0.06694, d = 6: 5.217031 / 78 = 0.06689.
    assert best_exit({8: 0.9, 24: 0.99}, 30, 6) == (8, 5)
    assert best_exit({8: 0.9}, 30, 3) == (8, 3)  # capped by max_draft
    assert best_exit({12: 1.0}, 30, 4) == (12, 4)  # α = 1: d + 1 tokens per round


def test_dynamic_exit_params_are_validated():
    assert DynamicExitParams(layers=[20, 8]).layers == [8, 20]
    for bad in ({"layers": [8, 8]}, {"layers": [0, 8]}, {"layers": []}, {"max_draft": 0}, {"decay": 0}):
        with pytest.raises(ValidationError):
            DynamicExitParams(**bad)


def test_dynamic_exit_reads_shadow_tokens_and_is_lossless(smollm):
    # Its plugin contract (lossless at T=0 and under coupled sampling) runs in tests/test_contracts.py.
    with pytest.raises(ValueError, match="below the target's 30 layers"):
        DynamicExitPolicy(DynamicExitParams(layers=[8, 30])).drafter(smollm)
    # A shadow token is exactly what the first ℓ layers would draft: norm + LM head on hidden state ℓ.
    ids = torch.tensor([smollm.chat_ids([{"role": "user", "content": PROMPT}])])
    with torch.inference_mode():
        hidden = smollm.model(input_ids=ids, output_hidden_states=True).hidden_states
        for layer in (8, 20):
            view = first_layers_view(smollm.model, layer)(input_ids=ids).logits[0]
            shadow = smollm.model.lm_head(smollm.model.model.norm(hidden[layer][0]))
            torch.testing.assert_close(shadow, view)
    drafter = DynamicExitPolicy(DynamicExitParams()).drafter(smollm)
    engine = Engine(smollm.model, smollm.eos_token_ids)
    chat = smollm.chat_ids([{"role": "user", "content": PROMPT}])
    ar = engine.decode(engine.prefill(chat), None, 40)
    trace = engine.decode(engine.prefill(chat), drafter, 40)
    assert trace.token_ids == ar.token_ids
    alphas = drafter.alphas()
    assert alphas != dict.fromkeys(DynamicExitParams().layers, 0.5)  # the estimates moved off the prior
    assert alphas[24] >= alphas[8]  # deeper exits agree with the target more often
    # Every round drafted with the (ℓ, d) chosen after the verification before it (the last round may be cut at
    # the token cap).
    lengths = [d for _, d in drafter.choices]
    assert len(lengths) == trace.target_steps and lengths[:-1] == trace.drafted_per_step[:-1]
    assert trace.drafted_per_step[-1] <= lengths[-1]


def _installed_policies() -> set[str]:
    return {ep.name for ep in metadata.entry_points(group="qval.policies")}


def test_pearl_and_dynamic_exit_through_the_cli_are_token_identical_to_ar(tmp_path):
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["entry-points"]["qval.policies"]
    assert {"pearl", "dynamic-exit"} <= set(declared)
    env = {} if {"pearl", "dynamic-exit"} <= _installed_policies() else expose_package(tmp_path / "site", ROOT)
    suite = write_suite(
        tmp_path / "seeds.yaml",
        """\
        name: seeds
        models: [smollm2-135m-instruct]
        decode:
          datasets: [{name: spec-bench, params: {categories: [summarization], limit_per_category: 1, max_turns: 1}}]
          policies: [ar, pearl, dynamic-exit]
          max_new_tokens: 16
          metrics: [speedup, modelled_speedup, lossless, mean_accepted_tokens]
        """,
    )
    results = tmp_path / "results"
    proc = run_qval("run", suite, "--results", results, "--workers", "1", env=env, timeout=1800)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    board = R.leaderboard(results, "seeds", "decode").set_index("method")
    for method in ("pearl", "dynamic-exit"):
        assert board.loc[method, "lossless"] == 1.0 and board.loc[method, "lossless__n"] == 1
        assert board.loc[method, "mean_accepted_tokens"] >= 1.0

    # benchmarks/pearl_model.py on this run, at a small size (2 forwards per step cost), so that it cannot rot: its
    # measured side is the leaderboard's, its modelled side PEARL's formula over step costs it times here.
    bench = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "pearl_model.py"), str(results), "seeds", "--reps", "2"],
        capture_output=True,
        text=True,
        timeout=600,
        env={
            **os.environ,
            **env,
            "PYTHONPATH": os.pathsep.join(
                filter(None, [str(ROOT), env.get("PYTHONPATH", os.environ.get("PYTHONPATH"))])
            ),
        },
    )
    assert bench.returncode == 0, bench.stderr
    row = json.loads(bench.stdout.strip().splitlines()[-1])
    assert row["measured_speedup"] == pytest.approx(float(board.loc["pearl", "speedup"]))
    assert row["alpha"] is not None and 0.0 <= row["alpha"] <= 1.0
    assert all(row[k] > 0 for k in ("ar_step_s", "verify_s", "draft_step_s", "pearl_modelled_speedup"))
