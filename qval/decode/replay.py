"""Replay released per-sample sweeps (BlockPilot / DFlash format) and score size-selection policies.

A sweep is a folder of ``B{size}.json`` files, each ``{sample_id: mean acceptance length τ}`` for one value
of a decoding knob (block size by default).  Because every sample was decoded at every size, any policy that
picks one size per sample can be scored offline by looking the chosen cell up — no GPU needed.

What this module guards against, and why:

* The per-instance **oracle** is an upper bound, not a policy; it is always printed next to the best fixed
  size so a selector's gain can be read as a share of the available headroom.
* A **learned selector** is scored only on held-out folds (k-fold CV): a model that has seen a sample can
  memorise its winner, so in-sample scores overstate it (up to the oracle).  Fold assignments and the
  training ids of every fold are kept on the result so that claim can be audited.
* A released ``selector_predicted_block.json`` is replayed but labelled ``in-sample-selector``: it was fit on
  the same samples, so it is not held-out evidence.
* Metric = per-sample (macro) mean τ, the definition DFlash/BlockPilot report; CIs are the percentile
  bootstrap over samples from ``qval.stats``; gains are paired (same samples resampled together).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from ..stats import MetricValue, bootstrap_mean, bootstrap_mean_ratio, bootstrap_ratios, finite_or_none
from .selector import SelectorRun, _argmax_smaller, cross_validated_selector

SIZE_FILE = re.compile(r"^B(\d+(?:\.\d+)?)\.json$")  # releases use integers; qval also writes B0.6.json
FEATURES_FILE = "features.json"
IN_SAMPLE_SELECTOR_FILE = "selector_predicted_block.json"
META_FILE = "sweep.json"  # qval's own sweeps: knob, metric, feature names and source cells
KNOWN_AUX_FILES = (FEATURES_FILE, IN_SAMPLE_SELECTOR_FILE, META_FILE)
DEFAULT_METRIC = "acceptance length τ (per sample)"
KINDS = ("fixed", "best-fixed", "oracle", "selector", "in-sample-selector")


# --------------------------------------------------------------------------------------------------- data model


@dataclass
class Sweep:
    """One released sweep: τ per (sample, size), optional per-sample features, optional in-sample selector.

    ``table`` keeps NaN where a sample is missing at a size; dropping is deferred to ``evaluate`` because which
    samples are usable depends on which candidate sizes an evaluation uses.
    """

    sizes: list[int]
    table: pd.DataFrame
    features: pd.DataFrame | None = None
    ignored: list[str] = field(default_factory=list)
    knob: str = "block_size"
    in_sample_selector: pd.Series | None = None
    path: str | None = None
    metric: str = DEFAULT_METRIC


@dataclass
class ReplayRow:
    """One policy's score.  ``gain_vs_best_fixed`` is mean(policy)/mean(best fixed) − 1 on the paired samples."""

    policy: str
    kind: str
    value: MetricValue
    size: int | None
    gain_vs_best_fixed: float | None
    gain_ci: MetricValue | None = None
    in_candidates: bool | None = None
    note: str | None = None


@dataclass
class ReplayResult:
    """All rows of one evaluation plus the per-sample values they were computed from."""

    knob: str
    metric: str
    candidates: list[int]
    sizes: list[int]
    rows: list[ReplayRow]
    per_sample: pd.DataFrame  # sample id x policy -> τ actually obtained (NaN where unscored)
    oracle_choice: pd.Series  # sample id -> per-sample argmax candidate (ties -> smaller)
    best_fixed_size: int
    oracle_minus_best_fixed: MetricValue  # paired absolute gain in τ
    n_samples: int
    dropped: list[str]
    ignored: list[str]
    notes: list[str]
    selector: SelectorRun | None
    seed: int

    def row(self, kind: str) -> ReplayRow:
        """The first row of a kind (handy for best-fixed / oracle / selector, which appear once)."""
        for r in self.rows:
            if r.kind == kind:
                return r
        raise KeyError(f"no row of kind {kind!r}")

    def fixed(self, size: int) -> ReplayRow:
        for r in self.rows:
            if r.kind == "fixed" and r.size == size:
                return r
        raise KeyError(f"no fixed row for size {size}")


