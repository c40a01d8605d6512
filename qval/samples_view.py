"""A cell's samples as a researcher reads them: per Q-alignment state its candidates, reference Q, scores, the
rank disagreement between scores and reference, and the model's requests; per decoding turn its text and
acceptance. Shared by `qval samples` (text and JSON) and the report's drill-down pages (qval/report/drilldown.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import numpy as np
import pandas as pd


def plain(value: Any) -> Any:
    """A DataFrame value as JSON-ready Python: NaN → None, arrays → lists, numpy scalars → Python numbers."""
    if isinstance(value, np.ndarray):
        value = value.tolist()
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if value is pd.NA or value is pd.NaT:
        return None
    return value


def disagreement(scores: list[float | None], ref_q: list[float | None]) -> float | None:
    """Share of candidate pairs with different reference Q that the scores order the other way (a tie in the scores
    counts half; a candidate without a score is left out). 0: the scores rank as the reference does; 1: reversed.
    None when no pair is left to compare."""
    pairs = [(s, q) for s, q in zip(scores, ref_q) if s is not None and q is not None]
    bad, total = 0.0, 0
    for i in range(len(pairs)):
        for j in range(i + 1, len(pairs)):
            (si, qi), (sj, qj) = pairs[i], pairs[j]
            if qi == qj:
                continue
            total += 1
            if si == sj:
                bad += 0.5
            elif (si - sj) * (qi - qj) < 0:
                bad += 1
    return bad / total if total else None


@dataclass
class State:
    """One Q-alignment evaluation point."""

    sample_id: str
    state_key: str
    candidates: list[dict]  # candidate, action, ref_q, score, error, is_behaviour
    requests: list[dict] = field(default_factory=list)
    disagreement: float | None = None
    failed: int = 0  # candidates without a score
    # The points scored in one call with this one, in order (None: scored alone). The batch's requests sit on the
    # first of them: ``requests`` is then the batch's, and on the other points it is empty.
    batch: list[str] | None = None

    @property
    def holds_batch(self) -> bool:
        """This point's requests are its batch's (several points), not its own."""
        return bool(self.batch) and self.batch[0] == self.sample_id

    @property
    def in_batch_of(self) -> str | None:
        """The point holding the requests of the batch this one was scored in, when that is another point."""
        return self.batch[0] if self.batch and self.batch[0] != self.sample_id else None


_CANDIDATE_FIELDS = ("candidate", "action", "ref_q", "score", "error", "is_behaviour")


def states(frame: pd.DataFrame) -> list[State]:
    """The rows of a Q-alignment cell (results.cell_samples) grouped per point, in order."""
    # Each point's rows by position, read from whole columns: a groupby's frame and to_dict per point were nearly all
    # of a page's rendering. Points in order of their first row, as groupby(sort=False); a row without a sample id
    # belongs to no point, as groupby drops it.
    rows_of: dict[Any, list[int]] = {}
    for i, sample_id in enumerate(frame["sample_id"].tolist()):
        if not _missing(sample_id):
            rows_of.setdefault(sample_id, []).append(i)
    if not rows_of:
        return []
    candidates = [dict(zip(_CANDIDATE_FIELDS, row)) for row in zip(*(_column(frame, k) for k in _CANDIDATE_FIELDS))]
    state_keys = frame["state_key"].tolist()
    stored, batches = _column(frame, "requests", raw=True), _column(frame, "batch", raw=True)
    out = []
    for sample_id, rows in rows_of.items():
        mine = [candidates[i] for i in rows]
        requests = [plain(q) for i in rows if isinstance(stored[i], list | np.ndarray) for q in stored[i]]
        batch = next((plain(batches[i]) for i in rows if isinstance(batches[i], list | np.ndarray)), None)
        out.append(
            State(
                str(sample_id),
                str(state_keys[rows[0]]),
                mine,
                requests,
                disagreement([c["score"] for c in mine], [c["ref_q"] for c in mine]),
                sum(c["score"] is None for c in mine),
                None if batch is None else [str(b) for b in batch],
            )
        )
    return out


@dataclass
class Turn:
    """One decoding turn: its text split into segments (``accepted``: drafted and accepted) and its acceptance."""

    sample_id: str
    turn: int
    category: str | None
    new_tokens: int | None
    target_steps: int | None
    drafted: int
    accepted: int
    segments: list[tuple[str, bool]]
    highlighted: bool  # per-step spans were stored and applied
    capped: bool
    error: str | None
    drafted_steps: list[int]  # per target step: draft tokens proposed
    accepted_steps: list[int]  # and accepted

    @property
    def steps(self) -> list[tuple[int, int]]:
        """(drafted, accepted) per target step."""
        return list(zip(self.drafted_steps, self.accepted_steps))

    @property
    def steps_text(self) -> str:
        """Accepted/drafted per target step, one string (a page renders it as one escaped text, not per step); empty
        where no step is listed."""
        return " ".join(map(_step_text, self.drafted_steps, self.accepted_steps))

    @property
    def tau(self) -> float | None:
        """Tokens per target step: 1 + accepted drafts per step."""
        return 1 + self.accepted / self.target_steps if self.target_steps else None


@lru_cache(maxsize=4096)
def _step_text(drafted: int, accepted: int) -> str:
    # Steps repeat a few (accepted, drafted) pairs: a page's some 20,000 steps format a handful of strings.
    return f"{accepted}/{drafted}"


def turns(frame: pd.DataFrame) -> list[Turn]:
    """The rows of a decoding cell (results.cell_samples) as turns, in order."""
    out = []
    # Column by column (a list per column, zipped), not a dict per row: to_dict("records") and a `plain` per value
    # were a third of a page's rendering.
    rows = zip(
        *(_column(frame, k, raw=True) for k in ("sample_id", "turn", "drafted", "accepted", "accepted_chars")),
        *(
            _column(frame, k)
            for k in ("category", "new_tokens", "target_steps", "output_text", "output_capped", "error")
        ),
    )
    for sample_id, turn, drafted, accepted, spans, category, new_tokens, target_steps, text, capped, error in rows:
        drafted, accepted = _ints(drafted), _ints(accepted)
        spans = None if _missing(spans) else _ints(spans)
        out.append(
            Turn(
                str(sample_id),
                int(turn),
                category,
                new_tokens,
                target_steps,
                int(sum(drafted)),
                int(sum(accepted)),
                split(text or "", spans),
                spans is not None,
                bool(capped),
                error,
                drafted,
                accepted,
            )
        )
    return out


# Values `plain` returns unchanged: a column's values of these types need no call each.
_PLAIN_TYPES = frozenset({str, int, bool, type(None)})


def _column(frame: pd.DataFrame, name: str, raw: bool = False) -> list:
    """A column's values, each as ``plain`` gives it (``raw``: as stored), in one list; None per row where the frame
    has no such column (a table of an older qval), as a row's ``dict.get`` gave."""
    if name not in frame:
        return [None] * len(frame)
    values = frame[name].tolist()
    return values if raw else [v if type(v) in _PLAIN_TYPES else plain(v) for v in values]


