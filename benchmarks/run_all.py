"""Run every benchmark; each prints one JSON line. Exit 1 if a goal is missed."""
import importlib
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
BENCHMARKS = ["bench_plan", "bench_ingest", "bench_report", "bench_decode", "bench_qalign_requests"]

if __name__ == "__main__":
    ok = True
    for name in BENCHMARKS:
        results = importlib.import_module(name).main()
        for result in results if isinstance(results, list) else [results]:
            print(json.dumps(result), flush=True)
            ok &= bool(result.get("ok", True))
    sys.exit(0 if ok else 1)
