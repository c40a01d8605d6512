"""A time limit around plugin code, so a hung scorer fails its points instead of stalling the run.

SIGALRM interrupts Python code (loops, sleeps, I/O waits). A plugin stuck inside one C call that never returns to
the interpreter is not interrupted; the runner's kill of a silent worker is the backstop for that case.
"""

from __future__ import annotations

import signal
import threading
from contextlib import contextmanager


class PluginTimeout(BaseException):
    """A BaseException, so a plugin's own ``except Exception`` (or score_batch's per-point catch) cannot swallow it
    and run on past its limit."""


@contextmanager
def time_limit(seconds: float | None, what: str):
    if not seconds or threading.current_thread() is not threading.main_thread():
        yield  # signals reach only the main thread; elsewhere there is no limit to enforce
        return

    def on_alarm(signum, frame):
        raise PluginTimeout(f"{what} exceeded its time limit of {seconds:g} s")

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