# --------------------------------------------------------------------------------------------------- parsing


def parse_candidates(text: str) -> list[int]:
    """Parse "14-18", "14,16,18" or mixes like "4,14-18" into sorted unique ints; reject anything else loudly."""
    if not isinstance(text, str) or not text.strip():
        raise ValueError(f"candidates must be a non-empty string like '14-18' or '14,16,18', got {text!r}")
    out: set[int] = set()
    for part in text.split(","):
        part = part.strip()
        m_range = re.fullmatch(r"(\d+)\s*-\s*(\d+)", part)
        if m_range:
            lo, hi = int(m_range.group(1)), int(m_range.group(2))
            if lo > hi:
                raise ValueError(f"candidate range {part!r} is descending in {text!r}")
            out.update(range(lo, hi + 1))
        elif re.fullmatch(r"\d+(?:\.\d+)?", part):
            out.add(size_value(part))
        else:
            raise ValueError(f"cannot parse candidate {part!r} in {text!r}; use '14-18' or '14,16,18'")
    return sorted(out)


def size_value(x):
    """A knob value as it keys tables: an int when integral (block sizes, draft lengths), else a float."""
    x = float(x)
    return int(x) if x.is_integer() else x


def safe_component(text: str) -> str:
    """A file-name-safe version of a label (model, dataset, policy…) for folders qval writes."""
    return re.sub(r"[^A-Za-z0-9_.=,-]", "_", str(text)).lstrip(".") or "_"


def _format_candidates(cands: Sequence[int]) -> str:
    """Inverse of parse_candidates for labels: contiguous runs print as a range."""
    cands = list(cands)
    if len(cands) > 1 and all(isinstance(c, int) for c in cands) and cands == list(range(cands[0], cands[-1] + 1)):
        return f"{cands[0]}-{cands[-1]}"
    return ",".join(str(c) for c in cands)


# --------------------------------------------------------------------------------------------------- loading


def _read_json(path: Path):
    try:
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path.name}: malformed JSON ({exc})") from exc


def _number(x, fname: str, key: str) -> float:
    """A finite real number or a ValueError naming the file and sample (bools are not numbers here)."""
    if isinstance(x, bool) or not isinstance(x, (int, float)) or not math.isfinite(x):
        raise ValueError(f"{fname}: sample {key!r} has non-numeric or non-finite value {x!r}")
    return float(x)


def _read_mapping(path: Path) -> dict:
    data = _read_json(path)
    if not isinstance(data, dict):
        raise ValueError(f"{path.name}: expected a JSON object {{sample: value}}, got {type(data).__name__}")
    return data


def _read_size_file(path: Path) -> pd.Series:
    data = _read_mapping(path)
    return pd.Series({str(k): _number(v, path.name, k) for k, v in data.items()}, dtype=float)


def _read_features(path: Path) -> pd.DataFrame:
    data = _read_mapping(path)
    rows, width = {}, None
    for k, vec in data.items():
        if not isinstance(vec, list) or not vec:
            raise ValueError(f"{path.name}: sample {k!r} must map to a non-empty list of numbers")
        if width is not None and len(vec) != width:
            raise ValueError(f"{path.name}: sample {k!r} has {len(vec)} features, expected {width}")
        width = len(vec)
        rows[str(k)] = [_number(v, path.name, k) for v in vec]
    df = pd.DataFrame.from_dict(rows, orient="index", columns=[f"f{i}" for i in range(width or 0)])
    return df.loc[_sorted_ids(df.index)]


def _read_in_sample_selector(path: Path) -> pd.Series:
    data = _read_mapping(path)
    picks = {}
    for k, v in data.items():
        if isinstance(v, bool) or not (isinstance(v, int) or (isinstance(v, float) and float(v).is_integer())):
            raise ValueError(f"{path.name}: sample {k!r} must map to an integer size, got {v!r}")
        picks[str(k)] = int(v)
    return pd.Series(picks, dtype=int)


def _sorted_ids(ids) -> list[str]:
    """Numeric ids sort numerically ("2" before "10"); anything else sorts as text."""
    ids = [str(i) for i in ids]
    return sorted(ids, key=int) if all(i.isdigit() for i in ids) else sorted(ids)


