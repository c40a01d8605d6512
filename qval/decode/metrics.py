"""Decoding metrics: acceptance length (pooled and per-sample), measured and modelled speedup vs AR, losslessness,
task accuracy."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from ..cell import LOSSY_FAMILY
from ..loadwatch import BUSY_OTHER_CORES
from ..metrics.base import Deferred, ListCount, Metric, MetricView
from ..stats import (
    MetricValue,
    Resampling,
    bootstrap_batched,
    mean_request,
    ratio_request,
    wilson_proportion,
)


class RatioMetric(Metric):
    """A metric whose CI is a bootstrap of ratios of sums: it implements ``deferred``, and ``compute`` is that
    resolved, so that the metric stage can answer the bootstraps of many cells and metrics in one product."""

    def compute(self, samples, baseline=None, cell=None):
        return self.deferred(samples, baseline, cell).resolve()


def _ready(value: MetricValue | dict[str, MetricValue]) -> Deferred:
    return Deferred(lambda _: value)


def _one(request: Resampling, then=lambda value: value) -> Deferred:
    """The value of one ratio request, passed through ``then``."""
    return Deferred(lambda answers: then(answers[0][0]), [request])


def _accepted_and_steps(samples: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    # accepted_total = Σ accepted per row, computed by the database (list_sum) rather than in a Python loop.
    return samples["accepted_total"].to_numpy(float), samples["target_steps"].to_numpy(float)


class VllmAcceptanceLength(RatioMetric):
    """vLLM's mean acceptance length (``vllm/v1/spec_decode/metrics.py``): ``1 + num_accepted_tokens /
    num_drafts``, where ``num_drafts`` counts only the verify steps that carried at least one draft token (the
    scheduler's ``make_spec_decoding_stats`` returns early for a step with none, so ``observe_draft`` never sees
    it). A cell that never drafted (AR) has no value."""

    name = "acceptance_length"
    track = "decode"
    reads = ("accepted_total", "drafts")
    label = (
        "acceptance length as vLLM defines it: 1 + Σ accepted draft tokens / number of verify steps that "
        "carried ≥ 1 draft token (steps without a draft are not counted); undefined when nothing was drafted; "
        "for a token-tree policy, accepted = draft tokens on the accepted path, so the value is tokens emitted per "
        "verify step (vLLM defines it for chains only); n = samples (prompt turns), CI resamples them"
    )

    def deferred(self, samples, baseline=None, cell=None):
        accepted, drafts = samples["accepted_total"].to_numpy(float), samples["drafts"].to_numpy(float)
        keep = drafts > 0
        if not keep.any():
            return _ready(MetricValue.undefined(0))
        return _one(ratio_request(accepted[keep], drafts[keep]), lambda ratio: _shifted(ratio, 1.0))


class MeanAcceptedTokens(RatioMetric):
    """Spec-Bench's "#Mean accepted tokens" (``evaluation/speed.py``): the mean over every verify step of all
    samples of (accepted + 1), i.e. (Σ accepted + Σ steps) / Σ steps. Steps without a draft count as 1."""

    name = "mean_accepted_tokens"
    track = "decode"
    reads = ("accepted_total", "target_steps")
    label = (
        "Spec-Bench's #Mean accepted tokens: mean over all verify steps (pooled over samples) of accepted "
        "draft tokens + 1, steps without a draft included (AR = 1), i.e. tokens emitted per verify step (for a "
        "token-tree policy accepted = the accepted path's length); n = samples (prompt turns) with ≥ 1 "
        "verify step, CI resamples them"
    )

    def deferred(self, samples, baseline=None, cell=None):
        accepted, steps = _accepted_and_steps(samples)
        keep = steps > 0
        return _one(ratio_request(accepted[keep] + steps[keep], steps[keep]))


def _shifted(value: MetricValue, by: float) -> MetricValue:
    if value.value is None:
        return value
    return MetricValue(
        value.value + by,
        None if value.ci_low is None else value.ci_low + by,
        None if value.ci_high is None else value.ci_high + by,
        value.n,
    )


class PerSampleAcceptanceLength(RatioMetric):
    name = "acceptance_length_per_sample"
    track = "decode"
    reads = ("accepted_total", "target_steps")
    label = (
        "per-sample (macro) acceptance length, DFlash's and BlockPilot's definition: mean over samples of each "
        "sample's (accepted + 1) per verify step (for a token-tree policy accepted = the accepted path's length, so "
        "this is tokens emitted per verify step); n = samples (prompt turns) with ≥ 1 verify step"
    )

    def deferred(self, samples, baseline=None, cell=None):
        accepted, steps = _accepted_and_steps(samples)
        keep = steps > 0
        return _one(mean_request(1.0 + accepted[keep] / steps[keep]))


def pair_with_baseline(
    samples: pd.DataFrame, baseline: pd.DataFrame, columns=("new_tokens", "decode_s", "output_sha")
) -> pd.DataFrame:
    """Rows of this cell and the AR cell for the same (sample, turn), both successful; AR's columns end in _ar."""
    cols = ["sample_id", "turn", *columns]
    if _same_unique_keys(samples, baseline):
        # The usual case (both cells decoded every prompt, rows in the metric view's order): row i of one is row i
        # of the other, so the inner join is the two side by side, in the same order, without hashing string keys
        # (merge: ~35 ms a pair of 10,000-row cells, the largest share of the speedup metric).
        return pd.DataFrame({**{c: samples[c].array for c in cols}, **{f"{c}_ar": baseline[c].array for c in columns}})
    return samples[cols].merge(baseline[cols], on=["sample_id", "turn"], suffixes=("", "_ar"))


