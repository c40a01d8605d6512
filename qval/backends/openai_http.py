"""Any OpenAI-compatible server as a model source (``source: openai``): vLLM's, SGLang's, llama.cpp's, a vendor's.

Decoding cells time one request per prompt against the server; the AR baseline is the model's ``base_url`` (a
server without speculation) and the ``served`` policy points at a second server that speculates. Q-alignment
scorers use the same client through ``HTTPRequests`` (``make_requests``): generation, and log-probs of given continuations via
``echo`` (the prompt's own token log-probs; vLLM matches a transformers forward pass to ~4e-5 in fp32).

Prompts are sent as token ids made with the model's own tokenizer and chat template (``tokenizer``: an HF folder
or a qval model source), so they are byte-identical to the other backends'. Standard library only (urllib).
"""

from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.request
from pathlib import Path

from pydantic import ConfigDict, Field

from ..errors import QvalError
from ..models.base import Generation, ModelParams, ServedModel, ServedModelSource
from ..models.requests import Requests
from .served import registered_model_folder, tokenizer_and_eos


class OpenAIParams(ModelParams):
    model_config = ConfigDict(extra="forbid")
    base_url: str = Field(pattern=r"^https?://")  # e.g. http://127.0.0.1:8000/v1
    model: str | None = None  # the served model id; default: the first one GET /models lists
    tokenizer: str  # an HF folder, or a qval model source name that materialises one (e.g. smollm2-135m-instruct)
    api_key_env: str = "OPENAI_API_KEY"  # the key is read from this variable, never stored in a suite or result
    timeout_s: float = Field(default=600.0, gt=0)


class OpenAIClient:
    def __init__(self, base_url: str, api_key: str | None = None, timeout_s: float = 600.0):
        self.base_url, self.api_key, self.timeout_s = base_url.rstrip("/"), api_key, timeout_s

    def _call(self, method: str, path: str, body: dict | None = None) -> dict:
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.base_url + path, data=data, headers=headers, method=method)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode("utf-8", "replace")[:500]
            raise QvalError(f"{method} {self.base_url}{path}: HTTP {exc.code}: {detail}") from None
        except (urllib.error.URLError, OSError) as exc:
            raise QvalError(f"{method} {self.base_url}{path}: {getattr(exc, 'reason', exc)}") from None

    def get(self, path: str) -> dict:
        return self._call("GET", path)

    def post(self, path: str, body: dict) -> dict:
        return self._call("POST", path, body)

    def first_model(self) -> str:
        models = self.get("/models").get("data") or []
        if not models:
            raise QvalError(f"{self.base_url}/models lists no model")
        return models[0]["id"]


class OpenAIModel(ServedModelSource):
    """Any OpenAI-compatible server at ``base_url``, fed the model's own token ids: decoding cells, and scorers needing
    only generation or continuation log-probs.

    Prompts are made with ``tokenizer`` (an HF folder or a qval model source), so they are byte-identical to the other
    backends'. The AR baseline is this server; the ``served`` policy points at a second one that speculates. The API key
    is read from ``api_key_env``, and neither it nor ``base_url`` is part of the identity."""

    name = "openai"
    Params = OpenAIParams

    def identity(self) -> dict:
        # Where the server runs and how we authenticate do not change what it computes.
        return {
            "source": self.name,
            "model": self.params.model,
            "tokenizer": self.params.tokenizer,
            "dtype": self.params.dtype,
        }

    def tokenizer_path(self) -> Path:
        if Path(self.params.tokenizer).expanduser().exists():
            return Path(self.params.tokenizer).expanduser()
        return registered_model_folder(self.params.tokenizer, self.params.dtype)

    def load(self, device: str | None = None) -> OpenAIServedModel:
        path = self.tokenizer_path()
        return OpenAIServedModel(self, str(path), *tokenizer_and_eos(path))


class OpenAIServedModel(ServedModel):
    backend = "openai"

    def __init__(self, source: OpenAIModel, path: str, tokenizer, eos_ids):
        super().__init__(source.name, path, tokenizer, eos_ids)
        self.params = source.params
        self.api_key = os.environ.get(self.params.api_key_env) or None
        self.client = OpenAIClient(self.params.base_url, self.api_key, self.params.timeout_s)
        self.model_id = self.params.model or self.client.first_model()

    def configure(self, policy) -> None:
        config = policy.served_config(self.backend)
        url = (config or {}).get("base_url") or self.params.base_url
        self.client = OpenAIClient(url, self.api_key, self.params.timeout_s)

    def make_requests(self) -> Requests:
        """Q-alignment scorers' requests as completions: log-probs of given continuations via ``echo``."""
        from ..qalign.http_llm import HTTPRequests

        return HTTPRequests(self)

    def completions(self, body: dict) -> dict:
        return self.client.post("/completions", {"model": self.model_id, **body})

    def generate(self, prompt_ids, max_new_tokens, temperature, seed) -> Generation:
        body = {
            "prompt": list(map(int, prompt_ids)),
            "max_tokens": int(max_new_tokens),
            "temperature": float(temperature),
            "seed": int(seed),
            "return_token_ids": True,
        }
        start = time.perf_counter()
        reply = self.completions(body)
        wall = time.perf_counter() - start
        choice = reply["choices"][0]
        ids = choice.get("token_ids")
        if ids is None:  # not a vLLM server: the text is all we get back
            ids = self.tokenizer(choice.get("text") or "", add_special_tokens=False)["input_ids"]
        metrics = reply.get("metrics") or {}
        spec = metrics.get("speculative_decoding") or {}
        ttft, gen_ms = metrics.get("time_to_first_token_ms"), metrics.get("generation_time_ms")
        return Generation(
            token_ids=list(ids),
            finish_reason=choice.get("finish_reason"),
            wall_s=wall,
            prefill_s=ttft / 1000 if ttft is not None and gen_ms is not None else None,
            # vLLM: time_to_first_token_ms = scheduled → first token; generation_time_ms = first → last token
            decode_s=gen_ms / 1000 if ttft is not None and gen_ms is not None else None,
            per_step_accepted=spec.get("per_step_accepted"),
            per_step_drafted=spec.get("per_step_drafted"),
            info={"token_ids_from_server": choice.get("token_ids") is not None},
        )
