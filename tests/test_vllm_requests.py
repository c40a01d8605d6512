"""The vLLM request layer's own logic, without vLLM: a scripted engine answers the child's protocol, so memo,
batching, counters and failure reasons are checked in milliseconds (tests/test_vllm_backend.py runs the real one).
And the child client: a request interrupted by a scorer's time limit must not leave a reply for the next one."""

from __future__ import annotations

import base64
import sys
import textwrap

import numpy as np
import pytest

from qval.backends.vllm_client import VLLMProcess, VLLMProcessError
from qval.backends.vllm_requests import VLLMRequests
from qval.errors import QvalError
from qval.timeouts import PluginTimeout, time_limit

VOCAB = 8


class _Tokenizer:
    def decode(self, ids, skip_special_tokens=False):
        return " ".join(f"t{i}" for i in ids)


class _Engine:
    """Answers like vllm_proc: log-prob of token t is -t/10, the distribution is log-softmax(arange), generation
    is the prompt's last token + 1, repeated (seed added), a prefix-cache hit of 2 tokens on every prompt."""

    def __init__(self, refuse: str | None = None):
        self.calls: list[dict] = []
        self.refuse = refuse

    def request(self, req, timeout=None):
        self.calls.append(req)
        if self.refuse:
            raise VLLMProcessError("failed in the child", {"ok": False, "error": self.refuse})
        if req["op"] == "prompt_logprobs":
            out = [[-t / 10 for t in ids[s:]] for ids, s in zip(req["prompts"], req["starts"])]
            return {
                "ok": True,
                "logprobs": out,
                "cached": [2] * len(out),
                "computed": sum(len(p) - 2 for p in req["prompts"]),
            }
        if req["op"] == "next_logprobs":
            dist = np.arange(VOCAB, dtype="<f4") - np.log(np.exp(np.arange(VOCAB)).sum())
            blob = base64.b64encode(dist.astype("<f4").tobytes()).decode()
            return {"ok": True, "vocab_size": VOCAB, "logprobs": [blob] * len(req["prompts"]), "cached": [2]}
        if req["op"] == "generate_batch":
            outs = [
                {"token_ids": [r["prompt_token_ids"][-1] + 1 + r["seed"]] * r["max_tokens"], "cached": 2}
                for r in req["requests"]
            ]
            return {"ok": True, "outputs": outs}
        raise AssertionError(req)


class _Model:
    def __init__(self, engine):
        self.engine, self.tokenizer = engine, _Tokenizer()

    def scoring_engine(self):
        return self.engine


def test_continuations_go_in_one_call_and_are_memoised():
    engine = _Engine()
    layer = VLLMRequests(_Model(engine))
    out = layer.continuation_logprobs([1, 2, 3], [[4, 5], [6], []])
    assert out == [[-0.4, -0.5], [-0.6], []]
    assert engine.calls == [{"op": "prompt_logprobs", "prompts": [[1, 2, 3, 4, 5], [1, 2, 3, 6]], "starts": [3, 3]}]
    assert layer.continuation_logprobs([1, 2, 3], [[4, 5], [6], []]) == out and len(engine.calls) == 1
    assert layer.counter.as_dict() == {"computed": 3 + 2, "naive": 2 * (5 + 4 + 3), "requests": 6, "memo_hits": 3}


def test_next_token_distribution_and_candidate_tokens_share_one_request():
    engine = _Engine()
    layer = VLLMRequests(_Model(engine))
    dist = layer.next_token_logprobs([1, 2, 3])
    assert dist.dtype.is_floating_point and dist.shape == (VOCAB,) and abs(float(dist.exp().sum()) - 1) < 1e-5
    assert layer.token_logprobs([1, 2, 3], [7, 0]).tolist() == [dist[7].item(), dist[0].item()]
    assert [c["op"] for c in engine.calls] == ["next_logprobs"]
    assert layer.counter.as_dict() == {"computed": 1, "naive": 6, "requests": 2, "memo_hits": 1}


def test_generations_batch_the_ones_the_memo_cannot_answer():
    engine = _Engine()
    layer = VLLMRequests(_Model(engine))
    assert layer.generate([5], 2, 0.0, 0) == "t6 t6"
    texts = layer.generate_many([([5], 2, 0.0, 0), ([5], 1, 0.7, 1), ([9], 1, 0.0, 0), ([5], 1, 0.7, 1)])
    assert texts == ["t6 t6", "t7", "t10", "t7"]
    # one call for the first generate, one for the two new requests (the repeat within the batch is asked once)
    assert [len(c["requests"]) for c in engine.calls] == [1, 2]
    assert layer.counter.requests == 5 and layer.counter.memo_hits == 2
    naive = VLLMRequests(_Model(_Engine()), shared=False)
    assert naive.generate_many([([5], 1, 0.7, 1)] * 2) == ["t7", "t7"] and naive.counter.memo_hits == 0


def test_an_engine_that_caps_log_probs_fails_with_the_reason():
    capped = "VLLMValidationError: Requested sample logprobs of 49152, which is greater than max allowed: 20"
    layer = VLLMRequests(_Model(_Engine(refuse=capped)))
    with pytest.raises(QvalError, match="needs the full next-token distribution.*max_logprobs"):
        layer.next_token_logprobs([1, 2])
    with pytest.raises(QvalError, match="vLLM refused a generate_batch request: boom"):
        VLLMRequests(_Model(_Engine(refuse="boom"))).generate([1], 1, 0.0, 0)


def test_a_request_interrupted_by_a_time_limit_kills_the_child(tmp_path):
    """Otherwise the child's late reply would be read as the answer to the next request."""
    script = tmp_path / "slow_child.py"
    script.write_text(
        textwrap.dedent(
            """\
            import json, sys, time
            for line in sys.stdin:
                time.sleep(float(json.loads(line).get("sleep", 0)))
                print(json.dumps({"ok": True, "echo": json.loads(line)}), flush=True)
            """
        )
    )
    proc = VLLMProcess(sys.executable, script=script).start()
    try:
        assert proc.request({"op": "ping"}, timeout=30)["echo"] == {"op": "ping"}
        with pytest.raises(PluginTimeout), time_limit(0.5, "scorer"):
            proc.request({"op": "slow", "sleep": 5}, timeout=30)
        assert not proc.alive()
        with pytest.raises(VLLMProcessError, match="died before the request"):
            proc.request({"op": "ping"}, timeout=30)
    finally:
        proc.close()