def _same_unique_keys(samples: pd.DataFrame, baseline: pd.DataFrame) -> bool:
    """True when both frames hold the same (sample_id, turn) keys in the same, strictly increasing, order (hence
    each once: a repeated key would make the join a cross product of its rows)."""
    if len(samples) != len(baseline) or len(samples) == 0:
        return False
    for key in ("sample_id", "turn"):  # Series.equals: same values and dtype, nulls in the same places
        if not samples[key].reset_index(drop=True).equals(baseline[key].reset_index(drop=True)):
            return False
    turns = samples["turn"].to_numpy()
    try:
        ids = pa.array(samples["sample_id"])
        before, after = ids[:-1], ids[1:]
        less = pc.less(before, after).to_numpy(zero_copy_only=False)
        same = pc.equal(before, after).to_numpy(zero_copy_only=False)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
        return False  # keys arrow cannot order (mixed types): the merge decides
    if turns.dtype.kind not in "iu" or less.dtype != bool or same.dtype != bool:
        return False  # nulls among the keys: the merge decides
    return bool(np.all(less | (same & (turns[:-1] < turns[1:]))))


def _other_run(cell: dict | None) -> bool:
    """True when the cell and its AR baseline finished in different runs (e.g. a policy added to a suite later):
    timings from two runs are not comparable, so no speedup is reported."""
    if not cell:
        return False
    own, base = cell.get("run_id"), cell.get("baseline_run_id")
    return isinstance(own, str) and isinstance(base, str) and own != base


def _decoded(pairs: pd.DataFrame) -> pd.DataFrame:
    """Pairs where both sides ran at least one verify step. A turn that ended at its first (prefill) token has no
    decode step, so its decode time measures nothing; a cell with none left has no speedup (not 0, not 1)."""
    return pairs[
        (pairs["target_steps"] > 0)
        & (pairs["target_steps_ar"] > 0)
        & (pairs["decode_s"] > 0)
        & (pairs["decode_s_ar"] > 0)
    ]


class MeasuredSpeedup(RatioMetric):
    name = "speedup"
    reference = 1.0  # no faster than AR
    track = "decode"
    reads = ("sample_id", "turn", "new_tokens", "decode_s", "target_steps")
    needs_baseline = True
    label = (
        "qval's measured speedup vs the AR cell of the same model, dataset, temperature and hardware in the "
        "same run: ratio of sums (Σ tokens / Σ decode time) ÷ AR's, decode only (prefill excluded), over the "
        "(sample, turn) pairs where both ran ≥ 1 verify step; n = those pairs, paired bootstrap CI; undefined "
        "when the AR cell was measured in another run or no pair decoded. Not Spec-Bench's estimator: see "
        "speedup_specbench"
    )

    def deferred(self, samples, baseline=None, cell=None):
        if baseline is None or _other_run(cell):
            return _ready(MetricValue.undefined())
        pairs = _decoded(pair_with_baseline(samples, baseline, ["new_tokens", "decode_s", "target_steps"]))
        return _one(
            ratio_request(
                pairs["new_tokens"], pairs["decode_s"], num_b=pairs["new_tokens_ar"], den_b=pairs["decode_s_ar"]
            )
        )