def load_sweep(path, knob: str = "block_size") -> Sweep:
    """Read a sweep folder.  Unrecognised files are listed in ``ignored`` rather than silently skipped."""
    folder = Path(path)
    if not folder.is_dir():
        raise ValueError(f"{folder}: not a sweep folder")
    columns: dict[int, pd.Series] = {}
    ignored, features, picks, meta = [], None, None, {}
    for f in sorted(p for p in folder.iterdir() if p.is_file()):
        m = SIZE_FILE.match(f.name)
        if m:
            size = size_value(m.group(1))
            if size in columns:
                raise ValueError(f"{f.name}: size {size} appears in more than one file")
            columns[size] = _read_size_file(f)
        elif f.name == FEATURES_FILE:
            features = _read_features(f)
        elif f.name == IN_SAMPLE_SELECTOR_FILE:
            picks = _read_in_sample_selector(f)
        elif f.name == META_FILE:
            meta = _read_mapping(f)
        else:
            ignored.append(f.name)
    if not columns:
        raise ValueError(f"{folder}: no B<size>.json files found")
    sizes = sorted(columns)
    table = pd.DataFrame({s: columns[s] for s in sizes})
    table = table.loc[_sorted_ids(table.index), sizes]
    names = meta.get("features")
    if features is not None and isinstance(names, list) and len(names) == features.shape[1]:
        features.columns = [str(n) for n in names]
    return Sweep(
        sizes=sizes,
        table=table,
        features=features,
        ignored=ignored,
        knob=str(meta.get("knob") or knob),
        in_sample_selector=picks,
        path=str(folder),
        metric=str(meta.get("metric") or DEFAULT_METRIC),
    )


def write_sweep(path, table: pd.DataFrame, features: pd.DataFrame | None = None, meta: dict | None = None) -> None:
    """Write qval's own per-sample results in the release format so they replay through ``load_sweep``.

    NaN cells are omitted (the sample is simply missing at that size), mirroring how releases encode gaps.
    Feature column names are not part of the release format; they come back as f0, f1, ... unless ``meta`` (written
    to sweep.json: knob, metric, feature names, where the numbers came from) names them.
    """
    folder = Path(path)
    folder.mkdir(parents=True, exist_ok=True)
    for size in table.columns:
        if (
            isinstance(size, bool)
            or not isinstance(size, (int, float, np.integer, np.floating))
            or size < 0
            or not math.isfinite(size)
        ):
            raise ValueError(f"table column {size!r} is not a non-negative number")
        col = table[size].dropna()
        payload = {str(k): float(v) for k, v in col.items()}
        _write_json(folder / f"B{size_value(size)}.json", payload)
    if features is not None:
        if features.isna().any().any():
            raise ValueError(f"{FEATURES_FILE}: features contain NaN, which the format cannot hold")
        payload = {str(k): [float(v) for v in row] for k, row in zip(features.index, features.to_numpy())}
        _write_json(folder / FEATURES_FILE, payload)
    if meta is not None:
        _write_json(folder / META_FILE, meta)


def _write_json(path: Path, payload) -> None:
    with open(path, "w", encoding="utf-8") as fh:
        json.dump(payload, fh, allow_nan=False)


# --------------------------------------------------------------------------------------------------- evaluation


def _resolve_candidates(sweep: Sweep, candidates: Sequence[int] | None) -> list[int]:
    if candidates is None:
        return list(sweep.sizes)
    cands = sorted(set(size_value(c) for c in candidates))
    missing = [c for c in cands if c not in sweep.sizes]
    if not cands or missing:
        raise ValueError(f"candidates {missing or cands} not among swept sizes {sweep.sizes}")
    return cands


def _lookup(table: pd.DataFrame, picks: pd.Series) -> pd.Series:
    """τ each sample gets at its picked size; NaN where the sample or size is not in the table."""
    out = np.full(len(table), np.nan)
    rows = table.index.get_indexer(picks.index)
    cols = pd.Index(table.columns).get_indexer(pd.Index(picks.to_numpy(), dtype=object))
    found = (rows >= 0) & (cols >= 0)
    out[rows[found]] = table.to_numpy(float)[rows[found], cols[found]]
    return pd.Series(out, index=table.index, dtype=float)


