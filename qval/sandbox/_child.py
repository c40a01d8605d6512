"""The sandbox child: runs one untrusted scoring program and answers its calls.

The parent starts this file as ``python -I -S -B <path of this file> <marker> <parent tag>``
with a JSON config on stdin.  ``-I -S`` means no site-packages and no script directory on
``sys.path``: this module must import only the standard library, never qval.  It is also
importable in-process (``qval.sandbox._child``) so tests and coverage see its pure parts;
``_main`` runs only when it is ``__main__``.

Everything before "untrusted code from here on" in ``_main`` is trusted.  The order of the
steps is part of the defence: modules are preloaded while the stdlib is still readable,
namespaces are set up while privileges are held, the memory limit comes after everything
trusted is loaded, and the audit hook is installed before the untrusted source is compiled.

Wire protocol (one JSON object per line on the private result channel, the original fd 1):
``{"stage": "loading", "layers": {...}}``, then ``{"stage": "ready"}`` or
``{"stage": "load_error", "kind", "e", "o"}``, then per call ``{"i", "o", "v"}`` or
``{"i", "o", "kind", "e"}``, then ``{"stage": "done"}``.  The parent validates all of it.
"""

# Only modules the bootstrap imported before this file existed: each one imported here is
# importable by untrusted code despite the allow-list (the audit hook sees no import event
# for a module already in sys.modules).  So no typing/__future__ at run time.
import json
import os
import resource
import signal
import sys

TYPE_CHECKING = False  # typing is imported for mypy only, never in the child
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any, NoReturn

    Config = dict[str, Any]

# The audit-hook policy (deny lists, _hook_factory, make_hook) is in _child_hook.py next to
# this file.  It is not imported: this directory is not on sys.path (-I), and a sys.modules
# entry would make it importable by untrusted code.  Its source is read, compiled and run
# into a private namespace here, at the very start, before any isolation step can hide the
# file (tmpfs over /root and /home, the uid drop); that adds no module to sys.modules.
# The parent checks the hash of every file in CHILD_FILES before each child start.
HOOK_FILE = "_child_hook.py"


def _load_sibling(name: str) -> "dict[str, Any]":
    """Run the file ``name`` next to this one in a fresh namespace and return that namespace."""
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), name)
    with open(path, "rb") as f:
        source = f.read()
    ns: dict[str, Any] = {"__name__": name[:-3], "__file__": path}
    exec(compile(source, path, "exec"), ns)  # noqa: S102 - trusted, hash-checked by the parent
    return ns


if TYPE_CHECKING:
    from qval.sandbox._child_hook import make_hook
else:
    make_hook = _load_sibling(HOOK_FILE)["make_hook"]


class _Timeout(BaseException):
    """Raised by SIGALRM: a BaseException so that `except Exception` in untrusted code
    cannot swallow it."""


class _CpuLimit(BaseException):
    """Raised by SIGXCPU (soft RLIMIT_CPU): the child reports and exits before SIGKILL."""


