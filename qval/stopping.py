"""How `qval run` and its workers turn SIGTERM and Ctrl-C into an orderly stop.

Both turn the signal into an exception, because an exception unwinds through ``finally`` and ``except`` blocks: the
CLI's runner stops its workers there (none is orphaned), and a worker writes the samples it finished but still holds
in memory (qval.worker), then releases its cell's lease.
"""

from __future__ import annotations

import signal


def exit_on_sigterm(signum, frame):
    """SIGTERM as ``SystemExit(128 + 15)``, the status a shell reports for a process SIGTERM ended."""
    raise SystemExit(128 + signum)


def stop_worker(signum, frame):
    """A worker's SIGINT and SIGTERM handler.

    A terminal's Ctrl-C reaches the whole process group, so a worker gets SIGINT, and then at once the runner's
    SIGTERM (runners/local.py stops every worker). A second signal raising inside the flush of the first would
    abandon the buffered samples half-way, so both are ignored from here on, before anything else. The runner's
    SIGKILL after its grace period cannot be ignored: a worker stuck in a plugin still dies.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if signum == signal.SIGINT:
        raise KeyboardInterrupt
    raise SystemExit(128 + signum)


def install_worker_handlers() -> None:
    signal.signal(signal.SIGINT, stop_worker)
    signal.signal(signal.SIGTERM, stop_worker)
