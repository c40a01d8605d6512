"""A worker process of a large report (drilldown.PendingPages): reads cell ids (JSON) on stdin, writes their drill-down
pages, prints the paths written (JSON). ``python -m qval.report.page_worker RESULTS FOLDER``."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from . import background


def main(argv: list[str]) -> int:
    background.die_with_parent()
    try:
        # The cell ids first, then the imports: the report writes them into a pipe, and would wait for the imports
        # (about a second) on a list over the pipe's 64 KiB.
        cell_ids = json.loads(sys.stdin.read())
        from .drilldown import render_pages  # in the try: an interrupt during its imports ends the worker quietly

        results, folder = Path(argv[0]), Path(argv[1])
        written = [str(path) for path in render_pages(results, folder, cell_ids)]
    except BaseException:  # noqa: BLE001 - an error or an interrupt: the report's process renders these pages again
        return 1  # and reports any error itself, once and without a traceback (a worker's would be a second copy)
    try:
        print(json.dumps(written), flush=True)
    except BaseException:  # noqa: BLE001 - the report stopped reading (it failed or was interrupted)
        background.silence_stdout()
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