def specbench_question_rates(frame: pd.DataFrame) -> pd.Series:
    """Spec-Bench's per-question throughput: Σ new tokens over the question's turns ÷ Σ wall time over its turns,
    wall time being the whole generation (prefill + decode). Indexed by sample_id."""
    wall = frame["prefill_s"].fillna(0.0) + frame["decode_s"]
    per_turn = pd.DataFrame({"sample_id": frame["sample_id"], "tokens": frame["new_tokens"], "wall": wall})
    # A question with a turn whose time is missing has no rate (its tokens without their time would inflate it).
    untimed = per_turn.loc[per_turn["wall"].isna(), "sample_id"].unique()
    grouped = per_turn[~per_turn["sample_id"].isin(untimed)].groupby("sample_id", sort=True).sum()
    return grouped["tokens"] / grouped["wall"]


class SpecBenchSpeedup(RatioMetric):
    """Spec-Bench's speedup estimator (``evaluation/speed.py``): the mean over questions of the policy's tokens/s
    divided by the mean over questions of the baseline's tokens/s, where a question's tokens/s is its generated
    tokens summed over turns ÷ its wall time summed over turns, prefill included. qval applies it to its own token
    counts (Spec-Bench re-tokenises the baseline's text instead) on the questions both cells completed."""

    name = "speedup_specbench"
    reference = 1.0
    track = "decode"
    reads = ("sample_id", "turn", "new_tokens", "decode_s", "prefill_s", "target_steps")
    needs_baseline = True
    label = (
        "Spec-Bench's speedup: mean over questions of tokens/s (Σ tokens ÷ Σ wall time over the question's "
        "turns, prefill included) ÷ the same mean for the same-run AR cell; n = questions both completed, "
        "paired bootstrap CI; undefined when the AR cell ran in another run or nothing was decoded"
    )

    def deferred(self, samples, baseline=None, cell=None):
        if baseline is None or _other_run(cell) or len(samples) == 0 or len(baseline) == 0:
            return _ready(MetricValue.undefined())
        if samples["target_steps"].sum() == 0 or baseline["target_steps"].sum() == 0:
            return _ready(MetricValue.undefined())
        own, ar = specbench_question_rates(samples), specbench_question_rates(baseline)
        both = own.index.intersection(ar.index)
        own, ar = own.loc[both].to_numpy(float), ar.loc[both].to_numpy(float)
        ok = np.isfinite(own) & np.isfinite(ar)
        own, ar = own[ok], ar[ok]
        ones = np.ones_like(own)
        return _one(ratio_request(own, ones, num_b=ar, den_b=ones))


def _settings(cell: dict | None) -> dict:
    identity = (cell or {}).get("identity")
    if isinstance(identity, str):
        identity = json.loads(identity)
    return (identity or {}).get("settings") or {}


def _coupled(cell: dict | None) -> bool:
    return _settings(cell).get("sampling") == "coupled"


def declared_lossy(cell: dict | None) -> bool:
    """The cell's policy says it changes the output distribution (``DecodePolicy.family`` is ``LOSSY_FAMILY``)."""
    return (cell or {}).get("family") == LOSSY_FAMILY


class Lossless(RatioMetric):
    name = "lossless"
    track = "decode"
    reads = ("sample_id", "turn", "new_tokens", "decode_s", "output_sha")
    needs_baseline = True
    version = 2  # 2: undefined for a policy declared lossy
    label = (
        "share of (sample, turn) outputs token-identical to the AR cell's; defined at T = 0, and at T > 0 "
        "with coupled sampling (decode.sampling: coupled), where a lossless policy must reproduce AR's tokens; "
        "undefined for a policy declared lossy (family 'lossy'): a share of identical outputs on a few prompts "
        "would read as a proof it is not; its quality is task_accuracy"
    )

    def deferred(self, samples, baseline=None, cell=None):
        if (
            baseline is None
            or declared_lossy(cell)
            or len(samples) == 0
            or (cell is not None and cell["temperature"] > 0 and not _coupled(cell))
        ):
            return _ready(MetricValue.undefined())
        pairs = pair_with_baseline(samples, baseline)
        return _one(mean_request((pairs["output_sha"] == pairs["output_sha_ar"]).to_numpy(float)))