def _paired_gain(values: pd.Series, baseline: pd.Series, seed: int) -> MetricValue:
    """Relative gain mean(a)/mean(b) − 1 over samples scored by both, CI by resampling samples jointly."""
    mask = values.notna() & baseline.notna()
    a, b = values[mask].to_numpy(float), baseline[mask].to_numpy(float)
    if a.size == 0 or b.mean() == 0:
        return MetricValue.undefined(int(a.size))
    ratio = bootstrap_mean_ratio(a, b, a.mean() / b.mean(), seed=seed)  # mean(a)/mean(b) = Σa/Σb on a resample
    if ratio.value is None:
        return ratio
    return MetricValue(
        ratio.value - 1,
        None if ratio.ci_low is None else ratio.ci_low - 1,
        None if ratio.ci_high is None else ratio.ci_high - 1,
        ratio.n,
    )


def _make_row(
    policy: str, kind: str, values: pd.Series, baseline: pd.Series, seed: int, size=None, in_candidates=None, note=None
) -> ReplayRow:
    scored = values.dropna().to_numpy(float)
    value = bootstrap_mean(scored, seed=seed) if scored.size else MetricValue.undefined()
    gain = _paired_gain(values, baseline, seed)
    return _row(policy, kind, value, gain, size, in_candidates, note)


def _row(policy, kind, value: MetricValue, gain: MetricValue, size, in_candidates, note) -> ReplayRow:
    return ReplayRow(
        policy=policy,
        kind=kind,
        value=value,
        size=size,
        gain_vs_best_fixed=gain.value,
        gain_ci=gain,
        in_candidates=in_candidates,
        note=note,
    )


def _rows_at_once(specs: list[tuple], baseline: pd.Series, gap: np.ndarray, seed: int):
    """The rows of ``specs`` (policy, kind, values, size, in_candidates, note) and the oracle's absolute gain, with
    the same statistics as ``_make_row`` and a ``bootstrap_batched`` mean of ``gap``: every row whose values cover
    all of the baseline's samples shares one resampling and one product of its counts with all their columns (in
    float64). Per row, that product read the whole resample-count matrix twice, the bulk of a report's knob headroom
    on million-row sweeps. Rows with missing values are computed one by one as before."""
    base = baseline.to_numpy(float)
    whole = [i for i, spec in enumerate(specs) if spec[2].notna().all()]
    columns, ratios = [np.ones_like(base), base, gap], [(2, 0)]  # gap's mean: bootstrap_batched's draws, as counts
    for i in whole:
        k = len(columns)
        columns.append(specs[i][2].to_numpy(float))
        ratios += [(k, 0), (k, 1)]  # mean of the row, and its paired ratio over the best fixed size
    stats = bootstrap_ratios(np.stack(columns, axis=1), ratios, seed=seed, dtype=np.float64)
    rows: list[ReplayRow | None] = [None] * len(specs)
    for j, i in enumerate(whole):
        policy, kind, _, size, in_candidates, note = specs[i]
        a, ci = columns[3 + j], stats[2 + 2 * j]
        if a.size == 0 or base.mean() == 0:
            gain = MetricValue.undefined(int(a.size))
        else:  # the value as _paired_gain has it: mean(a)/mean(b), which a ratio of sums may differ from in an ulp
            gain = MetricValue(
                a.mean() / base.mean() - 1,
                None if ci.ci_low is None else ci.ci_low - 1,
                None if ci.ci_high is None else ci.ci_high - 1,
                int(a.size),
            )
        rows[i] = _row(policy, kind, stats[1 + 2 * j], gain, size, in_candidates, note)
    for i, spec in enumerate(specs):
        if rows[i] is None:
            policy, kind, values, size, in_candidates, note = spec
            rows[i] = _make_row(policy, kind, values, baseline, seed, size, in_candidates, note)
    return rows, stats[0]


