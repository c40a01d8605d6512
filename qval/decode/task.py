"""Run one decoding cell. The harness owns timing: it brackets prefill and decode around the engine."""

from __future__ import annotations

import functools
import hashlib
import time
import zlib

from .. import loadwatch
from ..cell import Cell
from ..errors import QvalError
from ..models import transcript
from ..models.base import LocalModel, Model, ServedModel
from ..registry import REGISTRY
from .datasets import Dataset
from .engine import Engine
from .features import next_token_features


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()


class TimedDrafter:
    """Wraps a policy's drafter so the harness clocks the time spent drafting (propose, observe, observe_forward
    and observe_step) inside decode. A drafter that drafts in a background thread while the target verifies
    (PEARL) is clocked only where the decoding thread waits for it.

    The engine already synchronises once per verify step (it reads the target's tokens), so the extra
    synchronisation here on CUDA costs next to nothing; on the CPU it is a no-op.
    """

    # The engine's optional drafter hooks (engine.Drafter): drafting work, clocked; and what passes through
    # unclocked (a lossy drafter's acceptance rule is part of verification). tests/test_engine.py checks that every
    # hook the engine looks up is listed here, so a new hook cannot be silently dropped by this wrapper.
    CLOCKED_HOOKS = ("observe", "observe_forward", "observe_step", "observe_lookahead", "prefilled")
    PASSED_THROUGH = ("reset", "accept", "wants_hidden_states")

    def __init__(self, drafter, device: str):
        self.inner, self.device, self.seconds = drafter, device, 0.0
        for name in self.CLOCKED_HOOKS:
            if hasattr(drafter, name):
                setattr(self, name, functools.partial(self._clocked, getattr(drafter, name)))
        for name in self.PASSED_THROUGH:
            if hasattr(drafter, name):
                setattr(self, name, getattr(drafter, name))

    def _clocked(self, fn, *args):
        _sync(self.device)
        start = time.perf_counter()
        out = fn(*args)
        _sync(self.device)
        self.seconds += time.perf_counter() - start
        return out

    def propose(self, context, temperature=0.0, generator=None):
        return self._clocked(self.inner.propose, context, temperature, generator)


def generate_timed(
    engine: Engine, drafter, prompt_ids, max_new_tokens, temperature, generator, device, coupled_seed: int | None = None
):
    """(trace, prefill seconds, decode seconds, prefill state, seconds of the decode spent drafting)."""
    timed = TimedDrafter(drafter, device) if drafter is not None else None
    _sync(device)
    t0 = time.perf_counter()
    state = engine.prefill(prompt_ids)
    _sync(device)
    t1 = time.perf_counter()
    trace = engine.decode(state, timed, max_new_tokens, temperature, generator, coupled_seed)
    _sync(device)
    t2 = time.perf_counter()
    return trace, t1 - t0, t2 - t1, state, (timed.seconds if timed is not None else 0.0)


def prefill_features(state) -> dict:
    """Cheap features of the prefill's next-token distribution, computed after the timed region (the live
    ``learned-length`` policy computes the same ones inside it: ``features.py``)."""
    return next_token_features(state.next_logits)


def _turn_seed(cell: Cell, sample, turn: int) -> int:
    """The random stream of one (cell, sample, turn): a cell's own, so AR and a policy sample independently under
    rejection sampling (the distributional test needs that)."""
    return zlib.crc32(f"{cell.cell_id}:{sample.sample_id}:{turn}".encode())


def _run_turns(sample, model, decode_turn, dataset) -> tuple[list[dict], bool]:
    """All turns of one prompt for one cell; the model's own answers go between the turns.

    ``decode_turn(ids, turn)`` returns (row fields, generated token ids). The dataset's checker then judges the
    turn's whole text, after the timed region (``checkers.py`` says why here and not in the metric stage). One
    failing turn (decoding or checking) records the sample as failed and the cell goes on.
    """
    rows, messages = [], []
    for turn, text in enumerate(sample.turns):
        messages.append({"role": "user", "content": text})
        try:
            ids = model.chat_ids(messages)
            fields, token_ids = decode_turn(ids, turn)
            output = model.tokenizer.decode(token_ids, skip_special_tokens=True)
            verdict = dataset.check(sample, turn, output)
        except Exception as exc:  # noqa: BLE001 - one failing sample is recorded and the cell goes on
            return [
                {
                    "sample_id": sample.sample_id,
                    "turn": turn,
                    "category": sample.category,
                    "error": f"{type(exc).__name__}: {exc}",
                }
            ], True
        messages.append({"role": "assistant", "content": output})
        shown, capped = transcript.cap(output)
        rows.append(
            {
                "sample_id": sample.sample_id,
                "turn": turn,
                "category": sample.category,
                "prompt_tokens": len(ids),
                "new_tokens": len(token_ids),
                "output_sha": hashlib.sha256(str(token_ids).encode()).hexdigest()[:16],
                "output_ids": token_ids,
                "error": None,
                **fields,
                "output_text": shown,
                "output_capped": capped,
                "accepted_chars": accepted_spans(model.tokenizer, token_ids, output, fields.get("accepted")),
                "correct": None if verdict is None else verdict.correct,
                "check_detail": None if verdict is None else verdict.detail,
            }
        )
    return rows, False


