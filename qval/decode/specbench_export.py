"""Export decode cells in Spec-Bench's model-answer format, so Spec-Bench's own scripts can read qval's results.

One JSONL file per decode cell, one line per question (sorted by question id, as Spec-Bench's ``reorg_answer_file``
leaves them; its ``equal.py`` pairs lines by position), in the shape Spec-Bench's ``evaluation/eval.py`` writes::

    {"question_id", "category", "answer_id", "model_id", "tstamp",
     "choices": [{"index": 0, "turns": [text per turn], "decoding_steps": [verify steps per turn],
                  "new_tokens": [tokens per turn], "wall_time": [prefill + decode seconds per turn],
                  "accept_lengths": [accepted + 1 for every verify step, turns concatenated]}]}

plus ``index.json``: ``[{cell_id, policy, temperature, file, baseline_file, tokenizer, ...}]`` where
``baseline_file`` is the same-run AR cell's file (null for AR cells) and ``tokenizer`` the model's tokenizer folder
(Spec-Bench's ``speed.py`` re-tokenises the baseline's text with it).

What differs from a Spec-Bench run, by construction: ``accept_lengths`` has one entry per *verify* step, so the
first token (from the prefill) has none, where Spec-Bench's baseline writes a 1 for every token; and qval's prompts
use the model's own chat template, not the Vicuna template. A question that some cell of a baseline group failed
is left out of every file of that group and counted in the index (Spec-Bench would write "ERROR" as its text).
"""

from __future__ import annotations

import json
from pathlib import Path

from ..errors import UsageError
from ..registry import REGISTRY
from ..store.db import connect_reader
from ..store.parts import write_json_atomic

_ROWS = (
    "SELECT sample_id, turn, category, new_tokens, target_steps, accepted, prefill_s, decode_s, output_ids, "
    "error FROM decode_samples WHERE cell_id = ? ORDER BY sample_id, turn"
)


def _cells(con, suite: str | None):
    sql = (
        "SELECT c.cell_id, c.model, c.method, c.temperature, c.dataset_label, c.identity, c.baseline_cell_id, "
        "c.run_id FROM cells c {join} WHERE c.track = 'decode' AND c.status = 'done' {where} "
        "ORDER BY c.cell_id"
    )
    if suite is None:
        return con.execute(sql.format(join="", where="")).fetchall()
    rows = con.execute(
        sql.format(join="JOIN suite_cells s USING (cell_id)", where="AND s.suite = ?"), [suite]
    ).fetchall()
    if not rows:
        raise UsageError(f"suite {suite!r} has no finished decode cells in this results folder")
    return rows


def tokenizer_folder(model_identity: dict) -> Path:
    """The model's Hugging Face folder (its tokenizer files), materialised by the model source if need be."""
    source_cls = REGISTRY.get("models", model_identity["source"])
    params = {k: v for k, v in model_identity.items() if k != "source"}
    source = source_cls(source_cls.Params.model_validate(params))
    # Served sources (an OpenAI-compatible server) have no weights here, only their tokenizer's folder.
    return Path(source.tokenizer_path() if hasattr(source, "tokenizer_path") else source.local_path())


def _question_id(sample_id: str):
    return int(sample_id) if sample_id.isdigit() else sample_id


def _sort_key(sample_id: str):
    return (0, int(sample_id), "") if sample_id.isdigit() else (1, 0, sample_id)


def export_specbench(results: Path, out: Path, suite: str | None = None) -> list[dict]:
    """Write the files; returns the index entries.

    Spec-Bench's equal.py pairs lines by position and speed.py averages each file on its own, so every file of one
    baseline group (an AR cell and the policies measured against it) holds the same questions: those every cell of
    the group completed. Questions some cell failed are left out of all of them and counted in the index."""
    from transformers import AutoTokenizer

    out = Path(out)
    con = connect_reader(results)
    try:
        cells = _cells(con, suite)
        rows = {c[0]: _turn_rows(con, c[0]) for c in cells}
    finally:
        con.close()
    runs = {c[0]: c[7] for c in cells}
    groups: dict[str, list] = {}
    for c in cells:
        groups.setdefault(c[6] if isinstance(c[6], str) else c[0], []).append(c)
    tokenizers: dict[str, tuple[str, object]] = {}
    index = []
    out.mkdir(parents=True, exist_ok=True)
    for group in groups.values():
        complete = [_complete_questions(rows[c[0]]) for c in group]
        common = set.intersection(*complete)
        for c in group:
            cell_id, model, method, temperature, dataset, identity, baseline, run_id = c
            identity = json.loads(identity) if isinstance(identity, str) else identity
            key = json.dumps(identity["model"], sort_keys=True)
            if key not in tokenizers:
                folder = tokenizer_folder(identity["model"])
                tokenizers[key] = (str(folder), AutoTokenizer.from_pretrained(folder))
            folder, tokenizer = tokenizers[key]
            lines = _answers(cell_id, model, method, rows[cell_id], common, tokenizer, run_id)
            name = f"{cell_id}.jsonl"
            tmp = out / f".{name}.tmp"
            tmp.write_text("".join(json.dumps(line, ensure_ascii=False) + "\n" for line in lines), encoding="utf-8")
            tmp.replace(out / name)
            # The baseline's file only when it is exported here and was timed in the same run (else qval itself
            # reports no speedup).
            same_run = isinstance(baseline, str) and baseline in runs and runs[baseline] == run_id
            index.append(
                {
                    "cell_id": cell_id,
                    "policy": method,
                    "model": model,
                    "dataset": dataset,
                    "temperature": temperature,
                    "file": name,
                    "baseline_file": f"{baseline}.jsonl" if same_run else None,
                    "tokenizer": folder,
                    "questions": len(lines),
                    "questions_left_out": len(rows[cell_id]) - len(lines),
                }
            )
    write_json_atomic(out / "index.json", index)
    return index


def _turn_rows(con, cell_id: str) -> dict[str, list]:
    by_question: dict[str, list] = {}
    for row in con.execute(_ROWS, [cell_id]).fetchall():
        by_question.setdefault(row[0], []).append(row)
    return by_question


def _complete_questions(by_question: dict[str, list]) -> set[str]:
    return {q for q, turns in by_question.items() if all(r[9] is None for r in turns)}


def _answers(
    cell_id: str, model: str, method: str, by_question: dict[str, list], keep: set[str], tokenizer, run_id
) -> list[dict]:
    lines = []
    for sample_id in sorted(keep, key=_sort_key):
        turns = sorted(by_question[sample_id], key=lambda r: r[1])
        accept_lengths = [int(a) + 1 for r in turns for a in (r[5] or [])]
        lines.append(
            {
                "question_id": _question_id(sample_id),
                "category": turns[0][2],
                "answer_id": f"{cell_id}:{sample_id}",
                "model_id": f"{model}-{method}",
                "tstamp": run_id,
                "choices": [
                    {
                        "index": 0,
                        "turns": [tokenizer.decode(list(r[8] or []), skip_special_tokens=True) for r in turns],
                        "decoding_steps": [int(r[4]) for r in turns],
                        "new_tokens": [int(r[3]) for r in turns],
                        "wall_time": [float((r[6] or 0.0) + r[7]) for r in turns],
                        "accept_lengths": accept_lengths,
                    }
                ],
            }
        )
    return lines