DIST_TOP_TOKENS = 30  # token bins of the distributional test (the rest pooled into one "other" bin)
DIST_RESAMPLES = 2000


def chi_square_statistic(counts_a: np.ndarray, counts_b: np.ndarray) -> np.ndarray:
    """Pearson chi-square homogeneity statistic of 2 × k tables, vectorised over leading axes.

    Equals ``scipy.stats.chi2_contingency(table, correction=False).statistic`` for one table (tested); bins empty
    in both rows contribute nothing.
    """
    total = counts_a + counts_b
    n_a, n_b = counts_a.sum(-1, keepdims=True), counts_b.sum(-1, keepdims=True)
    n = n_a + n_b
    with np.errstate(divide="ignore", invalid="ignore"):
        e_a, e_b = total * n_a / n, total * n_b / n
        terms = np.where(total > 0, (counts_a - e_a) ** 2 / e_a + (counts_b - e_b) ** 2 / e_b, 0.0)
    return terms.sum(-1)


def paired_token_test(
    ids_a: list, ids_b: list, top: int = DIST_TOP_TOKENS, n_resamples: int = DIST_RESAMPLES, seed: int = 0
) -> tuple[float, float] | None:
    """(chi-square statistic, p-value) for "outputs a and b come from the same distribution", paired by prompt.

    Each pair is one prompt decoded once by each side with independent randomness. Under the null (a lossless
    policy), swapping the two outputs of a pair leaves their joint distribution unchanged, so the p-value of a
    label-swap permutation test is exact, although tokens within one output are dependent (which a plain
    chi-square p-value would ignore). The statistic bins tokens into the ``top`` most frequent plus "other".
    """
    pairs = [(np.asarray(a, dtype=np.int64), np.asarray(b, dtype=np.int64)) for a, b in zip(ids_a, ids_b)]
    pairs = [(a, b) for a, b in pairs if a.size or b.size]
    if len(pairs) < 2:
        return None
    every = np.concatenate([np.concatenate([a, b]) for a, b in pairs])
    tokens, freq = np.unique(every, return_counts=True)
    keep = np.sort(tokens[np.argsort(-freq, kind="stable")[:top]])

    def counts(x):
        binned = np.searchsorted(keep, x)
        known = np.isin(x, keep)
        out = np.bincount(binned[known], minlength=keep.size).astype(float)
        return np.append(out, float((~known).sum()))

    A = np.array([counts(a) for a, _ in pairs])  # pairs × bins
    B = np.array([counts(b) for _, b in pairs])
    observed = float(chi_square_statistic(A.sum(0), B.sum(0)))
    rng = np.random.default_rng(seed)
    swap = rng.integers(0, 2, (n_resamples, len(pairs))).astype(float)
    diff = A - B
    perm_a = A.sum(0) - swap @ diff  # swapping pair i moves (a_i − b_i) from side a to side b
    perm_b = A.sum(0) + B.sum(0) - perm_a
    stats = chi_square_statistic(perm_a, perm_b)
    p_value = (1.0 + float((stats >= observed - 1e-9).sum())) / (n_resamples + 1.0)
    return observed, p_value


class DistributionalLossless(Metric):
    """At T > 0 with the standard rejection rule, outputs differ from AR's by design; what must hold is that they
    follow the same distribution. This tests exactly that, per cell."""

    name = "lossless_dist_p"
    track = "decode"
    reads = ("sample_id", "turn", "early_ids")
    needs_baseline = True
    label = (
        "T > 0, rejection sampling: p-value of a paired label-swap permutation test (chi-square statistic on "
        f"the frequencies of output tokens 2–33, top {DIST_TOP_TOKENS} tokens + other) that the policy's outputs "
        "and AR's come from the same distribution; a small p flags a lossy policy; n = prompt pairs; a p-value "
        "has no CI"
    )

    def compute(self, samples, baseline=None, cell=None):
        if (
            baseline is None
            or len(samples) == 0
            or "early_ids" not in samples
            or cell is None
            or cell["temperature"] <= 0
            or _coupled(cell)
            or cell.get("method") == "ar"
        ):
            return MetricValue.undefined()
        pairs = pair_with_baseline(samples, baseline, ["early_ids"])
        ids_a = [list(x) if x is not None else [] for x in pairs["early_ids_ar"]]
        ids_b = [list(x) if x is not None else [] for x in pairs["early_ids"]]
        result = paired_token_test(ids_a, ids_b)
        if result is None:
            return MetricValue.undefined(len(pairs))
        return MetricValue(result[1], None, None, len(pairs))