def _missing(value: Any) -> bool:
    return value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value))


def _ints(value: Any) -> list[int]:
    """A stored list of counts as Python ints, in one conversion (per-element `plain` dominated a report's pages)."""
    if isinstance(value, np.ndarray) and value.dtype.kind == "i":  # as DuckDB gives a list column: no copy first
        return value.tolist()
    return [] if _missing(value) else np.asarray(value, dtype=np.int64).tolist()


def split(text: str, spans: list[int] | None) -> list[tuple[str, bool]]:
    """The text as (piece, accepted) segments from flattened [start, end) spans (within the stored, maybe capped,
    text)."""
    if not spans:
        return [(text, False)] if text else []
    out, pos = [], 0
    for start, end in zip(spans[0::2], spans[1::2]):
        start, end = min(max(start, pos), len(text)), min(end, len(text))
        if start > pos:
            out.append((text[pos:start], False))
        if end > start:
            out.append((text[start:end], True))
        pos = max(pos, end)
    if pos < len(text):
        out.append((text[pos:], False))
    return out


def _safe(text: Any) -> str:
    """Model text for a terminal: control characters (an ANSI escape in a reply) shown escaped, never obeyed."""
    return "".join(ch if ch in "\n\t" or ch.isprintable() else repr(ch)[1:-1] for ch in str(text))


def _num(value: Any) -> str:
    return "–" if value is None else f"{value:.4g}"


def _field(value: Any) -> str:
    """A value for a padded text column: a missing one (an imported point without its action) as "–"; a format
    spec on None would raise."""
    return "–" if value is None else str(value)


