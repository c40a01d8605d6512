"""No orphaned child processes: a worker the kernel ends when the process that started it dies, even by SIGKILL,
which leaves that process no chance to stop it (Linux's PR_SET_PDEATHSIG; elsewhere a no-op)."""

from __future__ import annotations

import functools
import os
import signal

_PR_SET_PDEATHSIG = 1


@functools.cache
def _prctl():
    """libc's prctl, looked up once: the lookup (dlopen, dlsym) takes the dynamic loader's lock."""
    try:
        import ctypes  # here: a Python built without it runs, with no protection

        return ctypes.CDLL("libc.so.6", use_errno=True).prctl
    except (ImportError, OSError, AttributeError):
        return None


def ready() -> None:
    """In the parent, before it starts children that call ``die_with_parent`` between fork and exec: prctl is looked
    up there, so that the child makes no call into the dynamic loader (unsafe after a fork of a process with
    threads: another thread may have held its lock)."""
    _prctl()


def die_with_parent(parent: int) -> None:
    """In the child: SIGKILL when ``parent`` (the process id of the one that started it) dies; where it has died
    already, before this call, the child exits at once (nobody will collect its work)."""
    prctl = _prctl()
    if prctl is None:
        return
    prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:
        os._exit(1)
