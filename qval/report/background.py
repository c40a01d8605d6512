"""Work of a large report done beside its own process: worker processes (fresh interpreters, ``python -m``) that
render drill-down pages (drilldown.PendingPages) or compute a deferred part of a board (``start``) while the report's
own process draws the figures.

Fresh interpreters rather than forked or multiprocessing children: a fork of the report's process copies its DuckDB
and BLAS threads' locks, and multiprocessing's spawn re-runs the caller's main script. A worker that fails (it could
not start, it crashed, it was killed) leaves its work to the report's own process, which does it again: the same
output, or the error itself where it has one.

``python -m qval.report.background`` is the worker of ``start``: it reads a pickled (function, args) on stdin and
writes the pickled result on stdout. Pickle is safe here: both ends are this qval, talking over its own pipes.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from typing import Any

from .. import orphans

# Below this many samples of work, a worker process (its start and imports, about a second) costs more than it saves.
WORKER_MIN_SAMPLES = 20_000


_BLAS_THREADS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
_PARENT = "QVAL_REPORT_PARENT"  # the process id of the report that started a worker


def workers() -> int:
    """Worker processes for a report's drill-down pages: ``QVAL_REPORT_WORKERS``, else one per core but the one the
    report itself uses (at most 4). A deferred board field gets a worker of its own beside them; 0 does everything
    in the report's process."""
    value = os.environ.get("QVAL_REPORT_WORKERS", "").strip()
    if value.isdigit():
        return int(value)
    return max(0, min(4, (os.cpu_count() or 1) - 1))


def spawn(module: str, *argv: str) -> subprocess.Popen:
    """``python -P -m module argv…`` with pipes for stdin and stdout (its stderr is the report's own). Raises OSError
    where no process is to be had (a limit on processes or files)."""
    return subprocess.Popen(
        # -P: the current directory is not put first on the import path, so a folder named qval there cannot stand in
        # for the qval that started the worker (its rows would be cached under this qval's code key).
        [sys.executable, "-P", "-m", module, *argv],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env={
            **os.environ,
            # This process's import path, so the worker runs this qval, not another one installed.
            "PYTHONPATH": os.pathsep.join(p or os.getcwd() for p in sys.path),
            # One BLAS thread: the workers and the report's own process already share the cores out, and a BLAS
            # team beside them only waits its turn (it cost a million-row report's knob headroom a second of CPU).
            **{name: "1" for name in _BLAS_THREADS},
            _PARENT: str(os.getpid()),
        },
    )


def die_with_parent() -> None:
    """A worker's first step: the kernel kills it when the report that started it dies, even by SIGKILL, where the
    report cannot stop it. Set after the worker's start, not between fork and exec (a preexec_fn), which is unsafe
    in the report's process: its DuckDB threads may hold locks the child would need."""
    parent = os.environ.get(_PARENT, "")
    if parent.isdigit():
        orphans.die_with_parent(int(parent))


def silence_stdout() -> None:
    """Point stdout at /dev/null once the reader is gone, so that the interpreter's last flush raises nothing."""
    with contextlib.suppress(OSError):
        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, 1)  # file descriptor 1: the process's stdout, whatever sys.stdout names now
        os.close(null)


def redone(what: str, returncode: int | None) -> None:
    """Say once, on stderr, that a worker failed and the report's process did its work: the report is the same, but
    it took longer (a worker that always fails would double every report's time unnoticed)."""
    print(
        f"qval: a report worker failed (exit code {returncode}); the report's own process did its work "
        f"({what}) again: the same report, but slower",
        file=sys.stderr,
    )


def stop(proc: subprocess.Popen) -> None:
    """Kill a worker that is still running and wait for it (no zombie), closing its pipes."""
    if proc.poll() is None:
        with contextlib.suppress(OSError):
            proc.kill()
    proc.wait()
    for pipe in (proc.stdin, proc.stdout):
        if pipe is not None:
            with contextlib.suppress(OSError):
                pipe.close()