def evaluate(
    sweep: Sweep, candidates: list[int] | None = None, folds: int = 5, seed: int = 0, l2: float = 1.0
) -> ReplayResult:
    """Score fixed sizes, best fixed, oracle, and (when available) held-out and in-sample selectors.

    Samples missing at any candidate size are dropped (and counted) so every candidate-based row is paired on
    the same samples; fixed rows outside the candidates use whichever of those samples they have.
    """
    cands = _resolve_candidates(sweep, candidates)
    complete = sweep.table[cands].notna().all(axis=1)
    table = sweep.table[complete]
    dropped = list(sweep.table.index[~complete])
    if table.empty:
        raise ValueError(f"no sample has values at every candidate size {cands}")
    sym, cand_label = ("B" if sweep.knob == "block_size" else sweep.knob), _format_candidates(cands)
    notes = _base_notes(sweep, cands, dropped)

    means = table[cands].mean()
    best = size_value(means.index[int(np.argmax(means.to_numpy()))])  # ties → smaller size (first max)
    baseline = table[best]
    cand_vals = table[cands].to_numpy(float)
    choice_idx = _argmax_smaller(cand_vals)
    oracle_choice = pd.Series([cands[i] for i in choice_idx], index=table.index, dtype=object)
    oracle = pd.Series(cand_vals[np.arange(len(table)), choice_idx], index=table.index)

    specs = [(f"fixed {sym}={s}", "fixed", table[s], s, s in cands, None) for s in sweep.sizes]
    specs.append(
        (
            f"best fixed over {cand_label}",
            "best-fixed",
            baseline,
            best,
            True,
            "size chosen on these same samples (in-sample choice of one size)",
        )
    )
    note = "per-sample max over candidates (ties → smaller); an upper bound, not a policy"
    specs.append((f"oracle over {cand_label}", "oracle", oracle, None, None, note))

    selector = None
    if sweep.features is not None:
        selector = cross_validated_selector(table[cands], sweep.features, folds, seed, l2)
        vals = _lookup(table, selector.predictions)
        n_missing = int(vals.isna().sum())
        note = (
            f"held-out: {selector.n_folds}-fold CV (seed {seed}), logistic regression (L2={l2}); each sample "
            f"scored by a model that never saw it; CI covers sample resampling only, not retraining"
        )
        if n_missing:
            note += f"; {n_missing} samples without features not scored"
        specs.append((f"selector (logreg, {selector.n_folds}-fold CV)", "selector", vals, None, None, note))

    if sweep.in_sample_selector is not None:
        vals = _lookup(table, sweep.in_sample_selector)
        note = "IN-SAMPLE: fit on these same samples, not held-out evidence"
        specs.append((f"released selector ({IN_SAMPLE_SELECTOR_FILE})", "in-sample-selector", vals, None, None, note))

    gap = (oracle - baseline).to_numpy(float)
    rows, gap_mean = _rows_at_once(specs, baseline, gap, seed)
    abs_gain = MetricValue(finite_or_none(gap.mean()), gap_mean.ci_low, gap_mean.ci_high, gap.size)
    per_sample = {row.policy: spec[2] for row, spec in zip(rows, specs)}
    return ReplayResult(
        knob=sweep.knob,
        metric=sweep.metric,
        candidates=cands,
        sizes=list(sweep.sizes),
        rows=rows,
        per_sample=pd.DataFrame(per_sample),
        oracle_choice=oracle_choice,
        best_fixed_size=best,
        oracle_minus_best_fixed=abs_gain,
        n_samples=len(table),
        dropped=dropped,
        ignored=list(sweep.ignored),
        notes=notes,
        selector=selector,
        seed=seed,
    )


def _base_notes(sweep: Sweep, cands: list[int], dropped: list[str]) -> list[str]:
    notes = []
    if dropped:
        notes.append(f"dropped {len(dropped)} sample(s) missing at some candidate size {cands}")
    if sweep.ignored:
        notes.append(f"ignored files: {', '.join(sweep.ignored)}")
    return notes


