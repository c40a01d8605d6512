"""``cross-tokenizer-draft``: SmolLM2-135M-Instruct drafting for Gemma-3-270M through text (qval/decode/cross_tokenizer.py).

The text bridge is checked on the two real tokenizers alone (no model): its incremental draft context is the text of
the whole target context, a draft that continues a word is tokenised as the target would, special tokens are
skipped or end a draft. Then the policy contract on the real pair (T = 0 and coupled T = 1 identical to AR), and one
real `qval run`. The contract on SmolLM2 alone (the degenerate pair: one tokenizer on both sides) is
tests/test_contracts.py's, which runs every builtin policy.
"""

from __future__ import annotations

import pytest
from conftest import ROOT, run_qval, write_suite
from path_plugins import expose_package

import qval.results as R
from qval.decode.cross_tokenizer import CrossTokenizerDraftPolicy, CrossTokenizerParams, TextBridge
from qval.models.base import ModelParams
from qval.models.packaged import Gemma3Base, SmolLM2Instruct


@pytest.fixture(scope="module")
def tokenizers():
    from transformers import AutoTokenizer

    gemma = AutoTokenizer.from_pretrained(Gemma3Base(ModelParams()).local_path())
    smollm = AutoTokenizer.from_pretrained(SmolLM2Instruct(ModelParams()).local_path())
    return gemma, smollm


@pytest.fixture(scope="module")
def gemma():
    return Gemma3Base(ModelParams()).load(device="cpu")


def test_the_draft_context_follows_the_target_text_step_by_step(tokenizers):
    gemma, smollm = tokenizers
    bridge = TextBridge(gemma, smollm)
    text = "User: Name a café in Zürich.\n\nAssistant:\nThe Café Schober — it serves hot chocolate ☕ since 1842."
    ids = gemma(text)["input_ids"]  # <bos> first: Gemma's, unknown to SmolLM2, left out of the text
    assert ids[0] == gemma.bos_token_id and gemma.bos_token_id in bridge.skip
    cut = len(gemma("User: Name a café in Zürich.\n\nAssistant:\n")["input_ids"])
    bridge.draft_context(ids[:cut])
    for end in [*range(cut + 1, len(ids), 3), len(ids)]:  # a few target tokens per step, as verification emits them
        draft_ids = bridge.draft_context(ids[:end])
        assert smollm.decode(draft_ids) == gemma.decode(ids[1:end])  # exactly the text, whatever was split where
    assert bridge.text == text


def test_a_draft_is_tokenised_as_the_target_would_continue_it(tokenizers):
    gemma, smollm = tokenizers
    bridge = TextBridge(gemma, smollm)
    context = gemma("The quick brown fox jumps over the la")["input_ids"]
    draft = bridge.target_draft(context, "zy dog.")
    assert gemma.decode(context + draft) == "<bos>The quick brown fox jumps over the lazy dog."
    whole = gemma("The quick brown fox jumps over the lazy dog.", add_special_tokens=False)["input_ids"]
    assert bridge.target_draft(gemma("The quick brown fox")["input_ids"], " jumps over the lazy dog.") == whole[4:]
    # A draft special token the target lacks ends the draft; text after it is never proposed.
    end = smollm.convert_tokens_to_ids("<|im_end|>")
    assert end in bridge.stop
    drafted = smollm(" dog.", add_special_tokens=False)["input_ids"] + [
        end,
        *smollm(" Cat", add_special_tokens=False)["input_ids"],
    ]
    anchor = smollm("the lazy", add_special_tokens=False)["input_ids"]
    assert bridge.draft_text(anchor, drafted) == " dog."
    # The same tokenizer on both sides keeps its special tokens: a chat template reaches the draft model whole.
    same = TextBridge(smollm, smollm)
    chat = smollm.apply_chat_template([{"role": "user", "content": "Hi"}], add_generation_prompt=True)
    chat = chat["input_ids"] if hasattr(chat, "keys") else list(chat)
    assert not same.skip and not same.stop and same.draft_context(chat) == chat


def test_the_draft_must_be_a_model_source_that_runs_in_the_worker():
    assert CrossTokenizerParams().draft == "smollm2-135m-instruct"
    for bad, why in (("no-such-model", "not a model source"), ("vllm", "served by an engine"), ("hf", "needs params")):
        with pytest.raises(ValueError, match=why):
            CrossTokenizerParams(draft=bad)


@pytest.mark.slow
def test_smollm_drafting_for_gemma_passes_the_policy_contract(gemma):
    from qval.testing import check_policy

    report = check_policy(CrossTokenizerDraftPolicy, gemma, max_new_tokens=16)
    assert any("T=0" in rule for rule in report.passed) and any("coupled" in rule for rule in report.passed)
    from qval.decode.engine import Engine

    engine = Engine(gemma.model, gemma.eos_token_ids)
    ids = gemma.chat_ids([{"role": "user", "content": "List five fruits and their colours, one per line."}])
    drafter = CrossTokenizerDraftPolicy(CrossTokenizerParams(num_draft=4)).drafter(gemma)
    trace = engine.decode(engine.prefill(ids), drafter, 24)
    assert trace.token_ids == engine.decode(engine.prefill(ids), None, 24).token_ids
    assert sum(trace.accepted_per_step) > 0  # SmolLM2's drafts, through text, are accepted by Gemma


@pytest.mark.slow
def test_cross_tokenizer_draft_through_the_cli_is_lossless(tmp_path):
    suite = write_suite(
        tmp_path / "cross.yaml",
        """\
        name: cross
        models: [gemma3-270m]
        decode:
          datasets: [{name: spec-bench, params: {categories: [summarization], limit_per_category: 1, max_turns: 1}}]
          policies: [ar, cross-tokenizer-draft]
          max_new_tokens: 16
          metrics: [speedup, lossless, mean_accepted_tokens]
        """,
    )
    results = tmp_path / "results"
    env = expose_package(tmp_path / "site", ROOT)  # this checkout's entry points, as `pip install -e .` gives them
    proc = run_qval("run", suite, "--results", results, "--workers", "1", env=env, timeout=1800)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    board = R.leaderboard(results, "cross", "decode").set_index("method")
    assert board.loc["cross-tokenizer-draft", "lossless"] == 1.0
    assert board.loc["cross-tokenizer-draft", "lossless__n"] == 1