class Deferred:
    """A value computed beside the report's process (or already computed here); ``result`` waits for it. A worker
    that failed, or was stopped, leaves the value to ``result``, which computes it in the report's process."""

    def __init__(self, function: Callable[..., Any], args: tuple, proc: subprocess.Popen | None = None):
        self._function, self._args, self._proc = function, args, proc
        self._value: Any = _FAILED
        self._returncode: int | None = None  # of a worker that gave no answer
        if proc is None:
            self._value = function(*args)

    def result(self) -> Any:
        if self._value is _FAILED and self._proc is not None:
            try:
                self._value = _answer(self._proc)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self._proc.wait(timeout=_EXIT_WAIT_S)  # it has answered: a moment to exit, then it is stopped
            finally:  # an interrupt while waiting stops the worker too
                stop(self._proc)
                if self._value is _FAILED:
                    self._returncode = self._proc.returncode
                self._proc = None
        if self._value is _FAILED:  # no worker, or it failed: the same value, or its error, from this process
            failed = self._returncode
            self._value = self._function(*self._args)
            if failed is not None:
                redone(getattr(self._function, "__qualname__", "its work"), failed)
        return self._value

    def cancel(self) -> None:
        """Stop the worker, if one is still running (an error or an interrupt ended the report)."""
        if self._proc is not None:
            stop(self._proc)
            self._proc = None


def _answer(proc: subprocess.Popen) -> Any:
    """The worker's pickled answer (its length first, so a worker slow to exit after answering is not waited for);
    _FAILED where it gave none whole."""
    assert proc.stdout is not None
    head = proc.stdout.read(8)
    if len(head) < 8:
        return _FAILED
    data = proc.stdout.read(int.from_bytes(head, "big"))
    try:
        return pickle.loads(data)
    except Exception:  # noqa: BLE001 - a truncated or garbled answer: computed here instead
        return _FAILED


_FAILED = object()
_EXIT_WAIT_S = 5.0
_STARTED: ContextVar[list[Deferred] | None] = ContextVar("qval_report_background", default=None)


@contextlib.contextmanager
def beside() -> Iterator[None]:
    """While this block runs, ``start`` may hand work to worker processes; those still running when it ends (the
    report failed or was interrupted) are stopped, so none outlives its report."""
    started: list[Deferred] = []
    token = _STARTED.set(started)
    try:
        yield
    finally:
        _STARTED.reset(token)
        for deferred in started:
            deferred.cancel()


def start(function: Callable[..., Any], *args: Any, worth_a_worker: bool = True) -> Deferred:
    """``function(*args)`` (a module-level function; its arguments and result pickle: they go through a pipe that
    the worker reads first thing, before any import) computed by a worker process when a report is being written
    (``beside``), workers are allowed and the work is ``worth_a_worker`` (a worker's start and imports cost about a
    second); otherwise computed here and now."""
    started = _STARTED.get()
    if started is None or not worth_a_worker or workers() == 0:
        return Deferred(function, args)
    request = pickle.dumps((function, args), protocol=pickle.HIGHEST_PROTOCOL)  # before a worker: no orphan if it fails
    try:
        proc = spawn(__name__)
    except OSError:
        return Deferred(function, args)
    deferred = Deferred(function, args, proc)
    started.append(deferred)
    assert proc.stdin is not None
    try:
        proc.stdin.write(request)
        proc.stdin.close()
    except OSError:  # it ended before reading (it could not start qval): result() computes it here
        pass
    return deferred


def main() -> int:
    die_with_parent()
    answer = sys.stdout.buffer
    sys.stdout = sys.stderr  # whatever the work prints goes where the report's own output goes, not into the answer
    try:
        function, args = pickle.loads(sys.stdin.buffer.read())
        data = pickle.dumps(function(*args), protocol=pickle.HIGHEST_PROTOCOL)
        answer.write(len(data).to_bytes(8, "big") + data)
        answer.flush()
    except BaseException:  # noqa: BLE001 - an error or an interrupt, or the report stopped reading: the report's
        silence_stdout()  # process does the work again and reports any error itself, once and without a traceback
        return 1  # (a worker's would be a second copy)
    return 0


if __name__ == "__main__":
    sys.exit(main())