def headroom(result: ReplayResult) -> dict:
    """How much a perfect per-sample choice could add over the best fixed size.

    The share counts samples where the best fixed size is strictly below the per-sample max, i.e. where a
    selector could actually gain; samples where it merely ties the max are not counted.
    """
    bf, orc = result.row("best-fixed"), result.row("oracle")
    a = result.per_sample[orc.policy].to_numpy(float)
    b = result.per_sample[bf.policy].to_numpy(float)
    gain, abs_gain = orc.gain_ci, result.oracle_minus_best_fixed
    return {
        "best_fixed": bf.value.value,
        "best_fixed_size": bf.size,
        "oracle": orc.value.value,
        "absolute_gain": abs_gain.value,
        "absolute_gain_ci": [abs_gain.ci_low, abs_gain.ci_high],
        "relative_gain": gain.value if gain else None,
        "relative_gain_ci": [gain.ci_low, gain.ci_high] if gain else [None, None],
        "share_of_samples_where_best_fixed_is_not_argmax": float(np.mean(b < a)) if a.size else None,
        "n": int(a.size),
    }


# --------------------------------------------------------------------------------------------------- output


def _clean(obj):
    """Recursively turn numpy scalars into Python ones and NaN/inf into None so json.dumps never emits NaN."""
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        return float(obj) if math.isfinite(obj) else None
    return obj


def _row_json(r: ReplayRow) -> dict:
    g = r.gain_ci or MetricValue.undefined()
    return {
        "policy": r.policy,
        "kind": r.kind,
        "size": r.size,
        "in_candidates": r.in_candidates,
        "value": r.value.value,
        "ci_low": r.value.ci_low,
        "ci_high": r.value.ci_high,
        "n": r.value.n,
        "gain_vs_best_fixed": r.gain_vs_best_fixed,
        "gain_ci_low": g.ci_low,
        "gain_ci_high": g.ci_high,
        "note": r.note,
    }


def to_json(result: ReplayResult) -> dict:
    """JSON-serialisable summary (undefined → None, never NaN), including the fold map for auditing."""
    sel = result.selector
    out = {
        "knob": result.knob,
        "metric": result.metric,
        "sizes": result.sizes,
        "candidates": result.candidates,
        "n_samples": result.n_samples,
        "n_dropped": len(result.dropped),
        "dropped": result.dropped,
        "ignored_files": result.ignored,
        "notes": result.notes,
        "seed": result.seed,
        "rows": [_row_json(r) for r in result.rows],
        "headroom": headroom(result),
        "selector": None
        if sel is None
        else {
            "n_folds": sel.n_folds,
            "seed": sel.seed,
            "l2": sel.l2,
            "fold_of_sample": sel.fold.to_dict(),
            "predicted_size": sel.predictions.to_dict(),
        },
    }
    return _clean(out)


def _fmt(x, spec=".3f") -> str:
    return "—" if x is None else format(x, spec)


def _md_value(v: MetricValue) -> str:
    ci = f" [{_fmt(v.ci_low)}, {_fmt(v.ci_high)}]" if v.ci_low is not None else ""
    return f"{_fmt(v.value)}{ci} ({v.n})"


def _md_gain(r: ReplayRow) -> str:
    if r.gain_vs_best_fixed is None:
        return "—"
    g = r.gain_ci
    ci = f" [{g.ci_low:+.1%}, {g.ci_high:+.1%}]" if g is not None and g.ci_low is not None else ""
    return f"{r.gain_vs_best_fixed:+.1%}{ci}"


def _metric_symbol(metric: str) -> str:
    return "τ" if metric == DEFAULT_METRIC else metric.split(" (")[0]


def to_markdown(result: ReplayResult) -> str:
    """A table: policy | kind | metric [CI] (n) | size | gain vs best fixed, then the caveats that go with it."""
    lines = [
        f"Replay of {result.knob}: candidates {_format_candidates(result.candidates)}, "
        f"{result.n_samples} samples; metric: {result.metric}",
        "",
        f"| policy | kind | {_metric_symbol(result.metric)} [CI] (n) | {result.knob} | gain vs best fixed |",
        "|---|---|---|---|---|",
    ]
    for r in result.rows:
        name = r.policy + (" †" if r.kind == "fixed" and not r.in_candidates else "")
        lines.append(
            f"| {name} | {r.kind} | {_md_value(r.value)} | {'—' if r.size is None else r.size} | {_md_gain(r)} |"
        )
    dagger = ["† not a candidate size"] if any(r.in_candidates is False for r in result.rows) else []
    notes = dagger + [f"{r.policy}: {r.note}" for r in result.rows if r.note] + result.notes
    return "\n".join(lines + [""] + [f"- {n}" for n in notes]) + "\n"