def accepted_spans(tokenizer, token_ids: list[int], text: str, accepted: list[int] | None) -> list[int] | None:
    """Character spans [start, end) of the accepted draft tokens in the turn's text, flattened, for highlighting.

    The first token comes from the prefill; then each target step emits its accepted drafts followed by one token
    of the target's own (the last step may be cut by EOS or the token cap). Spans are found by decoding the
    prefixes at their edges; None when the trace does not fit that layout or a prefix does not decode to a prefix
    of the text (a multi-byte character split across tokens), so a page never highlights the wrong characters."""
    if accepted is None:
        return None
    spans, pos = [], 1
    for n in accepted:
        end = min(pos + n, len(token_ids))
        if n and end > pos:
            spans.append((pos, end))
        pos += n + 1
    if pos < len(token_ids):  # more tokens than the steps account for: not this layout
        return None
    if not spans:
        return []
    chars: list[int] = []
    for start, end in spans:
        for k in (start, end):
            prefix = tokenizer.decode(token_ids[:k], skip_special_tokens=True)
            if not text.startswith(prefix):
                return None
            chars.append(len(prefix))
    return chars


def under_watch(timed_call):
    """Run ``timed_call()`` with the machine's load recorded over exactly its window: (result, load row).

    Under ``qval run --require-idle`` a call timed under load is thrown away and made again once the machine is
    idle (the call must be repeatable: the turns re-seed their generators), at most ``loadwatch.RETIMES`` times;
    a machine that stays busy raises ``MachineBusy``, which fails the sample with that reason."""
    patience = loadwatch.require_idle_s()
    for attempt in range(loadwatch.RETIMES + 1):
        start = loadwatch.snapshot()
        result = timed_call()
        load = loadwatch.between(start, loadwatch.snapshot())
        if patience is None or not load.busy:
            break
        if attempt == loadwatch.RETIMES:
            raise loadwatch.MachineBusy(load, patience)
        loadwatch.wait_until_idle(patience)
    return result, load.as_row()


def _run_sample(cell: Cell, sample, model, engine: Engine, drafter, dataset) -> tuple[list[dict], bool]:
    import torch

    def decode_turn(ids, turn):
        # Coupled sampling shares one noise seed per (seed, sample, turn) across the cells, so every lossless
        # policy reproduces AR's tokens.
        coupled = (
            zlib.crc32(f"{cell.seed}:{sample.sample_id}:{turn}".encode())
            if cell.settings.get("sampling") == "coupled"
            else None
        )

        def timed():
            generator = torch.Generator().manual_seed(_turn_seed(cell, sample, turn))
            return generate_timed(
                engine,
                drafter,
                ids,
                cell.settings["max_new_tokens"],
                cell.temperature,
                generator,
                model.device,
                coupled,
            )

        begin = getattr(drafter, "begin_sample", None)
        if begin is not None:
            # Which sample comes next (bookkeeping only, before the clock; a per-instance drafter computes its
            # choice in its ``prefilled`` hook, inside it). It may refuse the sample (learned-length refuses the
            # samples its selector was trained on): the sample is then recorded as failed with that reason.
            begin(cell.dataset, sample.sample_id, sample.category, turn)
        (trace, prefill_s, decode_s, state, draft_s), load = under_watch(timed)
        return {
            **load,
            "threads": torch.get_num_threads(),
            "forward": engine.forward,
            "target_steps": trace.target_steps,
            "drafted": trace.drafted_per_step,
            "accepted": trace.accepted_per_step,
            "prefill_s": prefill_s,
            "decode_s": decode_s,
            "draft_s": draft_s,
            "stopped_on_eos": trace.stopped_on_eos,
            **prefill_features(state),
        }, trace.token_ids

    return _run_turns(sample, model, decode_turn, dataset)


def _run_served_sample(cell: Cell, sample, model: ServedModel, dataset) -> tuple[list[dict], bool]:
    def decode_turn(ids, turn):
        # The vLLM engine runs in a child of this worker, so its CPU is ours and the load is recorded; an
        # OpenAI-compatible server is another process (often another machine): no load is recorded for it.
        def generate():
            return model.generate(
                ids, cell.settings["max_new_tokens"], cell.temperature, _turn_seed(cell, sample, turn)
            )

        if model.local_engine:
            gen, load = under_watch(generate)
        else:
            gen, load = generate(), {}
        drafted, accepted = gen.steps()
        timed = gen.decode_s is not None
        return {
            **load,
            "threads": model.threads,
            "target_steps": len(accepted),
            "drafted": drafted,
            "accepted": accepted,
            # With engine timestamps: prefill = request start → first token, decode = first → last token.
            # Without them the whole request counts as decode (prefill NULL), for the baseline and the policy
            # alike.
            "prefill_s": gen.prefill_s if timed else None,
            "decode_s": gen.decode_s if timed else gen.wall_s,
            "draft_s": None,
            "stopped_on_eos": gen.finish_reason == "stop",
            "prefill_entropy": None,
            "prefill_top_prob": None,
        }, gen.token_ids

    return _run_turns(sample, model, decode_turn, dataset)


