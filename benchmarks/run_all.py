"""Run every benchmark; each prints one JSON line per figure.

``make bench`` (full size): exit 1 if a goal is missed or a check fails. ``--smoke`` (CI, via
tests/test_benchmarks.py): every benchmark runs at a small size so that none can rot; timing goals are not judged
there (small sizes on a shared machine say nothing), but a crash or a failed correctness check (rows lost,
outputs not identical) exits 1.
"""

import argparse
import importlib
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
BENCHMARKS = [
    "bench_plan",
    "bench_ingest",
    "bench_report",
    "bench_decode",
    "bench_engine_vs_vllm",
    "bench_engine_levers",
    "bench_qalign_requests",
    "bench_qalign_vllm",
    "bench_cross_tokenizer",
    "gpu_check",
]

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--smoke", action="store_true", help="small sizes; judge correctness checks only")
    parser.add_argument("--only", nargs="*", choices=BENCHMARKS, help="run these benchmarks only")
    args = parser.parse_args()
    ok = True
    for name in args.only or BENCHMARKS:
        results = importlib.import_module(name).main(smoke=args.smoke)
        for result in results if isinstance(results, list) else [results]:
            print(json.dumps(result), flush=True)
            ok &= bool(result.get("checks", True)) and (args.smoke or bool(result.get("ok", True)))
    sys.exit(0 if ok else 1)
