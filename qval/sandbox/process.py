"""One sandbox child process: start ``_child.py``, feed it, read its channel, kill and reap it.

The child is started as ``python -I -S -B <_child.py> <marker> <parent tag>`` in its own
session with a minimal environment and a fresh work dir (the child itself runs
``_child_hook.py`` from next to it; both files are hash-checked first); the untrusted source and the
calls go to it as JSON on stdin (never interpolated into code).  The parent enforces its
own deadlines on top of the child's timers, and at the end SIGKILLs the child's whole
process group.
"""

from __future__ import annotations

import hashlib
import json
import os
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from .channel import Channel
from .limits import SANDBOX_GID, SANDBOX_UID, Limits, child_limits

#: The child program, run by path (not imported: it must not see qval or site-packages).
CHILD_PATH = str(Path(__file__).resolve().with_name("_child.py"))
#: Its audit-hook policy, which the child reads and runs itself from next to ``_child.py``.
CHILD_HOOK_PATH = str(Path(CHILD_PATH).with_name("_child_hook.py"))
#: Every file the child runs: all are hash-checked before each child start.
CHILD_FILES = (CHILD_PATH, CHILD_HOOK_PATH)

# Marker contained in every sandbox child's command line (used by tests and by the
# leftover-process check).
BOOTSTRAP_MARKER = "qval-sandbox-bootstrap"

_STARTUP_ALLOWANCE_S = 15.0  # trusted bootstrap startup (slow CI machines)
_GRACE_S = 0.5  # parent hard-kill grace on top of the child's own per-call timer
_STDERR_CAP = 32 * 1024


