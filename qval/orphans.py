"""No orphaned child processes: a worker the kernel ends when the process that started it dies, even by SIGKILL,
which leaves that process no chance to stop it (Linux's PR_SET_PDEATHSIG; elsewhere a no-op)."""

from __future__ import annotations

import ctypes
import functools
import os
import signal

_PR_SET_PDEATHSIG = 1


@functools.cache
def _libc() -> ctypes.CDLL | None:
    try:
        return ctypes.CDLL("libc.so.6", use_errno=True)
    except OSError:
        return None


def ready() -> None:
    """In the parent, before it starts children that call ``die_with_parent`` between fork and exec: loads libc
    there, so that the child makes no dlopen (unsafe after a fork of a process with threads)."""
    _libc()


def die_with_parent(parent: int) -> None:
    """In the child: SIGKILL when ``parent`` (the process id of the one that started it) dies; where it has died
    already, before this call, the child exits at once (nobody will collect its work)."""
    libc = _libc()
    if libc is None or not hasattr(libc, "prctl"):
        return
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:
        os._exit(1)