def _group_samples(cells: list[Cell]) -> tuple[list, Dataset]:
    """The prompts of a group's dataset (all cells of a group share it, and its limit: the AR baseline is planned
    with the same settings), the first ``limit`` of them under `qval run --limit`, and the dataset (its checker)."""
    dataset_cls = REGISTRY.get("datasets", cells[0].dataset)
    dataset = dataset_cls(dataset_cls.Params.model_validate(cells[0].dataset_params))
    return list(dataset.samples())[: cells[0].limit], dataset


def _policy(cell: Cell):
    policy_cls = REGISTRY.get("policies", cell.method)
    return policy_cls(policy_cls.Params.model_validate(cell.method_params))


def run_served_group(cells: list[Cell], model: ServedModel, writers: dict, emit, warmup: int = 1) -> dict:
    """Decode cells on a served model (vLLM, an OpenAI-compatible server): one cell after another, since the
    engine holds one speculative configuration at a time, each after ``warmup`` untimed requests."""
    from ..backends.served import PolicyNotServable

    first = cells[0]
    samples, dataset = _group_samples(cells)
    result: dict = {}
    for cell in cells:
        try:
            policy = _policy(cell)
            if cell.settings.get("sampling") == "coupled" and cell.temperature > 0:
                raise PolicyNotServable("coupled sampling is implemented by qval's own engine only")
            model.configure(policy)
        except Exception as exc:  # noqa: BLE001 - this cell cannot run here; the others go on
            result[cell.cell_id] = exc
            continue
        done = writers[cell.cell_id].done_sample_ids()
        todo = [s for s in samples if s.sample_id not in done]
        emit("cell_start", cell=cell.cell_id, total=len(samples), done=len(done))
        if todo:
            ids = model.chat_ids([{"role": "user", "content": todo[0].turns[0]}])
            for _ in range(warmup):
                model.generate(ids, min(first.settings["max_new_tokens"], 32), 0.0, 0)
        failed = 0
        for sample in todo:
            rows, bad = _run_served_sample(cell, sample, model, dataset)
            failed += bad
            writers[cell.cell_id].add_sample(rows)
            emit("sample", cell=cell.cell_id)
        result[cell.cell_id] = (len(samples), failed)
    return result


def run_decode_group(
    cells: list[Cell], model: Model, writers: dict, emit, warmup: int = 1
) -> dict[str, tuple[int, int] | BaseException]:
    """Run decode cells that share an AR baseline (same model, dataset, temperature, seed) sample by sample.

    For each prompt every cell runs in turn, in an order that rotates from prompt to prompt, so drift or a
    disturbance on the machine hits the baseline and the policies alike instead of one whole cell. Returns, per
    cell, (samples, failed samples) or the exception that kept that cell's policy from being built; the other
    cells go on.
    """
    if isinstance(model, ServedModel):
        return run_served_group(cells, model, writers, emit, warmup)
    if not isinstance(model, LocalModel):
        raise QvalError(f"decoding needs a LocalModel or a ServedModel, not {type(model).__name__}")
    first = cells[0]
    samples, dataset = _group_samples(cells)
    # Cells planned before the setting existed ran transformers' forward.
    engine = Engine(model.model, model.eos_token_ids, fast=first.settings.get("forward", "transformers") == "qval")
    drafters, failures = {}, {}
    for cell in cells:
        try:
            drafters[cell.cell_id] = _policy(cell).drafter(model)
        except Exception as exc:  # noqa: BLE001 - a policy that cannot be built fails its own cell only
            failures[cell.cell_id] = exc
    live = [c for c in cells if c.cell_id not in failures]
    done = {c.cell_id: writers[c.cell_id].done_sample_ids() for c in live}
    for cell in live:
        emit("cell_start", cell=cell.cell_id, total=len(samples), done=len(done[cell.cell_id]))
    todo = [s for s in samples if any(s.sample_id not in done[c.cell_id] for c in live)]
    if todo:  # warm-up generations are not recorded: the first calls pay for allocation and caching
        ids = model.chat_ids([{"role": "user", "content": todo[0].turns[0]}])
        for cell in live:
            for _ in range(warmup):
                generate_timed(
                    engine,
                    drafters[cell.cell_id],
                    ids,
                    min(first.settings["max_new_tokens"], 32),
                    0.0,
                    None,
                    model.device,
                )
    failed = {c.cell_id: 0 for c in live}
    for index, sample in enumerate(todo):
        order = live[index % len(live) :] + live[: index % len(live)]
        for cell in order:
            if sample.sample_id in done[cell.cell_id]:
                continue
            rows, bad = _run_sample(cell, sample, model, engine, drafters[cell.cell_id], dataset)
            failed[cell.cell_id] += bad
            writers[cell.cell_id].add_sample(rows)
            emit("sample", cell=cell.cell_id)
    result: dict[str, tuple[int, int] | BaseException] = {c.cell_id: (len(samples), failed[c.cell_id]) for c in live}
    result.update(failures)
    return result
