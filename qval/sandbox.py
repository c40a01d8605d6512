"""Sandbox for LLM-written scoring programs (the "code" family of Q-alignment scorers).

An LLM writes ``def score(observation: str, action: str, task: str) -> float`` once;
qval then evaluates it on many (state, action) pairs.  :func:`run_program` runs the
source ONCE in a fresh child process and evaluates ``score(**call)`` for every call,
returning one :class:`Result` per call (a value or a clear error).

Layered defense (every layer is independent; ``sandbox_report()`` says which are
active on this machine):

* process  -- separate interpreter (``python -I -S -B``), own session/process group,
              whole group SIGKILLed on timeout or when the run ends; no inherited fds;
              environment replaced by a minimal one (no secrets).
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
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any

__all__ = [
    "ALLOWED_MODULES",
    "SANDBOX_GID",
    "SANDBOX_UID",
    "Limits",
    "Result",
    "run_program",
    "sandbox_report",
]

#: uid/gid used for untrusted code when the parent runs as root (nobody/nogroup).
SANDBOX_UID = 65534
SANDBOX_GID = 65534

#: Modules untrusted code may import.  They are imported by the bootstrap *before*
#: privileges are dropped (the stdlib may be unreadable to the sandbox uid, e.g. a
#: pyenv under /root); any other import is refused by the audit hook.
ALLOWED_MODULES: tuple[str, ...] = (
    "math", "cmath", "re", "json", "string", "collections", "collections.abc",
    "itertools", "functools", "operator", "statistics", "random", "heapq", "bisect",
    "difflib", "unicodedata", "textwrap", "fractions", "decimal", "numbers", "enum",
    "datetime", "copy", "typing", "array", "struct", "abc", "types", "time",
    "encodings", "encodings.ascii", "encodings.latin_1", "encodings.utf_16",
    "encodings.utf_32", "encodings.cp1252", "encodings.unicode_escape",
)

# Marker contained in every sandbox child's command line (used by tests and by the
# leftover-process check).
BOOTSTRAP_MARKER = "qval-sandbox-bootstrap"

_STARTUP_ALLOWANCE_S = 15.0  # trusted bootstrap startup (slow CI machines)
_GRACE_S = 0.5  # parent hard-kill grace on top of the child's own per-call timer
_FRAME_OVERHEAD = 4096  # bytes allowed per result frame on top of captured output
_STDERR_CAP = 32 * 1024


@dataclasses.dataclass(frozen=True)
class Limits:
    """Resource limits for one :func:`run_program` invocation."""

    cpu_seconds: float = 30.0  # RLIMIT_CPU per child process (all calls together)
    memory_mb: int = 512  # RLIMIT_AS (virtual address space) of the child
    wall_seconds_per_call: float = 2.0  # per score() call (also for loading the source)
    total_wall_seconds: float = 120.0  # whole run_program, restarts included
    max_output_bytes: int = 64 * 1024  # captured print() output, whole run
    max_processes: int = 16  # RLIMIT_NPROC (only enforced for non-root uids)
    max_open_files: int = 64  # RLIMIT_NOFILE
    max_file_bytes: int = 16 * 1024 * 1024  # RLIMIT_FSIZE (any one file)
    max_disk_bytes: int = 32 * 1024 * 1024  # work dir size (only with the tmpfs layer)
    max_restarts: int = 3  # fresh children after a call killed the previous one


@dataclasses.dataclass
class Result:
    """Outcome of one ``score(**call)``.

    ``kind`` is one of: ok, exception, bad_return, timeout, memory, cpu, output,
    crash, load, skipped.
    """

    value: float | None = None
    error: str | None = None
    kind: str = "ok"
    output: str = ""  # captured print() output of this call (truncated)

    @property
    def ok(self) -> bool:
        return self.error is None


# ---------------------------------------------------------------------------
# Child bootstrap.  Runs as ``python -I -S -B -c _BOOTSTRAP`` with the payload on
# stdin.  Everything up to "install audit hook" is trusted code.
# ---------------------------------------------------------------------------
_BOOTSTRAP = r'''# qval-sandbox-bootstrap
import sys, os, json, signal, resource

def _hook_factory(workdir, read_ok, allowed_modules, deny_prefixes, deny_exact,
                  frame_attrs, protected_modules,
                  _type, _str, _bytes, _int, _lstat, _readlink, _getcwd,
                  _PermissionError, _ImportError, _ValueError, _OSError, _type_getattr):
    # Everything the hook uses is bound here (closure cells), never looked up in
    # globals/builtins at call time: untrusted code may monkeypatch modules and
    # builtins.  tests assert the hook's code has no LOAD_GLOBAL/LOAD_NAME.
    def _hook(event, args):
        if event == "open" or event in ("os.listdir", "os.scandir", "os.remove",
                "os.rmdir", "os.mkdir", "os.rename", "os.chmod", "os.chown",
                "os.truncate", "os.utime", "os.symlink", "shutil.rmtree",
                "os.chflags", "os.lchflags", "os.getxattr", "os.listxattr",
                "os.setxattr", "os.removexattr", "os.lockf", "shutil.copyfile",
                "shutil.copymode", "shutil.copystat", "shutil.copytree",
                "shutil.move", "shutil.unpack_archive", "shutil.make_archive"):
            if event == "open":
                write = False
                mode = args[1]
                flags = args[2]
                if _type(flags) is _int and flags & 0o3103:  # WRONLY|RDWR|CREAT|TRUNC|APPEND
                    write = True
                if _type(mode) is _str:
                    for ch in "wax+":
                        if ch in mode:
                            write = True
                paths = (args[0],)
            elif event in ("os.listdir", "os.scandir", "os.getxattr", "os.listxattr"):
                write = False
                paths = (args[0],)
            elif event in ("os.rename", "os.symlink", "shutil.copyfile",
                           "shutil.copymode", "shutil.copystat", "shutil.copytree",
                           "shutil.move"):
                write = True
                paths = (args[0], args[1])
                if event == "os.symlink" or event.startswith("shutil.copy"):
                    paths = (args[1],)
            else:
                write = True
                paths = (args[0],)
            for p in paths:
                if p is None or _type(p) is _int:
                    continue  # an already-open fd (or listdir() of cwd)
                if _type(p) is _bytes:
                    p = p.decode("utf-8", "surrogateescape")
                if _type(p) is not _str:
                    raise _PermissionError("sandbox: path must be str/bytes")
                # resolve symlinks ourselves with bound functions
                if not p.startswith("/"):
                    p = _getcwd() + "/" + p
                todo = [c for c in p.split("/") if c]
                todo.reverse()
                out = []
                hops = 0
                while todo:
                    c = todo.pop()
                    if c == ".":
                        continue
                    if c == "..":
                        if out:
                            out.pop()
                        continue
                    cand = "/" + "/".join(out + [c])
                    try:
                        st = _lstat(cand)
                    except _OSError:
                        out.append(c)
                        continue
                    if (st.st_mode & 0o170000) == 0o120000:
                        hops += 1
                        if hops > 40:
                            raise _PermissionError("sandbox: too many symlinks")
                        tgt = _readlink(cand)
                        if tgt.startswith("/"):
                            out = []
                        parts = [x for x in tgt.split("/") if x]
                        parts.reverse()
                        todo.extend(parts)
                    else:
                        out.append(c)
                real = "/" + "/".join(out)
                inside = real == workdir or real.startswith(workdir + "/")
                if write:
                    if not inside:
                        raise _PermissionError("sandbox: write outside work dir denied: " + real)
                elif not inside and real not in read_ok:
                    raise _PermissionError("sandbox: read outside work dir denied: " + real)
            return
        if event == "import":
            name = args[0]
            if _type(name) is not _str or (name not in allowed_modules and
                                            name.split(".")[0] not in allowed_modules):
                raise _ImportError("sandbox: import of %r is not allowed" % (name,))
            return
        if event == "sys._getframe":
            # ValueError: stdlib callers (namedtuple, Enum, typing) tolerate it
            raise _ValueError("sandbox: sys._getframe is disabled")
        if event == "object.__getattr__":
            if args[1] in frame_attrs:
                raise _PermissionError("sandbox: frame access denied")
            return
        if event == "object.__setattr__" or event == "object.__delattr__":
            obj = args[0]
            if not (_type(obj) is _type or _type.__instancecheck__(_type, obj)):
                raise _PermissionError("sandbox: %s denied" % (event,))
            mod = _type_getattr(obj, "__module__")
            if _type(mod) is not _str or mod in protected_modules:
                raise _PermissionError("sandbox: %s on protected class denied" % (event,))
            return
        if event in deny_exact:
            raise _PermissionError("sandbox: %s denied" % (event,))
        for pre in deny_prefixes:
            if event.startswith(pre):
                raise _PermissionError("sandbox: %s denied" % (event,))

    return _hook


class _Timeout(BaseException):
    pass


class _CpuLimit(BaseException):
    pass


class _Capture:
    """Replacement for sys.stdout/sys.stderr: keeps at most `limit` chars in total."""

    def __init__(self, limit):
        self.limit = limit
        self.used = 0
        self.parts = []
        self.truncated = False

    def write(self, s):
        s = str(s)
        room = self.limit - self.used
        if room > 0:
            piece = s[:room]
            self.parts.append(piece)
            self.used += len(piece)
        if len(s) > max(room, 0):
            self.truncated = True
        return len(s)

    def flush(self):
        pass

    def isatty(self):
        return False

    def take(self):
        s = "".join(self.parts)
        self.parts = []
        s = _clip(s, self.limit)
        if self.truncated:
            s += "\n[output truncated]"
            self.truncated = False
        return s


def _main():
    raw = bytearray()
    while True:
        chunk = os.read(0, 1 << 20)
        if not chunk:
            break
        raw += chunk
    cfg = json.loads(raw)
    del raw, chunk
    devnull = os.open("/dev/null", os.O_RDWR)
    os.dup2(devnull, 0)
    res_fd = os.dup(1)          # private result channel (non-inheritable)
    os.dup2(devnull, 1)         # raw fd 1 writes go nowhere

    def send(obj):
        data = (json.dumps(obj, ensure_ascii=True, allow_nan=False) + "\n").encode()
        view = memoryview(data)
        while view:
            n = os.write(res_fd, view)
            view = view[n:]

    workdir = cfg["workdir"]
    layers = {"process": True, "env_scrubbed": True, "rlimits": False,
              "uid_drop": False, "no_new_privs": False, "netns": False,
              "ipcns": False, "mountns": False, "work_dir_tmpfs": False, "pidns": False,
              "proc_hidden": False,
              "audit_hook": False}

    for m in cfg["modules"]:        # preload the allowlist while we can read the stdlib
        try:
            __import__(m)
        except ImportError:
            pass

    libc = None
    ctypes = None
    try:
        import ctypes
        libc = ctypes.CDLL(None, use_errno=True)
    except Exception:
        libc = None
    is_root = os.geteuid() == 0
    want_ns = cfg["namespaces"]
    drop = is_root and cfg["uid"] is not None
    userns = False  # set when an unprivileged user namespace is in use
    if libc is not None and want_ns and sys.platform.startswith("linux"):
        CLONE_NEWNS, CLONE_NEWIPC, CLONE_NEWUSER = 0x00020000, 0x08000000, 0x10000000
        CLONE_NEWPID, CLONE_NEWNET = 0x20000000, 0x40000000
        mnt = False
        if not is_root:
            # unprivileged user namespace -> private net/ipc/mount/pid namespaces
            uid, gid = os.getuid(), os.getgid()
            if libc.unshare(CLONE_NEWUSER | CLONE_NEWNET | CLONE_NEWIPC | CLONE_NEWNS) == 0:
                try:
                    with open("/proc/self/setgroups", "w") as f:
                        f.write("deny")
                    with open("/proc/self/uid_map", "w") as f:
                        f.write("%d %d 1" % (uid, uid))
                    with open("/proc/self/gid_map", "w") as f:
                        f.write("%d %d 1" % (gid, gid))
                    layers["netns"] = layers["ipcns"] = mnt = userns = True
                except OSError:
                    pass
        else:
            layers["netns"] = libc.unshare(CLONE_NEWNET) == 0
            layers["ipcns"] = libc.unshare(CLONE_NEWIPC) == 0
            mnt = libc.unshare(CLONE_NEWNS) == 0
        if mnt:
            layers["mountns"], layers["work_dir_tmpfs"] = _readonly_root(
                libc, ctypes, workdir, cfg["disk"],
                cfg["uid"] if drop else os.getuid(), cfg["gid"] if drop else os.getgid())
        if layers["mountns"] and libc.unshare(CLONE_NEWPID) == 0:
            layers["pidns"] = True

    if layers["pidns"]:
        pid = os.fork()
        if pid != 0:
            _outer(pid, cfg, libc, ctypes, drop, userns)   # never returns
        # we are PID 1 of the new namespace: mount a private /proc
        MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
        layers["proc_hidden"] = libc.mount(b"proc", b"/proc", b"proc",
                                           MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC,
                                           None) == 0
    os.chdir(workdir)

    # resource limits (soft == hard; CPU hard = soft + 1 so SIGXCPU arrives first)
    R = resource
    cpu = max(1, int(cfg["cpu_seconds"] + 0.999))
    rl = [(R.RLIMIT_CPU, cpu, cpu + 1), (R.RLIMIT_FSIZE, cfg["fsize"], cfg["fsize"]),
          (R.RLIMIT_NOFILE, cfg["nofile"], cfg["nofile"]), (R.RLIMIT_CORE, 0, 0)]
    if hasattr(R, "RLIMIT_NPROC"):
        rl.append((R.RLIMIT_NPROC, cfg["nproc"], cfg["nproc"]))
    ok = True
    for which, soft, hard in rl:
        try:
            R.setrlimit(which, (soft, hard))
        except (ValueError, OSError):
            ok = False
    layers["rlimits"] = ok

    if drop:
        _drop_privileges(cfg["uid"], cfg["gid"])
        layers["uid_drop"] = True
    if userns:
        # capabilities inside our own user namespace: give them all up
        if not _drop_caps(libc, ctypes):
            os._exit(72)
    if libc is not None and sys.platform.startswith("linux"):
        PR_SET_PDEATHSIG, PR_SET_NO_NEW_PRIVS = 1, 38
        layers["no_new_privs"] = libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) == 0
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() == 1 and not layers["pidns"]:
            os._exit(70)  # parent already gone

    # forget ctypes: later "import ctypes" goes through the audit hook again
    libc = None
    ctypes = None
    for name in list(sys.modules):
        if name == "ctypes" or name.startswith("ctypes.") or name == "_ctypes":
            del sys.modules[name]

    # Python 3.11 has no audit event for thread creation: make the entry points
    # unreachable (threads would also count against RLIMIT_NPROC).
    import _thread
    for name in ("start_new_thread", "start_new", "start_joinable_thread"):
        try:
            delattr(_thread, name)
        except AttributeError:
            pass
    del _thread

    # signals
    def on_alarm(signum, frame):
        raise _Timeout()

    def on_xcpu(signum, frame):
        raise _CpuLimit()

    signal.signal(signal.SIGALRM, on_alarm)
    signal.signal(signal.SIGXCPU, on_xcpu)
    if hasattr(signal, "SIGXFSZ"):
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # -> OSError(EFBIG) instead

    cap = _Capture(cfg["max_output"])
    sys.stdout = sys.stderr = cap
    sys.stdin = None
    per_call = cfg["per_call"]

    # memory limit last: everything trusted is loaded by now
    try:
        mem = cfg["memory_bytes"]
        resource.setrlimit(resource.RLIMIT_AS, (mem, mem))
    except (ValueError, OSError):
        layers["rlimits"] = False

    if cfg["audit_hook"]:
        read_ok = frozenset(["/dev/null", "/dev/zero", "/dev/urandom", "/dev/random"])
        sys.addaudithook(_hook_factory(
            os.path.realpath(workdir), read_ok, frozenset(cfg["modules"]),
            ("socket.", "subprocess.", "os.exec", "os.spawn", "os.posix_spawn",
             "os.fork", "os.forkpty", "os.kill", "os.killpg", "os.system", "os.popen",
             "pty.", "ctypes.", "_thread.", "gc.", "sys._current", "sys.settrace",
             "sys.setprofile", "resource.", "code.__new__", "marshal.", "os.link",
             "os.chdir", "os.fchdir", "os.chroot", "os.setns", "os.unshare",
             "os.putenv", "os.unsetenv", "signal.pthread_kill", "webbrowser.",
             "urllib.", "http.", "ftplib.", "smtplib.", "poplib.", "imaplib.",
             "telnetlib.", "nntplib.", "mmap.", "winreg.", "msvcrt.",
             "cpython._PySys_ClearAuditHooks",
             "sys.addaudithook", "os.startfile", "os.add_dll_directory",
             "pickle.find_class", "shelve.", "dbm.", "sqlite3."),
            frozenset(["function.__new__"]),
            frozenset(["tb_frame", "gi_frame", "cr_frame", "ag_frame", "f_back",
                       "f_globals", "f_locals", "f_builtins", "gi_code", "cr_code",
                       "ag_code", "f_code"]),
            frozenset(["__main__", "builtins", "sys", "os", "posix", "json",
                       "json.encoder", "json.decoder", "signal", "resource"]),
            type, str, bytes, int, os.lstat, os.readlink, os.getcwd,
            PermissionError, ImportError, ValueError, OSError, type.__getattribute__))
        layers["audit_hook"] = True

    send({"stage": "loading", "layers": layers})
    # ---- untrusted code from here on ----
    g = {"__name__": "__scorer__", "__builtins__": __builtins__}
    err = None
    signal.setitimer(signal.ITIMER_REAL, per_call)
    try:
        try:
            exec(compile(cfg["source"], "<scorer>", "exec"), g)
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
    except _Timeout:
        err = ("timeout", "timeout: loading the program exceeded %gs" % per_call)
    except _CpuLimit:
        err = ("cpu", "cpu limit exceeded while loading the program")
    except MemoryError:
        err = ("memory", "memory limit: MemoryError while loading the program")
    except SyntaxError as e:
        err = ("load", "SyntaxError: %s (line %s)" % (e.msg, e.lineno))
    except BaseException as e:
        err = ("load", "error while loading the program: " + _fmt_exc(e))
    if err is None:
        score = g.get("score")
        if not callable(score):
            err = ("load", "program does not define a callable score(observation, action, task)")
    if err is not None:
        send({"stage": "load_error", "kind": err[0], "e": err[1], "o": cap.take()})
        os._exit(0)
    send({"stage": "ready"})
    del g
    start = cfg["start"]
    for k, call in enumerate(cfg["calls"]):
        i = start + k
        kind, val, msg, fatal = "ok", None, None, False
        try:
            signal.setitimer(signal.ITIMER_REAL, per_call)
            try:
                v = score(**call)
                if isinstance(v, (int, float)):
                    try:
                        f = float(v)
                    except OverflowError:
                        f = float("inf")
                    if f != f or f in (float("inf"), float("-inf")):
                        kind, msg = "bad_return", "returned non-finite number: %s" % _safe_repr(v)
                    else:
                        val = f
                else:
                    kind, msg = "bad_return", "returned non-number: " + _safe_repr(v)
            finally:
                signal.setitimer(signal.ITIMER_REAL, 0)
        except _Timeout:
            kind, msg = "timeout", "timeout: call exceeded %gs" % per_call
        except _CpuLimit:
            kind, msg, fatal = "cpu", "cpu limit exceeded (%ss CPU per process)" % cpu, True
        except MemoryError:
            kind, msg = "memory", "memory limit: MemoryError"
        except RecursionError as e:
            kind, msg = "exception", _fmt_exc(e)
        except BaseException as e:
            kind, msg = "exception", _fmt_exc(e)
        frame = {"i": i, "o": cap.take()}
        if kind == "ok":
            frame["v"] = val
        else:
            frame["kind"] = kind
            frame["e"] = msg
        send(frame)
        if fatal:
            os._exit(0)
    send({"stage": "done"})
    os._exit(0)


def _safe_repr(v):
    signal.setitimer(signal.ITIMER_REAL, 1.0)
    try:
        r = repr(v)
        if not isinstance(r, str):
            r = "<unrepresentable>"
    except BaseException:
        r = "<unrepresentable %s>" % type(v).__name__
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
    return r[:200]


def _fmt_exc(e):
    signal.setitimer(signal.ITIMER_REAL, 1.0)
    try:
        name = type(e).__name__
        if not isinstance(name, str):
            name = "Exception"
        try:
            m = str(e)
            if not isinstance(m, str):
                m = ""
        except BaseException:
            m = "<unprintable>"
        s = name + (": " + m if m else "")
    except BaseException:
        s = "Exception"
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
    return s[:500]


def _clip(s, limit):
    # keep the JSON-escaped size (up to 12 bytes per char) within the frame budget
    if len(s) > limit:
        s = s[:limit]
    while s and len(json.dumps(s)) > limit + 64:
        s = s[: len(s) // 2]
    return s


def _drop_privileges(uid, gid):
    os.setgroups([])
    if hasattr(os, "setresuid"):
        os.setresgid(gid, gid, gid)
        os.setresuid(uid, uid, uid)
    else:  # macOS
        os.setgid(gid)
        os.setuid(uid)
    try:
        os.setuid(0)
    except PermissionError:
        return
    os._exit(71)  # could regain root: refuse to run untrusted code


def _drop_caps(libc, ctypes):
    class Hdr(ctypes.Structure):
        _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]

    class Data(ctypes.Structure):
        _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32),
                    ("inheritable", ctypes.c_uint32)]

    hdr = Hdr(0x20080522, 0)  # _LINUX_CAPABILITY_VERSION_3
    data = (Data * 2)()
    if libc.capset(ctypes.byref(hdr), data) != 0:
        return False
    # verify with capget, not /proc: the PID-namespace child may have mounted a new
    # /proc in our shared mount namespace already (where /proc/self is not us)
    hdr = Hdr(0x20080522, 0)
    got = (Data * 2)()
    if libc.capget(ctypes.byref(hdr), got) != 0:
        return False
    return all(d.effective == 0 and d.permitted == 0 for d in got)


def _readonly_root(libc, ctypes, workdir, disk_bytes, uid, gid):
    """Private mount namespace: "/" recursively read-only + nosuid; the work dir is a
    fresh size-limited tmpfs (or, failing that, a rw bind mount of itself); empty
    read-only tmpfs over /root and /home (unless the work dir is inside).
    Returns (ok, work_dir_is_tmpfs)."""
    MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
    MS_BIND, MS_REC, MS_PRIVATE = 4096, 0x4000, 1 << 18
    w = workdir.encode()
    if libc.mount(None, b"/", None, MS_REC | MS_PRIVATE, None) != 0:
        return False, False
    for d in ("/root", "/home"):
        if os.path.isdir(d) and not (workdir + "/").startswith(d + "/"):
            libc.mount(b"tmpfs", d.encode(), b"tmpfs",
                       MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC, b"size=4k,mode=755")
    opts = "size=%d,nr_inodes=4096,mode=0700,uid=%d,gid=%d" % (disk_bytes, uid, gid)
    tmpfs = libc.mount(b"tmpfs", w, b"tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC,
                       opts.encode()) == 0
    if not tmpfs and libc.mount(w, w, None, MS_BIND | MS_REC, None) != 0:
        return False, False

    class MountAttr(ctypes.Structure):
        _fields_ = [("attr_set", ctypes.c_uint64), ("attr_clr", ctypes.c_uint64),
                    ("propagation", ctypes.c_uint64), ("userns_fd", ctypes.c_uint64)]

    SYS_mount_setattr = 442  # same number on x86_64 and aarch64 (generic table)
    AT_FDCWD, AT_RECURSIVE, RDONLY, NOSUID = -100, 0x8000, 0x1, 0x2
    a = MountAttr(RDONLY | NOSUID, 0, 0, 0)
    if libc.syscall(ctypes.c_long(SYS_mount_setattr), ctypes.c_int(AT_FDCWD),
                    ctypes.c_char_p(b"/"), ctypes.c_uint(AT_RECURSIVE),
                    ctypes.byref(a), ctypes.c_size_t(ctypes.sizeof(a))) != 0:
        return False, False
    b = MountAttr(NOSUID, RDONLY, 0, 0)
    if libc.syscall(ctypes.c_long(SYS_mount_setattr), ctypes.c_int(AT_FDCWD),
                    ctypes.c_char_p(w), ctypes.c_uint(0),
                    ctypes.byref(b), ctypes.c_size_t(ctypes.sizeof(b))) != 0:
        return False, False
    return True, tmpfs


def _outer(pid, cfg, libc, ctypes, drop, userns):
    """Parent side of the PID-namespace fork: drop privileges, wait, relay status."""
    try:
        if drop:
            _drop_privileges(cfg["uid"], cfg["gid"])
        if userns and not _drop_caps(libc, ctypes):
            os._exit(72)
        if libc is not None:
            libc.prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG
        while True:
            try:
                _, status = os.waitpid(pid, 0)
                break
            except InterruptedError:
                continue
        if os.WIFSIGNALED(status):
            os._exit(128 + os.WTERMSIG(status))
        os._exit(os.WEXITSTATUS(status) if os.WIFEXITED(status) else 1)
    except BaseException:
        os._exit(1)


_main()
'''


def _parent_tag() -> str:
    """Extra argv item naming the parent pid (lets tools find this parent's children)."""
    return f"qval-sandbox-parent={os.getpid()}"


def _child_env() -> dict[str, str]:
    # Nothing from the parent environment: no API keys, tokens, proxies, PYTHON*.
    return {"PATH": "/usr/bin:/bin", "LC_ALL": "C.UTF-8", "HOME": "/nonexistent"}


def _want_uid_drop() -> bool:
    return hasattr(os, "geteuid") and os.geteuid() == 0


def _kill_group(proc: subprocess.Popen) -> None:
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


class _ChildRun:
    """One child process evaluating calls[start:]."""

    def __init__(self, source, calls, start, limits, total_deadline, modules, audit_hook,
                 namespaces):
        self.results: dict[int, Result] = {}
        self.layers: dict[str, bool] = {}
        self.load_error: Result | None = None
        self.stop_reason: str | None = None  # timeout|total|output|protocol|None
        self.loaded = False
        self.done = False
        self.stderr = b""
        self.returncode: int | None = None
        self.cpu_used = 0.0
        self.next_index = start
        self._writer: threading.Thread | None = None
        self._run(source, calls, start, limits, total_deadline, modules, audit_hook,
                  namespaces)

    def _run(self, source, calls, start, limits, total_deadline, modules, audit_hook,
             namespaces):
        drop = _want_uid_drop()
        workdir = tempfile.mkdtemp(prefix="qval-sbx-")
        workdir = os.path.realpath(workdir)
        try:
            if drop:
                os.chown(workdir, SANDBOX_UID, SANDBOX_GID)
            payload = json.dumps({
                "source": source, "calls": calls, "start": start, "workdir": workdir,
                "modules": list(modules), "audit_hook": audit_hook,
                "namespaces": namespaces,
                "uid": SANDBOX_UID if drop else None, "gid": SANDBOX_GID if drop else None,
                "cpu_seconds": limits.cpu_seconds,
                "memory_bytes": int(limits.memory_mb) * 1024 * 1024,
                "per_call": limits.wall_seconds_per_call,
                "max_output": limits.max_output_bytes,
                "nproc": limits.max_processes, "nofile": limits.max_open_files,
                "fsize": limits.max_file_bytes, "disk": limits.max_disk_bytes,
            }).encode()
            t0 = time.monotonic()
            proc = subprocess.Popen(
                [sys.executable, "-I", "-S", "-B", "-c", _BOOTSTRAP, _parent_tag()],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                env=_child_env(), cwd=workdir, start_new_session=True, close_fds=True)
            try:
                self._talk(proc, payload, calls, start, limits, total_deadline, t0)
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

    def _reap(self, proc):
        try:
            _, status, ru = os.wait4(proc.pid, 0)
            self.cpu_used = ru.ru_utime + ru.ru_stime
            self.returncode = os.waitstatus_to_exitcode(status)
            proc.returncode = self.returncode
        except ChildProcessError:
            proc.wait()
            self.returncode = proc.returncode

    def _talk(self, proc, payload, calls, start, limits, total_deadline, t0):
        def feed():
            try:
                proc.stdin.write(payload)
                proc.stdin.close()
            except (BrokenPipeError, OSError, ValueError):
                pass

        writer = threading.Thread(target=feed, daemon=True)
        writer.start()
        self._writer = writer
        n = len(calls)
        budget = limits.max_output_bytes + _FRAME_OVERHEAD * (n + 4) + 65536
        line_cap = limits.max_output_bytes + _FRAME_OVERHEAD + 65536
        per_call = limits.wall_seconds_per_call
        deadline = t0 + _STARTUP_ALLOWANCE_S
        received = 0
        buf = bytearray()
        err = bytearray()
        expect = start
        sel = selectors.DefaultSelector()
        sel.register(proc.stdout, selectors.EVENT_READ, "out")
        sel.register(proc.stderr, selectors.EVENT_READ, "err")
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
            while open_streams and not self.done:
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
                    data = os.read(key.fileobj.fileno(), 65536)
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
                    received += len(data)
                    if received > budget:
                        self.stop_reason = "output"
                        return
                    buf += data
                    while True:
                        nl = buf.find(b"\n")
                        if nl < 0:
                            if len(buf) > line_cap:
                                self.stop_reason = "output"
                                return
                            break
                        line = bytes(buf[:nl])
                        del buf[: nl + 1]
                        if len(line) > line_cap:
                            self.stop_reason = "output"
                            return
                        # Everything the child sends is hostile input: a nesting bomb ('[' * 60000) raises
                        # RecursionError, a 500-digit number OverflowError in isfinite(). Either is a protocol
                        # violation of this program only, never an exception in the parent.
                        try:
                            msg = json.loads(line)
                            status = self._handle(msg, expect, start + n)
                        except (ValueError, RecursionError, OverflowError, TypeError):
                            self.stop_reason = "protocol"
                            return
                        if status == "bad":
                            self.stop_reason = "protocol"
                            return
                        if status == "call":
                            expect += 1
                        if status in ("call", "loading", "ready"):
                            deadline = time.monotonic() + per_call + _GRACE_S
                        if self.done:
                            return
        finally:
            sel.close()
            if pidfd is not None:
                os.close(pidfd)
            self.stderr = bytes(err)
            self.next_index = expect

    def _handle(self, msg, expect, end) -> str:
        if not isinstance(msg, dict):
            return "bad"
        stage = msg.get("stage")
        if stage == "loading":
            layers = msg.get("layers")
            if not isinstance(layers, dict):
                return "bad"
            self.layers = {str(k): bool(v) for k, v in layers.items()}
            return "loading"
        if stage == "ready":
            self.loaded = True
            return "ready"
        if stage == "load_error":
            kind = msg.get("kind")
            e = msg.get("e")
            if kind not in ("load", "timeout", "memory", "cpu") or not isinstance(e, str):
                return "bad"
            self.load_error = Result(None, e[:1000], kind, _str_or_empty(msg.get("o")))
            self.done = True
            return "load_error"
        if stage == "done":
            if expect != end:
                return "bad"
            self.done = True
            return "done"
        if stage is not None or not self.loaded:
            return "bad"
        i = msg.get("i")
        if type(i) is not int or i != expect or expect >= end:
            return "bad"
        out = _str_or_empty(msg.get("o"))
        if "v" in msg:
            v = msg["v"]
            if type(v) not in (int, float) or not math.isfinite(v):
                return "bad"
            self.results[i] = Result(float(v), None, "ok", out)
        else:
            e, kind = msg.get("e"), msg.get("kind")
            if not isinstance(e, str) or kind not in (
                    "exception", "bad_return", "timeout", "memory", "cpu"):
                return "bad"
            self.results[i] = Result(None, e[:1000], kind, out)
        return "call"


def _has_exited(pid: int) -> bool:
    """True once ``pid`` (our child) has exited; does not reap it."""
    try:
        info = os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
    except (ChildProcessError, AttributeError, OSError):
        return False
    return info is not None


def _str_or_empty(x) -> str:
    return x if isinstance(x, str) else ""


def _death_result(run: _ChildRun, limits: Limits) -> Result:
    """Why did the child stop before answering the current call?"""
    reason = run.stop_reason
    if reason == "timeout":
        return Result(None, f"timeout: call exceeded {limits.wall_seconds_per_call:g}s (killed)",
                      "timeout")
    if reason == "total":
        return Result(None, f"timeout: total wall limit of {limits.total_wall_seconds:g}s "
                      "exceeded", "timeout")
    if reason == "output":
        return Result(None, f"output limit exceeded (max_output_bytes={limits.max_output_bytes})",
                      "output")
    if reason == "protocol":
        return Result(None, "crashed: invalid message on the result channel", "crash")
    rc = run.returncode
    if run.cpu_used >= max(1, math.ceil(limits.cpu_seconds)) - 0.05:
        return Result(None, f"cpu limit exceeded ({limits.cpu_seconds:g}s CPU per process)",
                      "cpu")
    sig = None
    if rc is not None and rc < 0:
        sig = -rc
    elif rc is not None and rc > 128:
        sig = rc - 128  # relayed through the PID-namespace parent
    tail = run.stderr.decode("utf-8", "replace").strip()[-300:]
    if b"MemoryError" in run.stderr or b"Cannot allocate memory" in run.stderr:
        return Result(None, f"memory limit: process died ({tail})", "memory")
    if sig is not None:
        try:
            name = signal.Signals(sig).name
        except ValueError:
            name = str(sig)
        return Result(None, "crashed: killed by {}{}".format(name, (": " + tail) if tail else ""),
                      "crash")
    return Result(None, "crashed: exit code {}{}".format(rc, (": " + tail) if tail else ""),
                  "crash")


def _skipped_total(limits: Limits) -> Result:
    return Result(None, f"skipped: total wall limit of {limits.total_wall_seconds:g}s exceeded",
                  "skipped")


def run_program(source: str, calls: list[dict[str, Any]], limits: Limits = Limits(), *,
                modules: tuple[str, ...] = ALLOWED_MODULES,
                _audit_hook: bool = True, _namespaces: bool = True) -> list[Result]:
    """Run ``source`` once in a sandboxed child and return ``score(**call)`` per call.

    Never raises for anything the untrusted program does; every call gets a
    :class:`Result`.  A call that times out / crashes the child costs a fresh child
    for the remaining calls (at most ``limits.max_restarts`` times).
    ``_audit_hook`` / ``_namespaces`` exist only so tests can check the kernel layers
    on their own; leave them on.
    """
    if not isinstance(source, str):
        raise TypeError("source must be str")
    for f in ("cpu_seconds", "memory_mb", "wall_seconds_per_call", "total_wall_seconds",
              "max_output_bytes", "max_processes", "max_open_files", "max_file_bytes",
              "max_disk_bytes"):
        if not getattr(limits, f) > 0:
            raise ValueError(f"Limits.{f} must be > 0")
    if limits.max_restarts < 0:
        raise ValueError("Limits.max_restarts must be >= 0")
    calls = [dict(c) for c in calls]  # must be JSON-serialisable (TypeError otherwise)
    n = len(calls)
    results: list[Result | None] = [None] * n
    if n == 0:
        return []
    total_deadline = time.monotonic() + limits.total_wall_seconds
    idx = 0
    restarts = 0
    while idx < n:
        if time.monotonic() >= total_deadline:
            for j in range(idx, n):
                results[j] = _skipped_total(limits)
            break
        run = _ChildRun(source, calls[idx:], idx, limits, total_deadline, modules,
                        _audit_hook, _namespaces)
        for i, r in run.results.items():
            results[i] = r
        if run.load_error is not None:
            for j in range(idx, n):
                results[j] = dataclasses.replace(run.load_error)
            break
        if not run.loaded:
            if run.stop_reason == "timeout" and run.layers:
                r = Result(None, "timeout: loading the program exceeded "
                           f"{limits.wall_seconds_per_call:g}s (killed)", "timeout")
            elif run.stop_reason == "total":
                r = _death_result(run, limits)
            else:
                r = _death_result(run, limits)
                r.error = "load failed: " + r.error
            for j in range(idx, n):
                results[j] = dataclasses.replace(r)
            break
        nxt = run.next_index
        if nxt >= n:
            break
        if run.results.get(nxt - 1) is not None and run.results[nxt - 1].kind == "cpu":
            # child reported its own CPU exhaustion and exited; continue afresh
            idx = nxt
        else:
            results[nxt] = _death_result(run, limits)
            idx = nxt + 1
            if results[nxt].kind == "timeout" and run.stop_reason == "total":
                for j in range(idx, n):
                    results[j] = _skipped_total(limits)
                break
        restarts += 1
        if idx < n and restarts > limits.max_restarts:
            for j in range(idx, n):
                results[j] = Result(
                    None, f"skipped: child restarted {restarts - 1} times (max_restarts)",
                    "skipped")
            break
    return [r if r is not None else Result(None, "crashed: no result", "crash")
            for r in results]


_REPORT_CACHE: dict[str, Any] | None = None


def sandbox_report(refresh: bool = False) -> dict[str, Any]:
    """Which defense layers are active on this machine (runs a trivial program)."""
    global _REPORT_CACHE
    if _REPORT_CACHE is not None and not refresh:
        return dict(_REPORT_CACHE)
    src = "def score(observation, action, task):\n    return 1.0\n"
    t0 = time.monotonic()
    drop = _want_uid_drop()
    total = time.monotonic() + 30
    run = _ChildRun(src, [{"observation": "", "action": "", "task": ""}], 0, Limits(),
                    total, ALLOWED_MODULES, True, True)
    report: dict[str, Any] = dict(run.layers)
    report["working"] = bool(run.results.get(0) and run.results[0].value == 1.0)
    report["running_as_root"] = drop
    report["platform"] = sys.platform
    report["python"] = sys.version.split()[0]
    report["startup_plus_one_call_ms"] = round((time.monotonic() - t0) * 1000, 1)
    _REPORT_CACHE = report
    return dict(report)


if __name__ == "__main__":  # pragma: no cover
    print(json.dumps(sandbox_report(), indent=2))
