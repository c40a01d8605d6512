"""Stdlib client for vllm_proc.py (one vLLM engine in a child process, JSON-lines protocol).

with VLLMProcess("/tmp/vllm_work/venv/bin/python", {"OMP_NUM_THREADS": "1"}) as p:
    p.request({"op": "init", "model": path, "dtype": "float32", "seed": 0, "max_model_len": 2048})
    r = p.request({"op": "generate", "prompt_token_ids": ids, "max_tokens": 48,
                   "temperature": 0.0, "seed": 0})
"""

from __future__ import annotations

import collections
import json
import os
import queue
import signal
import subprocess
import threading
from pathlib import Path

__all__ = ["VLLMProcess", "VLLMProcessError"]

DEFAULT_SCRIPT = Path(__file__).with_name("vllm_proc.py")
# Variables of the caller's environment that must not leak into the vLLM venv's python.
_DROP = ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "PYTHONSTARTUP")
_EOF = object()


class VLLMProcessError(RuntimeError):
    """A request failed (ok=false) or the child died / timed out.  ``.response`` holds the reply, if any."""

    def __init__(self, msg: str, response: dict | None = None):
        super().__init__(msg)
        self.response = response


class VLLMProcess:
    def __init__(
        self,
        python: str | os.PathLike,
        env_overrides: dict[str, str | None] | None = None,
        *,
        script: str | os.PathLike = DEFAULT_SCRIPT,
        stderr_log: str | os.PathLike | None = None,
        stderr_tail_lines: int = 60,
    ):
        """``env_overrides``: values are set in the child's env; a value of None removes the variable.
        ``stderr_log``: optional file that receives the child's whole stderr (vLLM's logs)."""
        self.python = str(python)
        self.env_overrides = dict(env_overrides or {})
        self.script = str(script)
        self.stderr_log = stderr_log
        self._tail: collections.deque[str] = collections.deque(maxlen=stderr_tail_lines)
        self._proc: subprocess.Popen | None = None
        self._lines: queue.Queue = queue.Queue()
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._swept = False

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> VLLMProcess:
        if self._proc is not None:
            raise VLLMProcessError("already started")
        env = {k: v for k, v in os.environ.items() if k not in _DROP}
        for k, v in self.env_overrides.items():
            if v is None:
                env.pop(k, None)
            else:
                env[k] = str(v)
        self._proc = subprocess.Popen(
            [self.python, self.script],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
            start_new_session=True,  # own process group: killpg is safe
        )
        t_out = threading.Thread(target=self._read_stdout, name="vllm-proc-stdout", daemon=True)
        t_err = threading.Thread(target=self._read_stderr, name="vllm-proc-stderr", daemon=True)
        t_out.start()
        t_err.start()
        self._threads = [t_out, t_err]
        return self

    def _read_stdout(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        try:
            for raw in self._proc.stdout:
                self._lines.put(raw.decode("utf-8", "replace"))
        except (OSError, ValueError):  # pipe closed under us by close()
            pass
        finally:
            self._lines.put(_EOF)

    def _read_stderr(self) -> None:
        assert self._proc is not None and self._proc.stderr is not None
        log = open(self.stderr_log, "a", encoding="utf-8") if self.stderr_log else None
        try:
            for raw in self._proc.stderr:
                line = raw.decode("utf-8", "replace")
                self._tail.append(line)
                if log:
                    log.write(line)
                    log.flush()
        except (OSError, ValueError):
            pass
        finally:
            if log:
                log.close()

    def stderr_tail(self) -> str:
        return "".join(self._tail)

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    # ------------------------------------------------------------------ requests
    def request(self, req: dict, timeout: float | None = None) -> dict:
        """Send one request and return its reply.  Raises VLLMProcessError on ok=false, child death,
        or timeout (after a timeout the child is killed: the protocol can't be resynchronised)."""
        with self._lock:
            if self._proc is None:
                raise VLLMProcessError("not started")
            if self._proc.poll() is not None:
                raise VLLMProcessError(self._died_msg("before the request"))
            try:
                line = self._exchange(req, timeout)
            except VLLMProcessError:
                raise
            except BaseException:
                # Interrupted mid-request (a scorer's time limit is a signal, or Ctrl-C): the child's late reply
                # would answer the next request, so the protocol cannot go on; the next request finds it dead.
                self._kill()
                raise
            if line is _EOF:
                self._reap(5.0)
                raise VLLMProcessError(self._died_msg(f"during op={req.get('op')!r}"))
            try:
                resp = json.loads(line)
            except json.JSONDecodeError:
                raise VLLMProcessError(
                    f"bad protocol line from child: {line[:500]!r}\n--- child stderr tail ---\n{self.stderr_tail()}"
                ) from None
            if not resp.get("ok"):
                raise VLLMProcessError(
                    f"op={req.get('op')!r} failed in the child: {resp.get('error')}\n"
                    f"--- child traceback ---\n{resp.get('traceback', '')}"
                    f"--- child stderr tail ---\n{self.stderr_tail()}",
                    resp,
                )
            return resp

    def _exchange(self, req: dict, timeout: float | None):
        """Send the request and wait for its line (or _EOF)."""
        assert self._proc is not None
        try:
            assert self._proc.stdin is not None
            self._proc.stdin.write((json.dumps(req) + "\n").encode())
            self._proc.stdin.flush()
        except (BrokenPipeError, OSError):
            self._reap(2.0)
            raise VLLMProcessError(self._died_msg("while sending the request")) from None
        try:
            return self._lines.get(timeout=timeout)
        except queue.Empty:
            self._kill()
            raise VLLMProcessError(
                f"no reply to op={req.get('op')!r} within {timeout}s; child killed\n"
                f"--- child stderr tail ---\n{self.stderr_tail()}"
            ) from None

    def _died_msg(self, when: str) -> str:
        rc = self._proc.poll() if self._proc else None
        return (
            f"vllm_proc child (pid {self.pid}) died {when} (returncode {rc})\n"
            f"--- child stderr tail ---\n{self.stderr_tail()}"
        )

    # ------------------------------------------------------------------ shutdown
    def _reap(self, timeout: float) -> None:
        if self._proc is None:
            return
        try:
            self._proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self._kill()

    def _signal_group(self, sig: int) -> None:
        if self._swept:  # the group was already SIGKILLed once after the leader died; never reuse its id
            return
        try:
            os.killpg(self._proc.pid, sig)  # the child's own session/group (start_new_session=True)
        except (ProcessLookupError, PermissionError):
            pass

    def _kill(self) -> None:
        if self._proc is None:
            return
        if self._proc.poll() is None:
            self._signal_group(signal.SIGTERM)
            try:
                self._proc.wait(5.0)
            except subprocess.TimeoutExpired:
                pass
        # SIGKILL whatever is left in the group (also engine-core children if the leader is gone).
        self._signal_group(signal.SIGKILL)
        self._swept = True
        try:
            self._proc.wait(5.0)
        except subprocess.TimeoutExpired:
            pass

    def close(self, timeout: float = 30.0) -> int | None:
        """Ask the child to shut down; terminate/kill its process group after ``timeout``.
        Returns the child's exit code.  Idempotent."""
        if self._proc is None:
            return None
        if self._proc.poll() is None:
            try:
                self.request({"op": "shutdown"}, timeout=timeout)
            except VLLMProcessError:
                pass
            try:
                self._proc.wait(timeout)
            except subprocess.TimeoutExpired:
                pass
        self._kill()  # no-op for the leader if it exited; clears stragglers in its group
        for s in (self._proc.stdin, self._proc.stdout, self._proc.stderr):
            try:
                if s:
                    s.close()
            except OSError:
                pass
        for t in self._threads:
            t.join(2.0)
        return self._proc.returncode

    def __enter__(self) -> VLLMProcess:
        if self._proc is None:
            self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.close()
