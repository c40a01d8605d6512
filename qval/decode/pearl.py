"""PEARL (Liu et al., "PEARL: Parallel Speculative Decoding with Adaptive Draft Length", ICLR 2025,
arXiv:2408.11850): the draft model drafts in a background thread while the target verifies, so neither waits for
the other for long.

A round is one engine verification. The drafter starts a background job in ``propose`` and settles it in the
engine's ``observe_step`` hook (after the verification), so drafting runs exactly while the target's forward runs
and never outside the engine's decode (no drafting leaks into the harness's next timed region):

- pre-verify (no valid draft in hand: the first round, or the round after a rejection): ``propose`` returns an
  empty draft, so the target computes its own next token t from the pending token alone, while the job drafts
  x1..xγ. ``observe_step`` then compares x1 with t: equal, x2..xγ are the next round's draft (post-verify);
  different, the job is stopped at once (it never drafts past a token known to be wrong).
- post-verify (a valid draft R of γ − 1 tokens in hand): ``propose`` returns R and the job drafts the γ tokens that
  follow R, assuming R is accepted whole. If the target accepts all of R and its own next token equals the job's
  first token, the job's other γ − 1 tokens are the next round's draft; otherwise they are thrown away (the job is
  stopped as soon as that is known) and the next round is a pre-verify one.

What is emitted is decided by the engine's verification alone (exact match at T = 0 and under coupled sampling,
min(1, p/q) at T > 0, with q the draft model's distribution for every proposed token): the background thread only
changes which drafts the engine sees, never what it emits, so the policy is lossless whatever the timing.

Threads: torch releases the GIL inside its kernels, so the two forwards overlap (their Python glue does not). While
the job runs, the decoding thread verifies with ``target_threads`` intra-op threads and the job drafts with
``draft_threads`` (each a thread-local OpenMP setting); with the defaults on the 2 CPUs the harness gives a decode
shard, that is 1 + 1: one core each rather than 2 + 1 threads fighting over 2 cores. The decoding thread's own count
is restored as soon as the job is settled, so the harness's ``threads`` column still says what the shard was given.
"""

from __future__ import annotations

import threading
from typing import ClassVar, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator

from ..models import kv
from .engine import Draft
from .policies import DecodePolicy

THREAD_NAME = "qval-pearl-draft"


class PearlParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    draft: Literal["int8", "path"] = "int8"  # int8: a dynamically quantised copy of the target (CPU)
    path: str | None = None  # an HF folder sharing the target's tokenizer, when draft = "path"
    # γ, PEARL's window: tokens the drafter drafts while the target verifies (the paper sets it to c, the ratio
    # of a target forward's cost to a draft step's). A post-verify round proposes γ − 1 of them; the first checks
    # against the target's own token.
    window: int = Field(default=3, ge=2, le=32)
    draft_threads: int = Field(default=1, ge=1, le=256)
    # Intra-op threads of the target while the drafter runs beside it; None: the decoding thread's count at
    # propose time minus draft_threads (at least 1).
    target_threads: int | None = Field(default=None, ge=1, le=256)

    @model_validator(mode="after")
    def _path(self):
        if (self.draft == "path") != (self.path is not None):
            raise ValueError("give 'path' exactly when draft is 'path'")
        return self


class _Job:
    """One background drafting run: ``n`` tokens after ``base``; tokens appear in ``tokens`` as they are drafted."""

    def __init__(self, base: list[int], n: int, temperature: float, seed: int):
        self.base, self.n, self.temperature, self.seed = base, n, temperature, seed
        self.tokens: list[int] = []
        self.probs: list[torch.Tensor] = []
        self.during_verify = 0  # tokens drafted while the engine's verification was in flight
        self.error: BaseException | None = None
        self.cancel = threading.Event()
        self.progress = threading.Condition()
        self.finished = False
        self.thread: threading.Thread | None = None