class ModelledSpeedup(Metric):
    name = "modelled_speedup"
    reference = 1.0
    track = "decode"
    reads = ("sample_id", "turn", "accepted_total", "target_steps", "draft_s", "decode_s")
    needs_baseline = True
    # 2: the label says what the drafting time is for a drafter that drafts in a background thread (pearl)
    version = 2
    label = (
        "MODELLED, not measured: τ / (1 + drafting time per verify step ÷ AR step time), τ = mean_accepted_tokens "
        "(tokens per verify step), i.e. assuming a verify "
        "step over k+1 tokens costs one AR step (the memory-bound regime of batch-1 GPU decoding); drafting time "
        "= the decode time spent in the drafter's hooks on the decoding thread (draft_s), which for a drafter "
        "that drafts in a background thread while the target verifies (pearl) is only the time the target waited "
        "for it: the model is then PEARL's parallel timeline, drafting hidden behind verification but for that "
        "wait; τ, drafting time and the AR step time are measured in this run; paired bootstrap CI over samples"
    )

    def compute(self, samples, baseline=None, cell=None):
        if baseline is None or _other_run(cell) or "draft_s" not in samples:
            return MetricValue.undefined()
        pairs = pair_with_baseline(samples, baseline, ["accepted_total", "target_steps", "draft_s", "decode_s"])
        pairs = pairs[(pairs["target_steps"] > 0) & (pairs["target_steps_ar"] > 0) & pairs["draft_s"].notna()]
        if pairs.empty:
            return MetricValue.undefined()
        steps, accepted = pairs["target_steps"].to_numpy(float), pairs["accepted_total"].to_numpy(float)
        draft, ar_time = pairs["draft_s"].to_numpy(float), pairs["decode_s_ar"].to_numpy(float)
        ar_steps = pairs["target_steps_ar"].to_numpy(float)

        def modelled(idx):  # idx: rows of resampled pair indices
            tau = (accepted[idx].sum(-1) + steps[idx].sum(-1)) / steps[idx].sum(-1)
            draft_share = (draft[idx].sum(-1) / steps[idx].sum(-1)) / (ar_time[idx].sum(-1) / ar_steps[idx].sum(-1))
            return tau / (1.0 + draft_share)

        everyone = np.arange(len(pairs))
        return bootstrap_batched(len(pairs), modelled, float(modelled(everyone)))


MAX_POSITION = 8  # per-position acceptance is reported for draft positions 1..8


class PerPositionAcceptance(RatioMetric):
    """vLLM's per-position rates: rate_i = steps whose draft position i was accepted / steps that drafted.

    Returns a family of values: ``accept_rate@i`` (unconditional, τ = 1 + Σ_i rate_i when every step drafts) and
    ``accept_cond@i`` = rate_i / rate_{i-1} (acceptance at i given i−1 was accepted). CIs resample samples.
    """

    name = "per_position_acceptance"
    track = "decode"
    reads = ("drafts", *(f"accepted_ge_{i}" for i in range(1, MAX_POSITION + 1)))
    always = True  # reports read it for every decode cell (the load flag, the per-position figure)
    multi = True
    label = (
        "per draft position i: unconditional acceptance rate (vLLM) and conditional rate given i−1 accepted; "
        "for a token-tree policy, position i = depth i of the accepted path"
    )

    def deferred(self, samples, baseline=None, cell=None):
        if len(samples) == 0 or "drafts" not in samples or samples["drafts"].sum() == 0:
            return _ready({})
        drafts = samples["drafts"].to_numpy(float)
        accepted = [samples[f"accepted_ge_{i}"].to_numpy(float) for i in range(1, MAX_POSITION + 1)]
        # Positions up to the first that nothing reached (its rates are 0; later ones would only repeat that).
        last = next((i for i, a in enumerate(accepted, 1) if a.sum() == 0), MAX_POSITION)
        columns = [drafts, *accepted[:last]]
        # One resampling for the whole family (column 0 = drafts, column i = accepted at position ≥ i).
        ratios = [(i, 0) for i in range(1, last + 1)] + [(i, i - 1) for i in range(1, last + 1)]

        def family(answers: list[list[MetricValue]]) -> dict[str, MetricValue]:
            values, out = answers[0], {}
            for i in range(1, last + 1):
                out[f"accept_rate@{i}"] = values[i - 1]
                out[f"accept_cond@{i}"] = values[last + i - 1]
            return out

        return Deferred(family, [Resampling(np.stack(columns, axis=1), ratios)])