def text(frame: pd.DataFrame) -> str:
    """`qval samples` as text."""
    info = frame.attrs["cell"]
    shown = frame["sample_id"].nunique() if len(frame) else 0
    total = plain(info.get("n_samples")) or 0
    lines = [
        _safe(
            f"cell {info['cell_id']}  {info['track']}  {info['model'] or '–'} / {info['method']}  "
            f"{info['dataset_label']}  T={info['temperature']:g}  seed {info['seed']}  ({info['status']})"
        ),
        f"{shown} of {total} sample(s) shown",
    ]
    prepared = prepare_requests(frame)
    if prepared:
        lines.append(f"── requests made while preparing the cell (once, before any point): {len(prepared)}")
        lines += _request_lines(prepared, "   ")
    kind = shape(info["track"])
    if kind == "turns":
        for t in turns(frame):
            head = f"── sample {t.sample_id} turn {t.turn} [{t.category or '–'}]"
            if t.error:
                lines += [_safe(head), _safe(f"   error: {t.error}")]
                continue
            lines.append(
                _safe(
                    f"{head}  {t.new_tokens} tokens in {t.target_steps} steps, τ={_num(t.tau)}, "
                    f"accepted {t.accepted}/{t.drafted} drafted" + ("  (text capped)" if t.capped else "")
                )
            )
            lines += ["   " + _safe(line) for line in "".join(s for s, _ in t.segments).splitlines() or [""]]
        return "\n".join(lines)
    if kind != "states":  # one row per sample: per-state values of imported QVal summaries, or another track's rows
        for r in frame.to_dict("records"):
            fields = "  ".join(f"{k} {_num(plain(v)) if isinstance(v, float) else plain(v)}" for k, v in r.items())
            lines.append(_safe(f"── sample {r['sample_id']}  " + fields.removeprefix(f"sample_id {r['sample_id']}  ")))
        return "\n".join(lines)
    for s in states(frame):
        lines.append(_safe(f"── sample {s.sample_id}  state {s.state_key}  rank disagreement {_num(s.disagreement)}"))
        for c in s.candidates:
            mark = "*" if c["is_behaviour"] else " "
            candidate, action = _field(c["candidate"]), _field(c["action"])
            row = f"  {mark}{candidate:>3}  {action:<14} ref_q {_num(c['ref_q']):>8}  score {_num(c['score']):>8}"
            lines.append(_safe(row + (f"  error: {c['error']}" if c["error"] else "")))
        if s.holds_batch and s.batch:
            lines.append(
                _safe(
                    f"   requests of the batch of points {', '.join(s.batch)} (scored in one call: not told apart "
                    f"per point): {len(s.requests)}"
                )
            )
        elif s.in_batch_of:
            lines.append(_safe(f"   requests: in the batch of point {s.in_batch_of}"))
        lines += _request_lines(s.requests, "   ")
    return "\n".join(lines)


def _request_lines(requests: list[dict], indent: str) -> list[str]:
    lines = []
    for i, q in enumerate(requests, 1):
        flags = ", ".join(f for f, on in (("memo", q["memo"]), ("capped", q["capped"])) if on)
        lines.append(_safe(f"{indent}request {i}: {q['kind']}" + (f" ({flags})" if flags else "")))
        lines += [f"{indent}  prompt │ " + _safe(line) for line in (q["prompt"] or "").splitlines() or [""]]
        lines += [f"{indent}  reply  │ " + _safe(line) for line in (q["reply"] or "").splitlines() or [""]]
        if q["parsed"] is not None or q["parse_error"] is not None:
            lines.append(
                _safe(
                    f"{indent}  parsed │ {q['parsed'] or '–'}"
                    + (f"  error: {q['parse_error']}" if q["parse_error"] else "")
                )
            )
    return lines


def shape(track: str) -> str:
    """How a track's rows are laid out for reading (qval.tracks.SampleTable.shape): "turns", "states" or "rows"."""
    from .tracks import sample_tables

    spec = sample_tables().get(track)
    return spec.shape if spec is not None else "rows"


def prepare_requests(frame: pd.DataFrame) -> list[dict]:
    """The requests the scorer sent while preparing the cell (results.cell_samples), JSON-ready."""
    return [plain(q) for q in frame.attrs.get("prepare_requests", [])]


def records(frame: pd.DataFrame) -> list[dict]:
    """`qval samples --json`: the rows as JSON-ready dicts (NaN → null)."""
    return [{k: plain(v) for k, v in r.items()} for r in frame.to_dict("records")]