def _digest(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


# The child used to be a string inside the parent, so the code a child ran was always the
# code this process imported.  The files keep that: their hashes are taken at import and
# every child start checks them, so a _child.py or _child_hook.py changed on disk later (an
# upgrade under a running worker, or a write by anything that got out) is refused, not run.
_CHILD_SHA256 = {path: _digest(path) for path in CHILD_FILES}


def check_child() -> None:
    """Raise RuntimeError if any file in ``CHILD_FILES`` is not the file this process saw at import."""
    for path in CHILD_FILES:
        try:
            same = _digest(path) == _CHILD_SHA256[path]
        except OSError:
            same = False
        if not same:
            raise RuntimeError(
                f"sandbox child program {path} changed on disk since qval was imported; refusing to run it (restart qval)"
            )


def parent_tag() -> str:
    """Extra argv item naming the parent pid (lets tools find this parent's children)."""
    return f"qval-sandbox-parent={os.getpid()}"


def child_env() -> dict[str, str]:
    # Nothing from the parent environment: no API keys, tokens, proxies, PYTHON*.
    return {"PATH": "/usr/bin:/bin", "LC_ALL": "C.UTF-8", "HOME": "/nonexistent"}


def want_uid_drop() -> bool:
    return hasattr(os, "geteuid") and os.geteuid() == 0


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    except OSError:
        pass
    try:
        proc.kill()
    except OSError:
        pass


def _has_exited(pid: int) -> bool:
    """True once ``pid`` (our child) has exited; does not reap it."""
    try:
        info = os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
    except (ChildProcessError, AttributeError, OSError):
        return False
    return info is not None


class ChildRun:
    """One child process evaluating calls[start:] (runs to completion in __init__)."""

    def __init__(
        self,
        source: str,
        calls: list[dict[str, Any]],
        start: int,
        limits: Limits,
        total_deadline: float,
        modules: tuple[str, ...],
        audit_hook: bool,
        namespaces: bool,
    ) -> None:
        self.channel = Channel(start, len(calls), limits.max_output_bytes)
        self.stop_reason: str | None = None  # timeout|total|output|protocol|None
        self.stderr = b""
        self.returncode: int | None = None
        self.cpu_used = 0.0
        self._writer: threading.Thread | None = None
        self._run(source, calls, start, limits, total_deadline, modules, audit_hook, namespaces)

    @property
    def next_index(self) -> int:
        """Index of the first call the child did not answer."""
        return self.channel.expect

    def _run(
        self,
        source: str,
        calls: list[dict[str, Any]],
        start: int,
        limits: Limits,
        total_deadline: float,
        modules: tuple[str, ...],
        audit_hook: bool,
        namespaces: bool,
    ) -> None:
        check_child()
        drop = want_uid_drop()
        workdir = tempfile.mkdtemp(prefix="qval-sbx-")
        workdir = os.path.realpath(workdir)
        try:
            if drop:
                os.chown(workdir, SANDBOX_UID, SANDBOX_GID)
            payload = json.dumps(
                {
                    "source": source,
                    "calls": calls,
                    "start": start,
                    "workdir": workdir,
                    "modules": list(modules),
                    "audit_hook": audit_hook,
                    "namespaces": namespaces,
                    "uid": SANDBOX_UID if drop else None,
                    "gid": SANDBOX_GID if drop else None,
                    **child_limits(limits),
                }
            ).encode()
            t0 = time.monotonic()
            proc = subprocess.Popen(
                [sys.executable, "-I", "-S", "-B", CHILD_PATH, BOOTSTRAP_MARKER, parent_tag()],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env=child_env(),
                cwd=workdir,
                start_new_session=True,
                close_fds=True,
            )
            try:
                self._talk(proc, payload, limits, total_deadline, t0)
            finally:
                _kill_group(proc)  # also reaps stragglers left in the group
                self._reap(proc)
                if self._writer is not None:
                    self._writer.join(2.0)  # gets EPIPE once the child is gone
                    if self._writer.is_alive():
                        proc.stdin = None  # never close a file another thread writes
                for f in (proc.stdin, proc.stdout, proc.stderr):
                    try:
                        if f:
                            f.close()
                    except OSError:
                        pass
        finally:
            shutil.rmtree(workdir, ignore_errors=True)

    def _reap(self, proc: subprocess.Popen[bytes]) -> None:
        try:
            _, status, ru = os.wait4(proc.pid, 0)
            self.cpu_used = ru.ru_utime + ru.ru_stime
            self.returncode = os.waitstatus_to_exitcode(status)
            proc.returncode = self.returncode
        except ChildProcessError:
            proc.wait()
            self.returncode = proc.returncode

    def _talk(
        self, proc: subprocess.Popen[bytes], payload: bytes, limits: Limits, total_deadline: float, t0: float
    ) -> None:
        stdin, stdout, stderr = proc.stdin, proc.stdout, proc.stderr
        assert stdin is not None and stdout is not None and stderr is not None  # all PIPEs

        def feed() -> None:
            # a thread: the payload can exceed the pipe buffer while the child is
            # already writing results we must read
            try:
                stdin.write(payload)
                stdin.close()
            except (BrokenPipeError, OSError, ValueError):
                pass

        writer = threading.Thread(target=feed, daemon=True)
        writer.start()
        self._writer = writer
        chan = self.channel
        per_call = limits.wall_seconds_per_call
        deadline = t0 + _STARTUP_ALLOWANCE_S
        err = bytearray()
        sel = selectors.DefaultSelector()
        sel.register(stdout, selectors.EVENT_READ, "out")
        sel.register(stderr, selectors.EVENT_READ, "err")
        # Watch the child's exit directly, not only EOF: the last close of a pipe can
        # be deferred by the kernel (seen after SIGSEGV inside a PID namespace), so
        # EOF may arrive seconds after the process is gone.
        pidfd = None
        if hasattr(os, "pidfd_open"):
            try:
                pidfd = os.pidfd_open(proc.pid)
                sel.register(pidfd, selectors.EVENT_READ, "exit")
            except OSError:
                pidfd = None
        exited_at: float | None = None
        open_streams = 2
        try:
            while open_streams and not chan.done:
                now = time.monotonic()
                limit_at = min(deadline, total_deadline)
                if now >= limit_at:
                    self.stop_reason = "total" if total_deadline <= deadline else "timeout"
                    return
                wait = limit_at - now
                if exited_at is not None:
                    wait = exited_at + 0.2 - now  # drain what the dead child left
                    if wait <= 0:
                        return
                elif pidfd is None:
                    wait = min(wait, 0.05)  # no pidfd: poll for exit
                events = sel.select(wait)
                if exited_at is None and pidfd is None and _has_exited(proc.pid):
                    exited_at = time.monotonic()
                if not events and exited_at is not None:
                    return
                for key, _ in events:
                    if key.data == "exit":
                        sel.unregister(key.fileobj)
                        exited_at = time.monotonic()
                        continue
                    fd = key.fileobj if isinstance(key.fileobj, int) else key.fileobj.fileno()
                    data = os.read(fd, 65536)
                    if not data:
                        sel.unregister(key.fileobj)
                        open_streams -= 1
                        if key.data == "out":
                            open_streams = 0  # result channel closed: child is done
                        continue
                    if key.data == "err":
                        if len(err) < _STDERR_CAP:
                            err += data[: _STDERR_CAP - len(err)]
                        continue
                    stop, progress = chan.feed(data)
                    if stop is not None:
                        self.stop_reason = stop
                        return
                    if progress:
                        deadline = time.monotonic() + per_call + _GRACE_S
                    if chan.done:
                        return
        finally:
            sel.close()
            if pidfd is not None:
                os.close(pidfd)
            self.stderr = bytes(err)