class PearlDrafter:
    """The background drafter (module docstring). ``stats`` counts what it did over its lifetime: ``jobs``,
    ``drafted`` (tokens the draft model produced), ``drafted_during_verify`` (of those, drafted while the target's
    verification was in flight: the overlap PEARL is about), ``pre_verify`` and ``post_verify`` rounds, and
    ``cancelled`` jobs."""

    def __init__(self, model, window: int, eos_token_ids, draft_threads: int = 1, target_threads: int | None = None):
        self.model, self.window = model, window
        self.eos = set(eos_token_ids)
        self.draft_threads, self.target_threads = draft_threads, target_threads
        self.device = next(model.parameters()).device
        self.cache = None
        self.cached: list[int] = []  # token ids whose keys/values are in the draft model's cache
        self.job: _Job | None = None
        self.verifying = False  # between propose's return and observe_step: the target is verifying
        self.saved_threads: int | None = None
        self.stats = dict.fromkeys(
            ("jobs", "drafted", "drafted_during_verify", "pre_verify", "post_verify", "cancelled"), 0
        )
        self._clear_round()

    def _clear_round(self) -> None:
        self.context: list[int] = []  # the verified context the last proposal continued
        self.proposal: list[int] = []
        self.next_base: list[int] | None = None  # the context the next drafts continue, once settled
        self.next_tokens: list[int] = []
        self.next_probs: list[torch.Tensor] = []

    # -- the engine's hooks (all on the decoding thread) --

    def reset(self) -> None:
        self._settle_threads()
        self._stop()
        self.cache, self.cached = None, []
        self._clear_round()

    def propose(self, context: list[int], temperature: float = 0.0, generator=None) -> Draft:
        # A job or thread setting left by a round the engine never settled (normally observe_step does).
        self._settle_threads()
        self._stop()
        valid = self.next_base is not None and self.next_base == context and bool(self.next_tokens)
        proposal = list(self.next_tokens) if valid else []
        probs = list(self.next_probs) if valid else []
        self.stats["post_verify" if valid else "pre_verify"] += 1
        self.context, self.proposal = list(context), proposal
        self.next_base, self.next_tokens, self.next_probs = None, [], []
        # The job's own random stream, drawn here on the decoding thread so a seeded run stays reproducible.
        seed = int(torch.randint(0, 2**62, (1,), generator=generator)) if temperature > 0 else 0
        self._start(_Job(context + proposal, self.window, temperature, seed))
        self.saved_threads = torch.get_num_threads()
        target = self.target_threads or max(1, self.saved_threads - self.draft_threads)
        torch.set_num_threads(target)
        self.verifying = True
        stacked = torch.stack(probs) if probs and temperature > 0 else None
        return Draft(proposal, stacked)

    def observe_step(self, emitted: list[int], hidden_states=None) -> None:
        self.verifying = False
        job = self.job
        try:
            if job is None:
                return
            proposal = self.proposal
            need = len(emitted) - len(proposal)  # job tokens the emitted ones reach into (1 if all were accepted)
            # The generation is over at EOS: nothing the job drafts would be used.
            keep = need > 0 and emitted[: len(proposal)] == proposal and not (self.eos & set(emitted))
            if keep and self._wait_for(job, need) and job.tokens[:need] == emitted[len(proposal) :]:
                self.job = None
                self._join(job)  # the rest of the window is the next round's draft: let it finish (PEARL waits too)
                if len(job.tokens) == job.n:
                    self.next_base = self.context + emitted
                    self.next_tokens, self.next_probs = job.tokens[need:], job.probs[need:]
            else:
                self._stop()  # a draft known to be wrong: stop drafting now
        finally:
            self._settle_threads()

    # -- background drafting --

    def _start(self, job: _Job) -> None:
        self.job = job
        self.stats["jobs"] += 1
        job.thread = threading.Thread(target=self._draft, args=(job,), name=THREAD_NAME, daemon=True)
        job.thread.start()

    def _draft(self, job: _Job) -> None:
        torch.set_num_threads(self.draft_threads)  # thread-local: the decoding thread keeps its own count
        generator = torch.Generator().manual_seed(job.seed) if job.temperature > 0 else None
        try:
            with torch.inference_mode():  # grad mode is thread-local too
                logits = self._sync(job.base)
                for i in range(job.n):
                    if job.cancel.is_set():
                        break
                    if job.temperature > 0:
                        p = torch.softmax(logits / job.temperature, dim=-1)
                        tok = int(torch.multinomial(p.cpu().double(), 1, generator=generator))
                    else:
                        p, tok = None, int(logits.argmax())
                    with job.progress:
                        job.tokens.append(tok)
                        if p is not None:
                            job.probs.append(p)
                        job.during_verify += int(self.verifying)
                        job.progress.notify_all()
                    if i + 1 < job.n and not job.cancel.is_set():
                        out = kv.forward(self.model, torch.tensor([[tok]], device=self.device), self.cache)
                        self.cached.append(tok)
                        logits = out.logits[0, -1].float()
        except BaseException as exc:  # noqa: BLE001 - re-raised on the decoding thread by _join
            job.error = exc
        finally:
            with job.progress:
                job.finished = True
                job.progress.notify_all()

    def _sync(self, context: list[int]) -> torch.Tensor:
        """Bring the draft cache to context[:-1], feed the rest; logits for the next position (as ModelDrafter)."""
        if self.cache is None:
            self.cache, self.cached = kv.new_cache(self.model), []
        common, limit = 0, min(len(self.cached), len(context) - 1)
        while common < limit and self.cached[common] == context[common]:
            common += 1
        if common < len(self.cached):
            self.cache.crop(-(len(self.cached) - common))
            self.cached = self.cached[:common]
        out = kv.forward(self.model, torch.tensor([context[common:]], device=self.device), self.cache, logits_to_keep=1)
        self.cached = list(context)
        return out.logits[0, -1].float()

    def _wait_for(self, job: _Job, count: int) -> bool:
        """Block until the job has drafted ``count`` tokens (True) or ended short of them (False)."""
        with job.progress:
            job.progress.wait_for(lambda: len(job.tokens) >= count or job.finished)
            return len(job.tokens) >= count

    def _join(self, job: _Job) -> None:
        if job.thread is not None:
            job.thread.join()
        self.stats["drafted"] += len(job.tokens)
        self.stats["drafted_during_verify"] += job.during_verify
        job.thread = None
        if job.error is not None:
            raise RuntimeError("PEARL's background drafter failed") from job.error

    def _stop(self) -> None:
        """Stop the running job (it ends after the draft step in progress) and wait for its thread."""
        job, self.job = self.job, None
        if job is None or job.thread is None:
            return
        job.cancel.set()
        self.stats["cancelled"] += int(len(job.tokens) < job.n)
        self._join(job)

    def _settle_threads(self) -> None:
        self.verifying = False
        if self.saved_threads is not None:
            torch.set_num_threads(self.saved_threads)
            self.saved_threads = None