class TaskAccuracy(Metric):
    """The quality axis: the share of prompts the dataset's checker judged correct (``qval/decode/checkers.py``:
    reasoning-gym's own ``score_answer`` on the ``<answer>`` span, HumanEval's tests in qval's sandbox). The
    verdicts are stored per sample by the worker; this only counts them."""

    name = "task_accuracy"
    track = "decode"
    reads = ("sample_id", "correct")
    always = True  # the speed-vs-quality figure reads it for every cell; undefined where no dataset checks
    label = (
        "task accuracy: share of prompts whose output the dataset's checker judged correct (reasoning-gym: its "
        "own score_answer = 1 on the <answer> span; HumanEval: the problem's tests pass in qval's sandbox); "
        "n = checked prompts (failed decodings excluded), 95% Wilson interval; undefined (not 0) for a dataset "
        "without a checker"
    )

    def compute(self, samples, baseline=None, cell=None):
        if "correct" not in samples:
            return MetricValue.undefined()
        checked = samples[samples["correct"].notna()]
        if checked.empty:
            return MetricValue.undefined()
        # Wilson counts prompts: the turns of one prompt (a checker may judge several) share a label.
        return wilson_proportion(checked["correct"].to_numpy(bool), clusters=checked["sample_id"].to_numpy())


class TokensPerSecond(RatioMetric):
    name = "tokens_per_s"
    track = "decode"
    reads = ("new_tokens", "decode_s")
    label = "decode throughput Σ generated tokens / Σ decode time (hardware-specific; compare within one run only)"

    def deferred(self, samples, baseline=None, cell=None):
        keep = samples["decode_s"] > 0
        return _one(ratio_request(samples.loc[keep, "new_tokens"], samples.loc[keep, "decode_s"]))


class LoadWhileTimed(RatioMetric):
    """How busy the machine was with other work while this cell was timed (``qval/loadwatch.py``): the cores other
    processes used, averaged over all of the cell's timed turns weighted by their duration (one short turn's
    reading is too coarse to judge alone: CPU counters tick every 10 ms). Computed for every decode cell whatever
    the suite lists; reports flag a cell above ``loadwatch.BUSY_OTHER_CORES``, since its timings (and every
    speedup that uses them) measured the competition as much as the policy."""

    name = "load_other_cores"
    track = "decode"
    reads = ("load_other_cores", "prefill_s", "decode_s")
    always = True  # reports read it for every decode cell (the load flag, the per-position figure)
    higher_is_better = False
    label = (
        "cores other processes kept busy on average while this cell's turns were timed (time-weighted; "
        f"flagged above {BUSY_OTHER_CORES}); n = turns with a load record (the openai backend records none)"
    )

    def deferred(self, samples, baseline=None, cell=None):
        if "load_other_cores" not in samples:
            return _ready(MetricValue.undefined())
        wall = samples["prefill_s"].fillna(0.0) + samples["decode_s"]
        keep = samples["load_other_cores"].notna() & wall.notna() & (wall > 0)
        if not keep.any():
            return _ready(MetricValue.undefined())
        cores = samples.loc[keep, "load_other_cores"].to_numpy(float)
        return _one(ratio_request(cores * wall[keep].to_numpy(float), wall[keep].to_numpy(float)))


# What decoding metrics read: per-sample scalars only; the bulky token-id lists stay in the database.
VIEW = MetricView(
    columns={
        **{
            c: c
            for c in (
                "cell_id",
                "sample_id",
                "turn",
                "category",
                "new_tokens",
                "target_steps",
                "prefill_s",
                "decode_s",
                "draft_s",
                "load_other_cores",
                "load_steal",
                "output_sha",
                "correct",
            )
        },
        "early_ids": "output_ids[2:33]",
        "accepted_total": "coalesce(list_sum(accepted), 0)",
        "drafts": ListCount("drafted", 1),
        **{f"accepted_ge_{i}": ListCount("accepted", i) for i in range(1, MAX_POSITION + 1)},
    },
    keep="error IS NULL",
    order="cell_id, sample_id, turn",
)
