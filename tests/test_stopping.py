"""A worker's stop (qval.stopping): the first SIGINT or SIGTERM unwinds it so it writes its buffered samples, a
second signal during that write is ignored, and the runner's SIGKILL after its grace still ends a worker that never
finishes stopping (a plugin stuck in a C call, or one that swallows the interrupt)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from conftest import ROOT

from qval.runners.local import _Supervised

# A stand-in worker: the real handlers, a run that waits to be stopped, and a slow "flush" on the way out (long
# enough that the runner's SIGTERM lands in it, as it does after a terminal's Ctrl-C).
WORKER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from qval.stopping import install_worker_handlers

    install_worker_handlers()
    out = Path(sys.argv[1])
    try:
        print("ready", flush=True)
        time.sleep(60)
    except (KeyboardInterrupt, SystemExit) as exc:
        if sys.argv[2] == "hang":  # a plugin that swallows the interrupt and goes on
            while True:
                time.sleep(1)
        time.sleep(1.0)
        out.write_text(type(exc).__name__)
        sys.exit(130 if isinstance(exc, KeyboardInterrupt) else 143)
    """
)


def _start(tmp_path: Path, mode: str) -> tuple[subprocess.Popen, Path]:
    out = tmp_path / "flushed"
    proc = subprocess.Popen(
        [sys.executable, "-c", WORKER, str(out), mode],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        start_new_session=True,
    )
    assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
    return proc, out


def test_a_signal_during_the_flush_of_the_first_is_ignored(tmp_path):
    proc, out = _start(tmp_path, "flush")
    try:
        os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C reaches the whole group, the worker included
        time.sleep(0.3)
        os.kill(proc.pid, signal.SIGTERM)  # then the runner stops it: this lands in the flush
        os.kill(proc.pid, signal.SIGINT)  # and an impatient second Ctrl-C
        assert proc.wait(timeout=20) == 130
    finally:
        if proc.poll() is None:
            proc.kill()
    assert out.read_text() == "KeyboardInterrupt"  # the flush ran to its end


def test_sigterm_alone_unwinds_too(tmp_path):
    proc, out = _start(tmp_path, "flush")
    try:
        os.kill(proc.pid, signal.SIGTERM)
        time.sleep(0.3)
        os.kill(proc.pid, signal.SIGTERM)
        assert proc.wait(timeout=20) == 143
    finally:
        if proc.poll() is None:
            proc.kill()
    assert out.read_text() == "SystemExit"


def test_the_runner_still_kills_a_worker_that_never_finishes_stopping(tmp_path):
    worker = _Supervised(
        [sys.executable, "-c", WORKER, str(tmp_path / "flushed"), "hang"],
        {**os.environ, "PYTHONPATH": str(ROOT)},
        tmp_path / "shard.log",
        0,
        lambda index, event: None,
    )
    log, deadline = tmp_path / "shard.log", time.time() + 30
    while not (log.exists() and "ready" in log.read_text()):
        assert time.time() < deadline, "the stand-in worker never started"
        time.sleep(0.05)
    os.kill(worker.proc.pid, signal.SIGINT)  # it now ignores SIGTERM as well
    started = time.monotonic()
    worker.stop()  # SIGTERM, the grace period, then SIGKILL
    assert worker.proc.returncode == -signal.SIGKILL
    assert time.monotonic() - started < 25  # the grace (10 s) bounds it
