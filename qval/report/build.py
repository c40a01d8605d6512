"""Build per-suite leaderboards from the results database and write them as Markdown and HTML."""

from __future__ import annotations

import hashlib
import json
import re
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd

from .. import results as R
from ..errors import UsageError
from ..registry import REGISTRY
from ..stats import MetricValue, bootstrap_batched
from . import cache
from .drilldown import write_pages
from .knobs import knob_headroom
from .model import BASELINE_FAMILY
from .render import SuiteReport, TrackBoard, render_report

TRACK_TITLES = {"qalign": "Q-alignment (scores vs reference Q)", "decode": "Decoding policies (vs same-run AR)"}


_NOT_RECORDED = "not recorded"  # imported results carry no fingerprint of the machine that made them


def _environment(results, suite: str) -> dict[str, str]:
    runs = R.runs(results)
    runs = runs[runs["suite"] == suite]
    env = {"generated": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")}
    if runs.empty:
        return env
    last = runs.iloc[-1]
    fp = json.loads(last["fingerprint"]) if last["fingerprint"] else {}
    packages = fp.get("packages", {})
    env.update(
        {
            "hardware": str(fp.get("hardware") or _NOT_RECORDED),
            "gpu": str(fp.get("gpu") or "none"),
            "python": str(fp.get("python") or _NOT_RECORDED),
            **{name: str(v) for name, v in packages.items() if v},
            "git_sha": f"{fp.get('git_sha') or _NOT_RECORDED}{' (dirty)' if fp.get('git_dirty') else ''}",
            "runs": ", ".join(runs["run_id"].astype(str).tolist()[-5:]),
        }
    )
    return env


def build_report(results, suite: str) -> SuiteReport:
    suites = R.suites(results)
    row = suites[suites["suite"] == suite]
    if row.empty:
        raise UsageError(f"no suite '{suite}' in {results}; known: {', '.join(suites['suite']) or 'none'}")
    config = json.loads(row.iloc[0]["config"])
    tracks = []
    for track in ("qalign", "decode"):
        section = config.get(track)
        if not section:
            continue
        # Families of values (per-position acceptance) feed figures; the tables show single-valued metrics.
        metric_classes = {m: cls for m in section["metrics"] if not (cls := REGISTRY.get("metrics", m)).multi}
        rows = R.leaderboard(results, suite, track)
        by_state = _by_state(results, suite, section["main_metric"]) if track == "qalign" else None
        tracks.append(
            TrackBoard(
                track=track,
                title=TRACK_TITLES[track],
                main_metric=section["main_metric"],
                metrics=list(metric_classes),
                higher_is_better={m: cls.higher_is_better for m, cls in metric_classes.items()},
                labels={m: cls.label for m, cls in metric_classes.items()},
                references={m: cls.reference for m, cls in metric_classes.items() if cls.reference is not None},
                rows=rows,
                samples=R.decode_sample_summary(results, suite) if track == "decode" else None,
                failures=R.failure_reasons(results, suite, track),
                by_state=by_state,
                families=family_aggregates(rows, by_state, section["main_metric"]) if by_state is not None else None,
                knob_headroom=_knob_headroom(results, suite) if track == "decode" else None,
            )
        )
    return SuiteReport(suite, row.iloc[0]["description"] or "", _environment(results, suite), tracks)


def _knob_headroom(results, suite: str) -> pd.DataFrame:
    # Computed only for the sweeps whose cells changed since the last report into the same folder (knobs.py).
    return knob_headroom(results, suite)


def _by_state(results, suite: str, main_metric: str) -> dict[str, pd.Series] | None:
    """Per cell, the main metric's value in each state, when the main metric is a per-state mean (what the
    paired test between neighbours and the family aggregates resample), as the metric stage stored them."""
    from ..qalign.metrics import BY_STATE

    if main_metric not in BY_STATE:
        return None
    units = R.units(results, suite, main_metric)
    return {
        cell: pd.Series(group["value"].to_numpy(float), index=group["unit"].to_numpy(), dtype=float)
        for cell, group in units.groupby("cell_id", sort=False)
    }


def _mean_ci(values: np.ndarray) -> MetricValue:
    """Mean with a bootstrap CI resampling its units (states), all resamples as one array operation."""
    return bootstrap_batched(len(values), lambda idx: values[idx].mean(axis=1), float(values.mean()))


def family_aggregates(rows: pd.DataFrame, by_state: dict[str, pd.Series], main_metric: str) -> pd.DataFrame:
    """Per (dataset, temperature, family): the mean over the family's methods of the main metric, on the states
    all of them scored, with a 95% bootstrap CI resampling states, and the family's best method."""

    out = []
    # A baseline (oracle, random, heuristic) brackets the methods rather than competing as a family: averaging the
    # oracle with random would describe neither, so each baseline is its own row, named "baseline: oracle-q".
    baseline = rows["family"] == BASELINE_FAMILY
    rows = rows.assign(family=rows["family"].where(~baseline, BASELINE_FAMILY + ": " + rows["method"].astype(str)))
    for (dataset, temperature, family), group in rows.groupby(["dataset", "temperature", "family"], dropna=False):
        series = [by_state[c] for c in group["cell_id"] if c in by_state and len(by_state[c])]
        if not series:
            continue
        table = pd.concat(series, axis=1, join="inner")  # states every method of the family has a value for
        best = group.sort_values(main_metric, ascending=False, na_position="last").iloc[0]
        record = {
            "dataset": dataset,
            "temperature": temperature,
            "family": family,
            "methods": len(series),
            "value": None,
            "ci_low": None,
            "ci_high": None,
            "n": len(table),
            "best_method": best["method"],
            "best_value": best[main_metric],
        }
        if len(table):
            per_state = table.mean(axis=1).to_numpy(float)
            ci = _mean_ci(per_state)
            record.update(value=ci.value, ci_low=ci.ci_low, ci_high=ci.ci_high)
        out.append(record)
    return pd.DataFrame(out)


def report_folder(name: str) -> str:
    """A suite's report folder name. Suite names are validated at load time; imported or foreign results may hold
    any name, so a name that had to change gets a hash of the original: "a/b" and "a_b" never share a folder, and
    an over-long name is cut."""
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", name).lstrip(".")[:80] or "suite"
    return safe if safe == name else f"{safe}-{hashlib.sha256(name.encode()).hexdigest()[:8]}"


def write_reports(results, out_dir, suite: str | None = None) -> list[Path]:
    results, out_dir = Path(results), Path(out_dir)
    names = [suite] if suite else R.suites(results)["suite"].tolist()
    written = []
    for name in names:
        target = out_dir / report_folder(name)
        # What the last report into this folder computed is reused where its inputs did not change (cache.py).
        with cache.using(target):
            report = build_report(results, name)
            target.mkdir(parents=True, exist_ok=True)
            md, html = target / "leaderboard.md", target / "index.html"
            markdown, page = render_report(report)
            md.write_text(markdown, encoding="utf-8")
            html.write_text(page, encoding="utf-8")
            # One drill-down page per leaderboard row: the links document.py put on the rows' method names.
            write_pages(results, target, [c for board in report.tracks for c in board.rows.get("cell_id", [])])
        written += [md, html]
    return written
