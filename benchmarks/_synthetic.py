"""Synthetic results for harness benchmarks: real plan manifests and real Parquet parts, fake numbers.

The numbers are random; what is measured is the harness (planning, ingest, reporting), never a model.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from qval.decode.tables import DECODE_SAMPLES
from qval.plan import build_plan
from qval.store.parts import DONE, cell_dir, write_json_atomic
from qval.suite import load_suite


def decode_suite(path: Path, n_policies: int, n_temps: int, n_seeds: int, name: str = "bench") -> Path:
    policies = "\n".join(
        f"    - {{name: prompt-lookup, params: {{num_draft: {1 + i % 64}, max_ngram: {1 + i // 64}}}}}"
        for i in range(n_policies)
    )
    temps = ", ".join(f"{t / 10:g}" for t in range(n_temps))
    path.write_text(f"""name: {name}
seeds: [{", ".join(map(str, range(n_seeds)))}]
models: [smollm2-135m-instruct]
decode:
  datasets: [spec-bench]
  policies:
{policies}
  temperatures: [{temps}]
  hardware: bench-machine
  metrics: [speedup, acceptance_length, acceptance_length_per_sample, lossless, tokens_per_s]
""")
    return path


def write_decode_parts(results: Path, plan, rows_per_cell: int, seed: int = 0) -> int:
    """Fill every cell of the plan with rows_per_cell synthetic samples (one part per cell) and a DONE marker."""
    rng = np.random.default_rng(seed)
    # Output texts as decoding stores them (issue #16's transcripts): a few hundred characters per turn, varied, so
    # the benchmark pays for text the way real results do rather than for one string compressed away.
    words = np.array("the of a to in is that for it as with was on be by at this are from or an".split())
    texts = [" ".join(rng.choice(words, 60)) for _ in range(997)]
    total = 0
    for cell in plan.cells.values():
        _write_cell(results, cell.cell_id, rows_per_cell, rng, texts)
        total += rows_per_cell
    return total


def rewrite_cell(results: Path, cell_id: str, rows: int, seed: int) -> None:
    """Replace one cell's samples with other synthetic ones (a new part; the old one removed), as a re-run does."""
    for part in cell_dir(results, cell_id).glob("part-*.parquet"):
        part.unlink()
    rng = np.random.default_rng(seed)
    words = np.array("the of a to in is that for it as with was on be by at this are from or an".split())
    _write_cell(results, cell_id, rows, rng, [" ".join(rng.choice(words, 60)) for _ in range(997)], f"{seed:05d}")


def _write_cell(results: Path, cell_id: str, n: int, rng, texts: list[str], part: str = "00000") -> None:
    steps = rng.integers(8, 64, n)
    accepted = [rng.integers(0, 4, s).tolist() for s in steps]
    columns = {
        "cell_id": [cell_id] * n,
        "sample_id": [str(i) for i in range(n)],
        "turn": np.zeros(n, np.int32),
        "category": ["bench"] * n,
        "prompt_tokens": rng.integers(50, 500, n).astype(np.int32),
        "new_tokens": (steps + np.array([sum(a) for a in accepted])).astype(np.int32),
        "target_steps": steps.astype(np.int32),
        "drafted": [[4] * len(a) for a in accepted],
        "accepted": accepted,
        "prefill_s": rng.random(n) * 0.1,
        "decode_s": rng.random(n) + 0.5,
        "stopped_on_eos": np.ones(n, bool),
        "output_sha": [hashlib.md5(str(i).encode()).hexdigest()[:16] for i in range(n)],
        "output_ids": [[1, 2, 3]] * n,
        "error": pa.nulls(n, pa.string()),
        "prefill_entropy": rng.random(n) * 5,
        "prefill_top_prob": rng.random(n),
        "draft_s": rng.random(n) * 0.1,
        "load_other_cores": rng.random(n) * 0.2,
        "load_steal": np.zeros(n),
        "load_avg1": rng.random(n),
        "output_text": [texts[i % len(texts)] for i in rng.integers(0, len(texts), n)],
        "output_capped": np.zeros(n, bool),
        "accepted_chars": [[0, 12, 30, 41]] * n,
        "threads": np.full(n, 2, np.int32),
        "forward": np.full(n, "qval", dtype=object),
        # No checker for these prompts (as Spec-Bench's): NULL, so task_accuracy is undefined, as it would be.
        "correct": pa.nulls(n, pa.bool_()),
        "check_detail": pa.nulls(n, pa.string()),
    }
    # Fail loudly, naming the columns, when the schema grows: a benchmark that crashes on a KeyError deep in
    # pyarrow (as this one once did, unnoticed) says nothing about what to add here.
    missing = set(DECODE_SAMPLES.names) ^ set(columns)
    if missing:
        raise RuntimeError(f"_synthetic.py is out of date with DECODE_SAMPLES: {sorted(missing)}")
    table = pa.table(columns, schema=DECODE_SAMPLES)
    directory = cell_dir(results, cell_id)
    directory.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, directory / f"part-{part}-bench.parquet")
    write_json_atomic(directory / DONE, {"cell_id": cell_id, "n_samples": n, "run_id": "bench"})


def planned(suite_path: Path, results: Path):
    plan = build_plan(load_suite(suite_path))
    plan.write(results)
    return plan