class _Capture:
    """Replacement for sys.stdout/sys.stderr: keeps at most `limit` chars in total."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0
        self.parts: list[str] = []
        self.truncated = False

    def write(self, s: object) -> int:
        s = str(s)
        room = self.limit - self.used
        if room > 0:
            piece = s[:room]
            self.parts.append(piece)
            self.used += len(piece)
        if len(s) > max(room, 0):
            self.truncated = True
        return len(s)

    def flush(self) -> None:
        pass

    def isatty(self) -> bool:
        return False

    def take(self) -> str:
        s = "".join(self.parts)
        self.parts = []
        s = _clip(s, self.limit)
        if self.truncated:
            s += "\n[output truncated]"
            self.truncated = False
        return s


def _read_config() -> "Config":
    raw = bytearray()
    while True:
        chunk = os.read(0, 1 << 20)
        if not chunk:
            break
        raw += chunk
    cfg: Config = json.loads(raw)
    return cfg


def _open_channel() -> "Callable[[dict[str, Any]], None]":
    """Move the result channel off fd 1 (raw writes to fd 1 then go nowhere); return send()."""
    devnull = os.open("/dev/null", os.O_RDWR)
    os.dup2(devnull, 0)
    res_fd = os.dup(1)  # private result channel (non-inheritable)
    os.dup2(devnull, 1)  # raw fd 1 writes go nowhere

    def send(obj: "dict[str, Any]") -> None:
        data = (json.dumps(obj, ensure_ascii=True, allow_nan=False) + "\n").encode()
        view = memoryview(data)
        while view:
            n = os.write(res_fd, view)
            view = view[n:]

    return send


def _load_libc() -> "tuple[Any, Any]":
    """(libc, ctypes module), or (None, None); ctypes is typed Any: it is only ever held
    in locals so that it can be forgotten before untrusted code runs."""
    try:
        import ctypes

        return ctypes.CDLL(None, use_errno=True), ctypes
    except Exception:  # noqa: BLE001 - no ctypes (or no libc): the kernel layers are just off
        return None, None


def _isolate(cfg: "Config", layers: "dict[str, bool]", libc: "Any", ctypes: "Any", drop: bool) -> bool:
    """Private net/ipc/mount/pid namespaces where allowed; fills ``layers``.

    Returns whether an unprivileged user namespace is in use (then all capabilities in
    it must be dropped later)."""
    userns = False
    if libc is None or not cfg["namespaces"] or not sys.platform.startswith("linux"):
        return userns
    CLONE_NEWNS, CLONE_NEWIPC, CLONE_NEWUSER = 0x00020000, 0x08000000, 0x10000000
    CLONE_NEWPID, CLONE_NEWNET = 0x20000000, 0x40000000
    workdir = cfg["workdir"]
    mnt = False
    if os.geteuid() != 0:
        # unprivileged user namespace -> private net/ipc/mount/pid namespaces
        uid, gid = os.getuid(), os.getgid()
        if libc.unshare(CLONE_NEWUSER | CLONE_NEWNET | CLONE_NEWIPC | CLONE_NEWNS) == 0:
            try:
                with open("/proc/self/setgroups", "w") as f:
                    f.write("deny")
                with open("/proc/self/uid_map", "w") as f:
                    f.write(f"{uid:d} {uid:d} 1")
                with open("/proc/self/gid_map", "w") as f:
                    f.write(f"{gid:d} {gid:d} 1")
                layers["netns"] = layers["ipcns"] = mnt = userns = True
            except OSError:
                pass
    else:
        layers["netns"] = libc.unshare(CLONE_NEWNET) == 0
        layers["ipcns"] = libc.unshare(CLONE_NEWIPC) == 0
        mnt = libc.unshare(CLONE_NEWNS) == 0
    if mnt:
        layers["mountns"], layers["work_dir_tmpfs"] = _readonly_root(
            libc, ctypes, workdir, cfg["disk"], cfg["uid"] if drop else os.getuid(), cfg["gid"] if drop else os.getgid()
        )
    if layers["mountns"] and libc.unshare(CLONE_NEWPID) == 0:
        layers["pidns"] = True
    return userns


def _set_rlimits(cfg: "Config") -> "tuple[bool, int]":
    """All rlimits but RLIMIT_AS (set last); soft == hard so untrusted code cannot raise
    them, except CPU: hard = soft + 1 so SIGXCPU arrives before SIGKILL.
    Returns (all set, CPU seconds)."""
    R = resource
    cpu = max(1, int(cfg["cpu_seconds"] + 0.999))
    rl = [
        (R.RLIMIT_CPU, cpu, cpu + 1),
        (R.RLIMIT_FSIZE, cfg["fsize"], cfg["fsize"]),
        (R.RLIMIT_NOFILE, cfg["nofile"], cfg["nofile"]),
        (R.RLIMIT_CORE, 0, 0),
    ]
    if hasattr(R, "RLIMIT_NPROC"):
        rl.append((R.RLIMIT_NPROC, cfg["nproc"], cfg["nproc"]))
    ok = True
    for which, soft, hard in rl:
        try:
            R.setrlimit(which, (soft, hard))
        except (ValueError, OSError):
            ok = False
    return ok, cpu


def _forget_ctypes_and_threads() -> None:
    # forget ctypes: later "import ctypes" goes through the audit hook again
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


def _main() -> "NoReturn":
    cfg = _read_config()
    send = _open_channel()

    workdir = cfg["workdir"]
    layers = {
        "process": True,
        "env_scrubbed": True,
        "rlimits": False,
        "uid_drop": False,
        "no_new_privs": False,
        "netns": False,
        "ipcns": False,
        "mountns": False,
        "work_dir_tmpfs": False,
        "pidns": False,
        "proc_hidden": False,
        "audit_hook": False,
    }

    for m in cfg["modules"]:  # preload the allowlist while we can read the stdlib
        try:
            __import__(m)
        except ImportError:
            pass

    libc, ctypes = _load_libc()
    drop = os.geteuid() == 0 and cfg["uid"] is not None
    userns = _isolate(cfg, layers, libc, ctypes, drop)

    if layers["pidns"]:
        pid = os.fork()
        if pid != 0:
            _outer(pid, cfg, libc, ctypes, drop, userns)  # never returns
        # we are PID 1 of the new namespace: mount a private /proc
        MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
        layers["proc_hidden"] = (
            libc.mount(b"proc", b"/proc", b"proc", MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC, None) == 0
        )
    os.chdir(workdir)

    layers["rlimits"], cpu = _set_rlimits(cfg)

    if drop:
        _drop_privileges(cfg["uid"], cfg["gid"])
        layers["uid_drop"] = True
    # capabilities inside our own user namespace: give them all up
    if userns and not _drop_caps(libc, ctypes):
        os._exit(72)
    if libc is not None and sys.platform.startswith("linux"):
        PR_SET_PDEATHSIG, PR_SET_NO_NEW_PRIVS = 1, 38
        layers["no_new_privs"] = libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) == 0
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() == 1 and not layers["pidns"]:
            os._exit(70)  # parent already gone

    libc = ctypes = None  # no reference to ctypes survives in this frame
    _forget_ctypes_and_threads()

    def on_alarm(signum: int, frame: object) -> None:
        raise _Timeout()

    def on_xcpu(signum: int, frame: object) -> None:
        raise _CpuLimit()

    signal.signal(signal.SIGALRM, on_alarm)
    signal.signal(signal.SIGXCPU, on_xcpu)
    if hasattr(signal, "SIGXFSZ"):
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # -> OSError(EFBIG) instead

    cap = _Capture(cfg["max_output"])
    # print() in untrusted code lands in the capped buffer, never on the result channel
    sys.stdout = sys.stderr = cap  # type: ignore[assignment]
    sys.stdin = None  # type: ignore[assignment]
    per_call = cfg["per_call"]

    # memory limit last: everything trusted is loaded by now
    try:
        mem = cfg["memory_bytes"]
        resource.setrlimit(resource.RLIMIT_AS, (mem, mem))
    except (ValueError, OSError):
        layers["rlimits"] = False

    if cfg["audit_hook"]:
        sys.addaudithook(make_hook(workdir, cfg["modules"]))
        layers["audit_hook"] = True

    send({"stage": "loading", "layers": layers})
    # ---- untrusted code from here on ----
    _serve(cfg, send, cap, per_call, cpu)


def _serve(
    cfg: "Config", send: "Callable[[dict[str, Any]], None]", cap: _Capture, per_call: float, cpu: int
) -> "NoReturn":
    """Load the untrusted source, then answer every call; exits the process."""
    g = {"__name__": "__scorer__", "__builtins__": __builtins__}
    err = None
    signal.setitimer(signal.ITIMER_REAL, per_call)
    try:
        try:
            exec(compile(cfg["source"], "<scorer>", "exec"), g)  # noqa: S102 - the sandboxed program
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
    except _Timeout:
        err = ("timeout", f"timeout: loading the program exceeded {per_call:g}s")
    except _CpuLimit:
        err = ("cpu", "cpu limit exceeded while loading the program")
    except MemoryError:
        err = ("memory", "memory limit: MemoryError while loading the program")
    except SyntaxError as e:
        err = ("load", f"SyntaxError: {e.msg} (line {e.lineno})")
    except BaseException as e:  # noqa: BLE001 - whatever the program raises is its load error
        err = ("load", "error while loading the program: " + _fmt_exc(e))
    score: Any = None
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
                    # f != f: NaN, without importing math (it would become importable)
                    if f != f or f in (float("inf"), float("-inf")):  # noqa: PLR0124
                        kind, msg = "bad_return", f"returned non-finite number: {_safe_repr(v)}"
                    else:
                        val = f
                else:
                    kind, msg = "bad_return", "returned non-number: " + _safe_repr(v)
            finally:
                signal.setitimer(signal.ITIMER_REAL, 0)
        except _Timeout:
            kind, msg = "timeout", f"timeout: call exceeded {per_call:g}s"
        except _CpuLimit:
            kind, msg, fatal = "cpu", f"cpu limit exceeded ({cpu}s CPU per process)", True
        except MemoryError:
            kind, msg = "memory", "memory limit: MemoryError"
        except RecursionError as e:
            kind, msg = "exception", _fmt_exc(e)
        except BaseException as e:  # noqa: BLE001 - any exception is this call's error
            kind, msg = "exception", _fmt_exc(e)
        frame: dict[str, Any] = {"i": i, "o": cap.take()}
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


def _safe_repr(v: object) -> str:
    # repr() of an untrusted object is untrusted code: under its own 1 s timer
    signal.setitimer(signal.ITIMER_REAL, 1.0)
    try:
        r = repr(v)
        if not isinstance(r, str):
            r = "<unrepresentable>"
    except BaseException:  # noqa: BLE001 - including _Timeout from a looping __repr__
        r = f"<unrepresentable {type(v).__name__}>"
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
    return r[:200]


def _fmt_exc(e: BaseException) -> str:
    # an untrusted exception's type name and str() are untrusted code too
    signal.setitimer(signal.ITIMER_REAL, 1.0)
    try:
        name = type(e).__name__
        if not isinstance(name, str):
            name = "Exception"
        try:
            m = str(e)
            if not isinstance(m, str):
                m = ""
        except BaseException:  # noqa: BLE001 - including _Timeout from a looping __str__
            m = "<unprintable>"
        s = name + (": " + m if m else "")
    except BaseException:  # noqa: BLE001 - the message must never fail
        s = "Exception"
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
    return s[:500]


def _clip(s: str, limit: int) -> str:
    # keep the JSON-escaped size (up to 12 bytes per char) within the frame budget
    if len(s) > limit:
        s = s[:limit]
    while s and len(json.dumps(s)) > limit + 64:
        s = s[: len(s) // 2]
    return s


def _drop_privileges(uid: int, gid: int) -> None:
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


def _drop_caps(libc: "Any", ctypes: "Any") -> bool:
    class Hdr(ctypes.Structure):  # type: ignore[misc]
        _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]  # noqa: RUF012

    class Data(ctypes.Structure):  # type: ignore[misc]
        _fields_ = [
            ("effective", ctypes.c_uint32),
            ("permitted", ctypes.c_uint32),  # noqa: RUF012
            ("inheritable", ctypes.c_uint32),
        ]

    hdr = Hdr(0x20080522, 0)  # _LINUX_CAPABILITY_VERSION_3
    data = (Data * 2)()  # type: ignore[operator]  # a ctypes array type: class * length
    if libc.capset(ctypes.byref(hdr), data) != 0:
        return False
    # verify with capget, not /proc: the PID-namespace child may have mounted a new
    # /proc in our shared mount namespace already (where /proc/self is not us)
    hdr = Hdr(0x20080522, 0)
    got = (Data * 2)()  # type: ignore[operator]
    if libc.capget(ctypes.byref(hdr), got) != 0:
        return False
    return all(d.effective == 0 and d.permitted == 0 for d in got)


def _readonly_root(
    libc: "Any", ctypes: "Any", workdir: str, disk_bytes: int, uid: int, gid: int
) -> "tuple[bool, bool]":
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
            libc.mount(
                b"tmpfs", d.encode(), b"tmpfs", MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC, b"size=4k,mode=755"
            )
    opts = f"size={int(disk_bytes)},nr_inodes=4096,mode=0700,uid={uid:d},gid={gid:d}"
    tmpfs: bool = libc.mount(b"tmpfs", w, b"tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, opts.encode()) == 0
    if not tmpfs and libc.mount(w, w, None, MS_BIND | MS_REC, None) != 0:
        return False, False

    class MountAttr(ctypes.Structure):  # type: ignore[misc]
        _fields_ = [
            ("attr_set", ctypes.c_uint64),
            ("attr_clr", ctypes.c_uint64),  # noqa: RUF012
            ("propagation", ctypes.c_uint64),
            ("userns_fd", ctypes.c_uint64),
        ]

    SYS_mount_setattr = 442  # same number on x86_64 and aarch64 (generic table)
    AT_FDCWD, AT_RECURSIVE, RDONLY, NOSUID = -100, 0x8000, 0x1, 0x2
    a = MountAttr(RDONLY | NOSUID, 0, 0, 0)
    if (
        libc.syscall(
            ctypes.c_long(SYS_mount_setattr),
            ctypes.c_int(AT_FDCWD),
            ctypes.c_char_p(b"/"),
            ctypes.c_uint(AT_RECURSIVE),
            ctypes.byref(a),
            ctypes.c_size_t(ctypes.sizeof(a)),
        )
        != 0
    ):
        return False, False
    b = MountAttr(NOSUID, RDONLY, 0, 0)
    if (
        libc.syscall(
            ctypes.c_long(SYS_mount_setattr),
            ctypes.c_int(AT_FDCWD),
            ctypes.c_char_p(w),
            ctypes.c_uint(0),
            ctypes.byref(b),
            ctypes.c_size_t(ctypes.sizeof(b)),
        )
        != 0
    ):
        return False, False
    return True, tmpfs


def _outer(pid: int, cfg: "Config", libc: "Any", ctypes: "Any", drop: bool, userns: bool) -> "NoReturn":
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
    except BaseException:  # noqa: BLE001 - never fall through into the sandboxed side
        os._exit(1)


if __name__ == "__main__":
    _main()
