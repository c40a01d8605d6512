"""Loaded models are LocalModel or ServedModel (told apart by isinstance), each gives its own request layer, and a
scorer gets its cell's context when it is built. No model is loaded here."""

import sys
from pathlib import Path

import pytest

from qval.backends.openai_http import OpenAIModel, OpenAIServedModel
from qval.backends.vllm_requests import VLLMRequests
from qval.backends.vllm_source import VLLMModel, VLLMServedModel
from qval.errors import QvalError
from qval.models.base import (
    LocalModel,
    LocalModelSource,
    ServedModel,
    ServedModelSource,
)
from qval.models.hf import HFPathModel
from qval.models.packaged import SmolLM2Instruct
from qval.qalign.envs.toy_text import FrozenLakeEnv
from qval.qalign.http_llm import HTTPRequests
from qval.qalign.llm import LLMRequests
from qval.qalign.scorers.base import Scorer, ScorerContext, build_scorer
from qval.qalign.scorers.baselines import HeuristicScorer
from qval.registry import REGISTRY

ROOT = Path(__file__).resolve().parent.parent


def test_every_model_plugin_is_a_local_or_a_served_source():
    assert issubclass(SmolLM2Instruct, LocalModelSource) and issubclass(HFPathModel, LocalModelSource)
    assert issubclass(VLLMModel, ServedModelSource) and issubclass(OpenAIModel, ServedModelSource)
    for name in REGISTRY.names("models"):
        cls = REGISTRY.get("models", name)
        assert issubclass(cls, (LocalModelSource, ServedModelSource)), name
    assert issubclass(VLLMServedModel, ServedModel) and issubclass(OpenAIServedModel, ServedModel)


def test_each_model_gives_its_own_request_layer_once():
    local = LocalModel("m", "/nowhere", model=object(), tokenizer=None, device="cpu")
    assert isinstance(local.requests(), LLMRequests) and local.requests() is local.requests()
    source = OpenAIModel(OpenAIModel.Params(base_url="http://127.0.0.1:9/v1", model="m", tokenizer="/nowhere"))
    served = OpenAIServedModel(source, "/nowhere", None, {0})  # a model id is given: no request to the server
    assert isinstance(served.requests(), HTTPRequests) and served.requests() is served.requests()
    vllm = VLLMServedModel(VLLMModel(VLLMModel.Params(path="/nowhere")), "/nowhere", None, {0})
    assert isinstance(vllm.requests(), VLLMRequests) and vllm.requests() is vllm.requests()  # no engine started yet
    assert vllm._proc is None

    class Toy(ServedModel):
        backend = "toy"

    with pytest.raises(QvalError, match="the toy backend gives Q-alignment scorers no request layer"):
        Toy("m", "/nowhere", None, {0}).requests()


class _Legacy(Scorer):
    """A third-party scorer written before the context: it takes the model second."""

    def __init__(self, params, model=None, seed: int = 0, temperature: float = 0.0, gamma: float = 0.95):
        super().__init__(params, model, seed, temperature, gamma)
        self.given_model = model


def test_scorers_get_their_context_at_construction_old_signatures_too():
    env = FrozenLakeEnv(FrozenLakeEnv.Params())
    context = ScorerContext(env=env, seed=3, temperature=0.5, gamma=0.9)
    scorer = build_scorer(HeuristicScorer, HeuristicScorer.Params(), context)
    assert scorer.env is env and scorer.context is context and (scorer.seed, scorer.gamma) == (3, 0.9)
    legacy = build_scorer(_Legacy, _Legacy.Params(), context)
    assert legacy.env is env and legacy.context is context and legacy.given_model is None
    assert (legacy.seed, legacy.temperature, legacy.gamma) == (3, 0.5, 0.9)
    positional = HeuristicScorer(HeuristicScorer.Params(), None, 7)  # the old positional call still builds one
    assert positional.seed == 7 and positional.env is None
    with pytest.raises(QvalError, match="has none"):
        _ = ScorerContext().requests


def test_no_import_cycle_in_qval():
    sys.path.insert(0, str(ROOT / "tools"))
    try:
        import import_cycles
    finally:
        sys.path.pop(0)
    graph = import_cycles.import_graph(ROOT / "qval")
    assert "qval.qalign.llm" in graph["qval.models.base"]  # function-level imports are edges too
    assert import_cycles.cycles(graph) == []
