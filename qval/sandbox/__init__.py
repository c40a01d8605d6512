"""Sandbox for LLM-written scoring programs (the "code" family of Q-alignment scorers).

An LLM writes ``def score(observation: str, action: str, task: str) -> float`` once;
qval then evaluates it on many (state, action) pairs.  :func:`run_program` runs the
source ONCE in a fresh child process and evaluates ``score(**call)`` for every call,
returning one :class:`Result` per call (a value or a clear error).

Layered defense (every layer is independent; ``sandbox_report()`` says which are
active on this machine):

* process  -- separate interpreter (``python -I -S -B _child.py``), own session/process
              group, whole group SIGKILLed on timeout or when the run ends; no inherited
              fds; environment replaced by a minimal one (no secrets).
* rlimits  -- RLIMIT_CPU, RLIMIT_AS (memory), RLIMIT_FSIZE, RLIMIT_NOFILE,
              RLIMIT_NPROC, RLIMIT_CORE=0 (soft == hard so they cannot be raised).
* uid_drop -- when the parent is root: setgroups([]) + setresgid/setresuid to an
              unprivileged uid (nobody) before any untrusted code runs; RLIMIT_NPROC is
              only enforced for non-root users, and root-only files (/etc/shadow,
              /proc/<parent>/environ) become unreadable.
* no_new_privs / pdeathsig -- prctl; setuid binaries are inert, child dies with parent.
* netns/ipcns -- unshare(CLONE_NEWNET|CLONE_NEWIPC): only a down loopback device.
              As non-root all namespaces are created inside an unprivileged user
              namespace (uid mapped to itself, all capabilities dropped afterwards).
* mountns  -- unshare(CLONE_NEWNS) + recursive read-only/nosuid remount of "/"
              (mount_setattr, Linux >= 5.12); the work dir is a fresh size-limited
              tmpfs (``work_dir_tmpfs``), /root and /home are covered by empty tmpfs.
* pidns    -- unshare(CLONE_NEWPID): untrusted code runs as PID 1 of a new PID
              namespace with a fresh /proc, so host processes (and their cmdlines and
              environments) are invisible and killing it kills every descendant.
* audit_hook -- sys.addaudithook installed before the untrusted source is even
              compiled: denies network, process creation, ctypes, threads, writes
              outside the work dir, reads outside the work dir, imports outside an
              allowlist, frame/gc introspection, code-object construction, rlimit
              changes.  Audit hooks are NOT a security boundary on their own (CPython
              docs); they are the portable layer and the first line of defense.

Untrusted source is sent through a pipe (JSON on stdin), never interpolated into
code.  Results come back as newline-delimited JSON on a private pipe; the parent
treats them as untrusted (size-capped, strictly validated).

Modules, one job each:

* ``_child.py`` -- the child program (stdlib only; run by path, importable for tests):
  namespaces, rlimits, privilege drop, audit hook, then the untrusted program.
* ``_child_hook.py`` -- the audit-hook policy; the child reads and runs it itself (never
  imported, never in ``sys.modules``); the parent hash-checks it with ``_child.py``.
* ``limits.py`` -- :class:`Limits`, the allowed modules and the sandbox uid/gid.
* ``process.py`` -- starting, feeding, watching, killing and reaping one child.
* ``channel.py`` -- validating what the child sends back.
* ``result.py`` -- :class:`Result` and the message for a child that died.
* ``run.py`` -- :func:`run_program` (restarts, skips) and :func:`sandbox_report`.
"""

from __future__ import annotations

from .limits import ALLOWED_MODULES, SANDBOX_GID, SANDBOX_UID, Limits
from .process import BOOTSTRAP_MARKER, CHILD_PATH, parent_tag
from .result import Result
from .run import run_program, sandbox_report

_parent_tag = parent_tag  # the name tests and tools used before the package split

__all__ = [
    "ALLOWED_MODULES",
    "BOOTSTRAP_MARKER",
    "CHILD_PATH",
    "SANDBOX_GID",
    "SANDBOX_UID",
    "Limits",
    "Result",
    "parent_tag",
    "run_program",
    "sandbox_report",
]