def modelled_speedup(alpha: float, window: int, draft_step_s: float, verify_s: float, ar_step_s: float) -> float:
    """MODELLED speedup over AR of PEARL's parallel timeline as this module runs it, with every draft token
    accepted with probability ``alpha`` independently (the i.i.d. assumption of Leviathan et al.'s and PEARL's
    analyses). It is a two-state Markov chain over rounds, γ = ``window``:

    - pre-verify round: emits 1 token; the window survives (next round post-verify) when x1 is right (α);
    - post-verify round: γ − 1 drafts, so (1 − α^γ) / (1 − α) tokens emitted on average; the next round is
      post-verify again when all γ − 1 are accepted and the next window's first token is right (α^γ);
    - a round lasts max(verify_s, γ·draft_step_s) when the window survives (both sides wait for the other) and
      max(verify_s, draft_step_s) otherwise (the drafter is stopped after the step in progress).

    Stationary shares π_post / π_pre = α / (1 − α^γ); the speedup is ar_step_s × (expected tokens per round) ÷
    (expected round time), both averaged over the stationary shares. ``verify_s`` is one target forward while the
    drafter runs (qval: on ``target_threads``), ``ar_step_s`` one plain AR step, ``draft_step_s`` one draft step.
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError("alpha is a probability")
    gamma = window
    survive = alpha**gamma
    post_tokens = float(sum(alpha**i for i in range(gamma)))  # (1 − α^γ) / (1 − α), γ at α = 1
    long, short = max(verify_s, gamma * draft_step_s), max(verify_s, draft_step_s)
    pre_time = alpha * long + (1 - alpha) * short
    post_time = survive * long + (1 - survive) * short
    if survive >= 1.0:  # every window survives: post-verify rounds only
        return ar_step_s * post_tokens / post_time
    post_share = alpha / (1 - survive)  # π_post / π_pre
    return ar_step_s * (1 + post_share * post_tokens) / (pre_time + post_share * post_time)


def acceptance_rate(accepted: list[int], drafted: list[int]) -> float | None:
    """Per-token acceptance α of a run's steps under the i.i.d. model: accepted drafts ÷ (accepted drafts +
    rejections), over the steps that carried drafts (a step that accepted fewer than it drafted ended on one
    rejection). None when nothing was drafted."""
    hits = sum(a for a, d in zip(accepted, drafted, strict=True) if d > 0)
    misses = sum(1 for a, d in zip(accepted, drafted, strict=True) if 0 < d and a < d)
    return None if hits + misses == 0 else hits / (hits + misses)


class PearlPolicy(DecodePolicy):
    """PEARL (Liu et al. 2025, "PEARL: Parallel Speculative Decoding with Adaptive Draft Length", ICLR 2025,
    arXiv:2408.11850): pre-verify (the target checks the first draft token while the drafter drafts the rest of the
    window) and post-verify (the drafter drafts the next window while the target verifies this one), the draft
    model running concurrently with the target (``qval/decode/pearl.py``). Lossless: the engine's verification
    decides every emitted token. The draft length adapts as in the paper: a window survives a round only if every
    token of the one before was accepted.

    Where qval's version differs from the paper:
    - concurrency is two CPU threads of one process sharing the cores (``draft_threads`` for the drafter,
      ``target_threads`` for the target while it runs, by default 1 + 1 on 2 CPUs), not two GPUs; the Python parts
      of the two forwards hold the GIL in turn, so the overlap is partial;
    - pre-verify is an engine step with an empty draft: the target computes its own next token from the pending
      token while the drafter drafts x1..xγ, and x1 survives only if it equals that token (at T > 0 with rejection
      sampling too, where the paper applies min(1, p/q) to x1: a lossless but lower acceptance);
    - every verification also yields the target's own next token (qval's engine emits it), which post-verify
      checks against the next window's first draft, so a post-verify round proposes γ − 1 tokens and carries on
      only if that token matched;
    - the window γ is fixed per run (``window``), and each side waits for the other at the end of a round, as in
      the paper's algorithm; qval does not derive γ from measured costs.
    """

    name = "pearl"
    family = "draft-model"
    Params = PearlParams
    example_params: ClassVar[dict] = {}

    def drafter(self, model):
        from .drafters import load_draft_model

        p = self.params
        draft = load_draft_model(model, p.draft, p.path)
        return PearlDrafter(draft, p.window, model.eos_token_ids, p.draft_threads, p.target_threads)
