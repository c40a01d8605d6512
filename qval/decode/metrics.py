"""Decoding metrics: acceptance length (pooled and per-sample), measured speedup vs AR, losslessness."""
from __future__ import annotations

import numpy as np
import pandas as pd

from ..metrics.base import Metric
from ..stats import MetricValue, bootstrap_mean, bootstrap_ratio


def _accepted_and_steps(samples: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    # accepted_total = Σ accepted per row, computed by the database (list_sum) rather than in a Python loop.
    return samples["accepted_total"].to_numpy(float), samples["target_steps"].to_numpy(float)


class PooledAcceptanceLength(Metric):
    name = "acceptance_length"
    track = "decode"
    label = ("pooled acceptance length τ = 1 + Σ accepted / Σ target steps (tokens per verify step, bonus token "
             "included; vLLM's definition); CI resamples samples")

    def compute(self, samples, baseline=None, cell=None):
        accepted, steps = _accepted_and_steps(samples)
        keep = steps > 0
        result = bootstrap_ratio(accepted[keep] + steps[keep], steps[keep])
        return result


class PerSampleAcceptanceLength(Metric):
    name = "acceptance_length_per_sample"
    track = "decode"
    label = "per-sample (macro) acceptance length: mean over samples of each sample's τ (DFlash/BlockPilot's definition)"

    def compute(self, samples, baseline=None, cell=None):
        accepted, steps = _accepted_and_steps(samples)
        keep = steps > 0
        return bootstrap_mean(1.0 + accepted[keep] / steps[keep])


def pair_with_baseline(samples: pd.DataFrame, baseline: pd.DataFrame) -> pd.DataFrame:
    """Rows of this cell and the AR cell for the same (sample, turn), both successful."""
    cols = ["sample_id", "turn", "new_tokens", "decode_s", "output_sha"]
    return samples[cols].merge(baseline[cols], on=["sample_id", "turn"], suffixes=("", "_ar"))


def _other_run(cell: dict | None) -> bool:
    """True when the cell and its AR baseline finished in different runs (e.g. a policy added to a suite later):
    timings from two runs are not comparable, so no speedup is reported."""
    if not cell:
        return False
    own, base = cell.get("run_id"), cell.get("baseline_run_id")
    return isinstance(own, str) and isinstance(base, str) and own != base


class MeasuredSpeedup(Metric):
    name = "speedup"
    track = "decode"
    needs_baseline = True
    label = ("measured speedup vs the AR cell of the same model, dataset, temperature and hardware in the same run: "
             "(Σ tokens/Σ decode time) ÷ AR's, decode only (prefill excluded); paired bootstrap CI over samples; "
             "undefined when the AR cell was measured in another run")

    def compute(self, samples, baseline=None, cell=None):
        if baseline is None or _other_run(cell):
            return MetricValue.undefined()
        pairs = pair_with_baseline(samples, baseline)
        pairs = pairs[(pairs["decode_s"] > 0) & (pairs["decode_s_ar"] > 0)]
        return bootstrap_ratio(pairs["new_tokens"], pairs["decode_s"],
                               num_b=pairs["new_tokens_ar"], den_b=pairs["decode_s_ar"])


class Lossless(Metric):
    name = "lossless"
    track = "decode"
    needs_baseline = True
    label = ("share of (sample, turn) outputs token-identical to the AR cell's; defined at T = 0 only (at T > 0 "
             "outputs legitimately differ unless seeds are coupled)")

    def compute(self, samples, baseline=None, cell=None):
        if baseline is None or len(samples) == 0 or (cell is not None and cell["temperature"] > 0):
            return MetricValue.undefined()
        pairs = pair_with_baseline(samples, baseline)
        return bootstrap_mean((pairs["output_sha"] == pairs["output_sha_ar"]).to_numpy(float))


MAX_POSITION = 8  # per-position acceptance is reported for draft positions 1..8


class PerPositionAcceptance(Metric):
    """vLLM's per-position rates: rate_i = steps whose draft position i was accepted / steps that drafted.

    Returns a family of values: ``accept_rate@i`` (unconditional, τ = 1 + Σ_i rate_i when every step drafts) and
    ``accept_cond@i`` = rate_i / rate_{i-1} (acceptance at i given i−1 was accepted). CIs resample samples.
    """

    name = "per_position_acceptance"
    track = "decode"
    multi = True
    label = "per draft position i: unconditional acceptance rate (vLLM) and conditional rate given i−1 accepted"

    def compute(self, samples, baseline=None, cell=None):
        out = {}
        if len(samples) == 0 or "drafts" not in samples or samples["drafts"].sum() == 0:
            return out
        drafts = samples["drafts"].to_numpy(float)
        previous = drafts
        for i in range(1, MAX_POSITION + 1):
            accepted = samples[f"accepted_ge_{i}"].to_numpy(float)
            out[f"accept_rate@{i}"] = bootstrap_ratio(accepted, drafts)
            out[f"accept_cond@{i}"] = bootstrap_ratio(accepted, previous)
            if accepted.sum() == 0:
                break
            previous = accepted
        return out


class TokensPerSecond(Metric):
    name = "tokens_per_s"
    track = "decode"
    label = "decode throughput Σ generated tokens / Σ decode time (hardware-specific; compare within one run only)"

    def compute(self, samples, baseline=None, cell=None):
        keep = samples["decode_s"] > 0
        return bootstrap_ratio(samples.loc[keep, "new_tokens"], samples.loc[keep, "decode_s"])
