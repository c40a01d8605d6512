"""Hostile-program tests for the scorer sandbox.

Each hostile test checks (1) the parent survives and gets a clear per-call error,
(2) the hostile effect did not happen, and (where it matters) the program is also run
with the audit hook switched off (``_audit_hook=False``) to show that the kernel
layers (uid drop, rlimits, netns, mountns, pidns) stop it on their own.
"""

from __future__ import annotations

import dis
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import textwrap
import time

import pytest

import qval.sandbox as S
from qval.sandbox import Limits, run_program
from qval.sandbox.process import CHILD_HOOK_PATH

ONE = [{"observation": "obs", "action": "act", "task": "task"}]
FAST = Limits(wall_seconds_per_call=1.0, total_wall_seconds=20.0, memory_mb=256)
REPORT = S.sandbox_report()


def src(code: str) -> str:
    return textwrap.dedent(code).lstrip()


def sandbox_pids() -> list[int]:
    """PIDs of live sandbox children of this test process (tagged in their argv)."""
    tag = S._parent_tag().encode()
    pids = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/cmdline", "rb") as f:
                cmd = f.read()
            with open(f"/proc/{name}/stat", "rb") as f:
                state = f.read().rsplit(b")", 1)[1].split()[0]
        except OSError:
            continue
        if tag in cmd.split(b"\0") and state != b"Z":
            pids.append(int(name))
    return pids


@pytest.fixture(autouse=True)
def no_leftover_processes():
    yield
    deadline = time.monotonic() + 2.0
    while sandbox_pids() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert sandbox_pids() == [], "sandbox processes survived the run"


def need(layer: str):
    if not REPORT.get(layer):
        pytest.skip(f"layer {layer!r} not available on this machine")


both_modes = pytest.mark.parametrize("hook", [True, False], ids=["hook", "kernel-only"])


# --------------------------------------------------------------------------- good


def test_report_layers():
    assert REPORT["working"]
    assert REPORT["process"] and REPORT["env_scrubbed"] and REPORT["audit_hook"]
    if os.geteuid() == 0:
        assert REPORT["uid_drop"], REPORT


def test_good_program_scores_1000_calls_in_one_child():
    code = src("""
        import math, re
        def score(observation: str, action: str, task: str) -> float:
            words = re.findall(r"\\w+", action)
            return len(observation) + 0.5 * len(words) + math.sqrt(len(task))
    """)
    calls = [
        {"observation": "o" * (i % 50), "action": "go north now" * (i % 3), "task": "t" * (i % 7)} for i in range(1000)
    ]
    expected = [
        len(c["observation"]) + 0.5 * len(__import__("re").findall(r"\w+", c["action"])) + len(c["task"]) ** 0.5
        for c in calls
    ]
    one = run_program(code, calls[:1])
    res = run_program(code, calls)
    assert one[0].ok and one[0].value == pytest.approx(expected[0])
    assert all(r.ok for r in res), [r for r in res if not r.ok][:3]
    assert [r.value for r in res] == pytest.approx(expected)


def test_work_dir_is_writable_and_prints_are_captured():
    code = src("""
        def score(observation, action, task):
            with open("scratch.txt", "w") as f:
                f.write(action)
            print("hello from", task)
            return float(len(open("scratch.txt").read()))
    """)
    r = run_program(code, ONE, FAST)[0]
    assert r.ok and r.value == 3.0
    assert r.output == "hello from task\n"


# --------------------------------------------------------------------- bad programs


@pytest.mark.parametrize(
    "code,kind,needle",
    [
        ("x = 1\n", "load", "does not define a callable score"),
        ("def score(observation, action, task):\n    return (\n", "load", "SyntaxError"),
        ("def score(observation, action, task):\n    return 'abc'\n", "bad_return", "returned non-number: 'abc'"),
        ("def score(observation, action, task):\n    return None\n", "bad_return", "returned non-number: None"),
        ("def score(observation, action, task):\n    return float('nan')\n", "bad_return", "non-finite"),
        (
            "def score(observation, action, task):\n    return foo\n",
            "exception",
            "NameError: name 'foo' is not defined",
        ),
        ("def score(observation, action, task):\n    raise SystemExit(3)\n", "exception", "SystemExit: 3"),
        ("def score(obs):\n    return 1.0\n", "exception", "TypeError"),
        ("raise RuntimeError('boom at import')\n", "load", "RuntimeError: boom at import"),
    ],
    ids=["no-score", "syntax", "str", "none", "nan", "nameerror", "sysexit", "signature", "import-error"],
)
def test_bad_programs(code, kind, needle):
    res = run_program(code, ONE * 3, FAST)
    assert len(res) == 3
    for r in res:
        assert not r.ok and r.value is None
        assert r.kind == kind, r
        assert needle in r.error, r.error


def test_bool_and_int_are_numbers():
    code = "def score(observation, action, task):\n    return len(action) > 1 if task else 7\n"
    res = run_program(code, [ONE[0], {**ONE[0], "task": ""}], FAST)
    assert [r.value for r in res] == [1.0, 7.0]


# ------------------------------------------------------------------------- hostile


@both_modes
def test_fork_bomb_is_bounded(hook):
    code = src("""
        import os, time
        def score(observation, action, task):
            me = os.getpid()
            forks = 0
            end = time.monotonic() + 0.4
            while time.monotonic() < end:
                try:
                    pid = os.fork()
                except OSError:           # PermissionError (hook) / EAGAIN (NPROC)
                    continue
                if pid == 0:              # children keep bombing, then sleep forever
                    while True:
                        try:
                            os.fork()
                        except OSError:
                            time.sleep(0.01)
                forks += 1
            return float(forks)
    """)
    lim = Limits(wall_seconds_per_call=1.5, total_wall_seconds=20, max_processes=16, memory_mb=256)
    res = run_program(code, ONE + ONE, lim, _audit_hook=hook)
    for r in res:
        assert r.ok, r
        if hook:
            assert r.value == 0.0  # os.fork denied outright
        else:
            assert r.value <= lim.max_processes  # RLIMIT_NPROC as non-root uid
    # leftover processes are checked by the autouse fixture (killpg + pid namespace)


def test_fork_bomb_direct_error_message():
    code = "import os\ndef score(observation, action, task):\n    while True:\n        os.fork()\n"
    r = run_program(code, ONE, FAST)[0]
    assert r.kind == "exception" and "os.fork denied" in r.error


def test_infinite_loop_times_out_and_other_calls_still_work():
    code = src("""
        def score(observation, action, task):
            if action == "loop":
                while True:
                    pass
            if action == "stubborn":          # swallows the soft timeout
                while True:
                    try:
                        while True:
                            pass
                    except BaseException:
                        pass
            return 1.0
    """)
    calls = [{"observation": "", "action": a, "task": ""} for a in ["ok", "loop", "ok", "stubborn", "ok"]]
    lim = Limits(wall_seconds_per_call=0.5, total_wall_seconds=20)
    t0 = time.monotonic()
    res = run_program(code, calls, lim)
    assert time.monotonic() - t0 < 5
    assert [r.kind for r in res] == ["ok", "timeout", "ok", "timeout", "ok"]
    assert res[1].error.startswith("timeout")
    assert res[3].error.startswith("timeout") and "killed" in res[3].error


def test_infinite_loop_at_import_time():
    code = "while True:\n    pass\ndef score(observation, action, task):\n    return 1.0\n"
    res = run_program(code, ONE * 4, Limits(wall_seconds_per_call=0.5))
    assert all(r.kind == "timeout" and "loading" in r.error for r in res)


def test_cpu_limit():
    code = "def score(observation, action, task):\n    while True:\n        pass\n"
    lim = Limits(cpu_seconds=1, wall_seconds_per_call=5, total_wall_seconds=20)
    r = run_program(code, ONE, lim)[0]
    assert r.kind == "cpu" and "cpu limit" in r.error


def test_total_wall_limit():
    code = "import time\ndef score(observation, action, task):\n    time.sleep(0.3)\n    return 1.0\n"
    lim = Limits(wall_seconds_per_call=1, total_wall_seconds=1.0)
    t0 = time.monotonic()
    res = run_program(code, ONE * 20, lim)
    assert time.monotonic() - t0 < 3
    assert res[0].ok
    assert not res[-1].ok and res[-1].kind in ("timeout", "skipped")


@pytest.fixture
def listener():
    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.bind(("127.0.0.1", 0))
    srv.listen(8)
    srv.setblocking(False)
    yield srv
    srv.close()


def assert_no_connection(srv):
    with pytest.raises(BlockingIOError):
        conn, _ = srv.accept()
        conn.close()


def test_socket_import_denied(listener):
    port = listener.getsockname()[1]
    code = src(f"""
        def score(observation, action, task):
            import socket
            socket.create_connection(("127.0.0.1", {port}), timeout=1).sendall(b"leak")
            return 1.0
    """)
    r = run_program(code, ONE, FAST)[0]
    assert r.kind == "exception" and "import of 'socket' is not allowed" in r.error
    assert_no_connection(listener)


@both_modes
def test_socket_connect_blocked(listener, hook):
    if not hook:
        need("netns")
    port = listener.getsockname()[1]
    code = src(f"""
        import socket
        def score(observation, action, task):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.settimeout(1)
            s.connect(("127.0.0.1", {port}))
            s.sendall(b"leak")
            return 1.0
    """)
    # socket is preloaded on purpose so that only the kernel layers are left
    r = run_program(code, ONE, FAST, modules=S.ALLOWED_MODULES + ("socket",), _audit_hook=hook)[0]
    assert not r.ok and r.kind == "exception"
    if hook:
        assert "socket" in r.error and "denied" in r.error
    else:
        assert "unreachable" in r.error.lower() or "refused" in r.error.lower(), r.error
    assert_no_connection(listener)


@both_modes
def test_socket_bind_blocked(listener, hook):
    if not hook:
        need("netns")
    port = listener.getsockname()[1]
    code = src(f"""
        import socket
        def score(observation, action, task):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", {port}))   # the test already holds this port
            s.listen(1)
            return 1.0
    """)
    r = run_program(code, ONE, FAST, modules=S.ALLOWED_MODULES + ("socket",), _audit_hook=hook)[0]
    if hook:
        assert r.kind == "exception" and "denied" in r.error
    else:
        # a separate network namespace: the host port is not visible, bind succeeds
        # on the (down) private loopback and nothing is exposed on the host
        assert r.ok, r
    assert_no_connection(listener)


@pytest.fixture
def open_dir():
    d = tempfile.mkdtemp(prefix="qval-test-outside-")
    os.chmod(d, 0o777)  # world-writable: only the sandbox layers can stop a write
    yield d
    shutil.rmtree(d, ignore_errors=True)


@both_modes
def test_write_outside_work_dir(open_dir, hook):
    if not hook:
        need("mountns")  # uid drop alone still allows world-writable dirs
    target = os.path.join(open_dir, "pwned.txt")
    code = src(f"""
        import os
        T = {target!r}
        def score(observation, action, task):
            done = []
            attempts = [
                lambda: open(T, "w").write("x"),
                lambda: os.close(os.open(T, os.O_WRONLY | os.O_CREAT)),
                lambda: open("../" + os.path.basename(os.path.dirname(T)) + "/pwned.txt", "a").write("x"),
                lambda: (os.symlink(T, "link"), open("link", "w").write("x")),
                lambda: os.mkdir(T + ".d"),
                lambda: open("/tmp/qval-pwned-global.txt", "w").write("x"),
            ]
            for i, f in enumerate(attempts):
                try:
                    f()
                    done.append(i)
                except OSError as e:
                    print(type(e).__name__, e)
            return float(len(done))
    """)
    r = run_program(code, ONE, FAST, _audit_hook=hook)[0]
    assert r.ok, r
    assert r.value == 0.0, r.output
    assert os.listdir(open_dir) == []
    assert not os.path.exists("/tmp/qval-pwned-global.txt")
    if hook:
        assert "write outside work dir denied" in r.output


@both_modes
def test_read_shadow_and_proc(hook):
    code = src("""
        def score(observation, action, task):
            got = 0
            for p in ["/etc/shadow", "/proc/1/environ", "/root/.bashrc"]:
                try:
                    open(p, "rb").read()
                    got += 1
                    print("READ", p)
                except OSError as e:
                    print(type(e).__name__, p)
            return float(got)
    """)
    r = run_program(code, ONE, FAST, _audit_hook=hook)[0]
    assert r.ok, r
    if not hook and not REPORT.get("uid_drop"):
        pytest.skip("kernel-only read protection needs the uid drop")
    # /proc/1 inside the pid namespace is the sandbox itself (harmless minimal env)
    assert "READ /etc/shadow" not in r.output and "READ /root/.bashrc" not in r.output
    if hook:
        assert r.value == 0.0 and "PermissionError" in r.output


def test_read_world_readable_file_denied_by_hook():
    code = "def score(observation, action, task):\n    return float(len(open('/etc/passwd').read()))\n"
    r = run_program(code, ONE, FAST)[0]
    assert r.kind == "exception" and "read outside work dir denied" in r.error


@both_modes
def test_secret_env_not_visible(monkeypatch, hook):
    if not hook and not (REPORT.get("uid_drop") or REPORT.get("pidns")):
        pytest.skip("non-root without namespaces: /proc/<parent>/environ is readable")
    monkeypatch.setenv("QVAL_TEST_SECRET", "hunter2")
    code = src("""
        import os
        def score(observation, action, task):
            seen = [repr(dict(os.environ))]
            paths = ["/proc/self/environ", "/proc/%d/environ" % os.getppid(),
                     "/proc/1/environ", "/proc/%d/cmdline" % os.getppid()]
            try:
                for pid in os.listdir("/proc"):
                    if pid.isdigit():
                        paths += ["/proc/%s/environ" % pid, "/proc/%s/cmdline" % pid]
            except OSError as e:
                seen.append(repr(e))
            for p in paths:
                try:
                    seen.append(open(p, "rb").read().decode("latin-1"))
                except OSError as e:
                    seen.append(type(e).__name__)
            blob = "\\n".join(seen)
            print(blob[:20000])
            return 1.0 if "hunter2" in blob else 0.0
    """)
    assert os.environ["QVAL_TEST_SECRET"] == "hunter2"
    r = run_program(code, ONE, Limits(wall_seconds_per_call=2.0, max_output_bytes=1 << 20), _audit_hook=hook)[0]
    assert r.ok, r
    assert r.value == 0.0
    assert "hunter2" not in r.output and "QVAL_TEST_SECRET" not in r.output
    assert "PATH" in r.output  # the program did see its (minimal) environment


def test_memory_bomb():
    code = src("""
        def score(observation, action, task):
            if action == "big":
                x = bytearray(4 * 1024 ** 3)
            elif action == "grow":
                hog = []
                while True:
                    hog.append(bytearray(16 * 1024 ** 2))
            return 1.0
    """)
    calls = [{"observation": "", "action": a, "task": ""} for a in ["big", "ok", "grow", "ok"]]
    res = run_program(code, calls, Limits(memory_mb=256, wall_seconds_per_call=3))
    assert [r.kind for r in res] == ["memory", "ok", "memory", "ok"], res
    assert res[0].error.startswith("memory limit")


def test_huge_output_is_capped():
    code = src("""
        import os, sys
        def score(observation, action, task):
            chunk = "x" * 10000
            for _ in range(5000):                 # 50 MB through print()
                print(chunk)
            for _ in range(200):                  # 20 MB straight to fds 1 and 2
                os.write(1, b"y" * 100000)
                os.write(2, b"z" * 100000)
            return 1.0
    """)
    lim = Limits(max_output_bytes=10000, wall_seconds_per_call=5)
    res = run_program(code, ONE * 2, lim)
    for r in res:
        assert r.ok, r
        assert len(r.output) <= 10000 + 100
    assert res[0].output.endswith("[output truncated]")


def test_result_channel_flood():
    code = src("""
        import os
        def score(observation, action, task):
            if action == "flood":
                for fd in range(3, 40):
                    try:
                        for _ in range(8):
                            os.write(fd, b"A" * (1 << 20))
                    except OSError:
                        pass
            return 1.0
    """)
    calls = [{"observation": "", "action": a, "task": ""} for a in ["ok", "flood", "ok"]]
    res = run_program(code, calls, Limits(max_output_bytes=10000, wall_seconds_per_call=3))
    assert res[0].ok and res[2].ok
    assert res[1].kind in ("output", "crash"), res[1]


@pytest.mark.parametrize(
    "body,needle",
    [
        ("import ctypes\n    return 1.0", "import of 'ctypes' is not allowed"),
        ("import _ctypes\n    return 1.0", "import of '_ctypes' is not allowed"),
        ("import subprocess\n    return 1.0", "import of 'subprocess' is not allowed"),
        ("import _posixsubprocess\n    return 1.0", "not allowed"),
        ("import os\n    return float(os.system('touch /tmp/qval-escape-marker'))", "os.system denied"),
        ("import os\n    os.execv('/bin/sh', ['sh', '-c', 'touch /tmp/qval-escape-marker'])", "os.exec denied"),
        (
            "import os\n    os.posix_spawn('/bin/touch', ['touch', '/tmp/qval-escape-marker'], {})",
            "os.posix_spawn denied",
        ),
        ("import os\n    os.kill(os.getppid(), 9)", "os.kill denied"),
        ("import _thread\n    _thread.start_new_thread(print, ())\n    return 1.0", "start_new_thread"),
        ("import sys\n    return float(len(sys._getframe(1).f_locals))", "sys._getframe is disabled"),
        (
            "try:\n        1 / 0\n    except Exception as e:\n        return float(len(e.__traceback__.tb_frame.f_globals))",
            "frame access denied",
        ),
        ("f = lambda: 0\n    f.__code__ = (lambda: 1).__code__\n    return 1.0", "object.__setattr__"),
        ("return float((lambda: 0).__code__.replace(co_code=b'').co_flags)", "code.__new__ denied"),
        ("import gc\n    return float(len(gc.get_objects()))", "import of 'gc' is not allowed"),
        ("import resource\n    resource.setrlimit(resource.RLIMIT_AS, (-1, -1))", "resource.setrlimit denied"),
        ("import sys\n    sys.settrace(lambda *a: None)\n    return 1.0", "sys.settrace denied"),
        ("import os\n    os.chdir('/')\n    return 1.0", "os.chdir denied"),
        ("import os\n    return float(len(os.listdir('/')))", "read outside work dir denied"),
    ],
    ids=[
        "ctypes",
        "_ctypes",
        "subprocess",
        "_posixsubprocess",
        "os.system",
        "os.execv",
        "posix_spawn",
        "os.kill",
        "thread",
        "getframe",
        "tb_frame",
        "set-code",
        "code-new",
        "gc",
        "setrlimit",
        "settrace",
        "chdir",
        "listdir-root",
    ],
)
def test_escape_attempts(body, needle):
    code = "def score(observation, action, task):\n    " + body + "\n"
    res = run_program(code, ONE * 2, FAST)
    for r in res:
        assert not r.ok and r.kind == "exception", r
        assert needle in r.error, r.error
    assert not os.path.exists("/tmp/qval-escape-marker")


def test_ctypes_via_subclasses_is_dead():
    code = src("""
        def score(observation, action, task):
            seen, todo = set(), [object]
            found = None
            while todo:
                c = todo.pop()
                try:
                    subs = type.__subclasses__(c)
                except TypeError:
                    continue
                for s in subs:
                    if s not in seen:
                        seen.add(s)
                        todo.append(s)
                        if s.__name__ == "CDLL":
                            found = s
            if found is None:
                return 0.0
            libc = found(None)
            libc.system(b"touch /tmp/qval-escape-marker")
            return 1.0
    """)
    r = run_program(code, ONE, FAST)[0]
    assert r.value == 0.0 or (r.kind == "exception" and "ctypes" in r.error), r
    assert not os.path.exists("/tmp/qval-escape-marker")


def test_monkeypatching_builtins_does_not_weaken_hook(open_dir):
    target = os.path.join(open_dir, "pwned.txt")
    code = src(f"""
        import builtins, os, posixpath
        def score(observation, action, task):
            saved = (builtins.type, builtins.isinstance, builtins.str, os.path.realpath)
            builtins.type = lambda x: str          # the hook must not look these up
            builtins.isinstance = lambda *a: True
            os.path.realpath = posixpath.realpath = lambda p, **k: os.getcwd() + "/x"
            os.getcwd = lambda: "/"
            try:
                open({target!r}, "w").write("x")
                res, msg = 1.0, "written"
            except PermissionError as e:
                res, msg = 0.0, e.args[0]
            finally:
                builtins.type, builtins.isinstance, builtins.str = saved[:3]
                os.path.realpath = posixpath.realpath = saved[3]
            print(msg)
            return res
    """)
    r = run_program(code, ONE, FAST)[0]
    assert r.ok and r.value == 0.0, r
    assert "write outside work dir denied" in r.output
    assert os.listdir(open_dir) == []


def test_hook_uses_no_globals():
    """The audit hook must only use closure-bound names (builtins can be patched)."""
    path = CHILD_HOOK_PATH  # the file that holds the hook, as the child runs it
    with open(path, "rb") as f:
        top = compile(f.read(), path, "exec")

    def find(code, name):
        for c in code.co_consts:
            if hasattr(c, "co_code"):
                if c.co_name == name:
                    return c
                got = find(c, name)
                if got:
                    return got
        return None

    def walk(code):
        yield code
        for c in code.co_consts:
            if hasattr(c, "co_code"):
                yield from walk(c)

    hook = find(top, "_hook")
    assert hook is not None
    for code in walk(hook):
        bad = [i.argval for i in dis.get_instructions(code) if i.opname in ("LOAD_GLOBAL", "LOAD_NAME")]
        assert bad == [], f"{code.co_name} looks up globals: {bad}"


def test_many_calls_one_process():
    """Batching: all calls share one child (the pid is stable across calls)."""
    code = "import os\ndef score(observation, action, task):\n    return float(os.getpid())\n"
    res = run_program(code, ONE * 50, FAST)
    assert len({r.value for r in res}) == 1


def test_hook_alone_without_namespaces(open_dir, listener, monkeypatch):
    """Fallback when unshare() is not permitted: hook + rlimits (+ uid drop) still hold."""
    monkeypatch.setenv("QVAL_TEST_SECRET", "hunter2")
    port = listener.getsockname()[1]
    target = os.path.join(open_dir, "pwned.txt")
    code = src(f"""
        import os, socket
        def score(observation, action, task):
            ok = []
            tries = {{
                "write": lambda: open({target!r}, "w").write("x"),
                "connect": lambda: socket.socket().connect(("127.0.0.1", {port})),
                "fork": lambda: os.fork(),
                "system": lambda: os.system("true"),
                "environ": lambda: open("/proc/%d/environ" % os.getppid()).read(),
            }}
            for name, f in tries.items():
                try:
                    f()
                    ok.append(name)
                except OSError as e:
                    print(name, e)
            print("secret" if "hunter2" in repr(dict(os.environ)) else "clean")
            return float(len(ok))
    """)
    r = run_program(code, ONE, FAST, modules=S.ALLOWED_MODULES + ("socket",), _namespaces=False)[0]
    assert r.ok and r.value == 0.0, r
    assert "clean" in r.output and "hunter2" not in r.output
    assert os.listdir(open_dir) == []
    assert_no_connection(listener)


SYSTEM_PY = shutil.which("python3", path="/usr/bin:/bin")


@pytest.mark.skipif(os.geteuid() != 0 or not SYSTEM_PY, reason="needs root (to become nobody) and a system python3")
def test_non_root_parent(open_dir):
    """A non-root parent gets no uid drop; user namespaces (if allowed) give the rest."""
    d = tempfile.mkdtemp(prefix="qval-test-nonroot-")
    try:
        os.chmod(d, 0o755)
        shutil.copytree(
            os.path.dirname(S.__file__), os.path.join(d, "sandbox"), ignore=shutil.ignore_patterns("__pycache__")
        )
        target = os.path.join(open_dir, "pwned.txt")
        script = src(f"""
            import json, sys
            sys.path.insert(0, {d!r})
            import sandbox as S
            one = [{{"observation": "o", "action": "a", "task": "t"}}]
            good = S.run_program("def score(observation, action, task):\\n    return 2.5\\n", one)
            bad = S.run_program("def score(observation, action, task):\\n    open({target!r}, 'w')\\n    return 1.0\\n", one)
            raw = S.run_program("def score(observation, action, task):\\n    open({target!r}, 'w')\\n    return 1.0\\n", one, _audit_hook=False)
            print(json.dumps({{"report": S.sandbox_report(), "good": good[0].value,
                              "bad": bad[0].error, "raw": raw[0].error}}))
        """)
        proc = subprocess.run(
            [SYSTEM_PY, "-I", "-c", script],
            check=False,
            capture_output=True,
            text=True,
            timeout=60,
            user=S.SANDBOX_UID,
            group=S.SANDBOX_GID,
            extra_groups=[],
            cwd="/",
            env={"PATH": "/usr/bin:/bin"},
        )
        if proc.returncode != 0 and sys.version_info[:2] > (3, 7):
            assert "SyntaxError" not in proc.stderr, proc.stderr
        assert proc.returncode == 0, proc.stderr[-2000:]
        out = json.loads(proc.stdout.strip().splitlines()[-1])
        rep = out["report"]
        assert rep["working"] and not rep["running_as_root"] and not rep["uid_drop"]
        assert out["good"] == 2.5
        assert "write outside work dir denied" in out["bad"]
        if rep["mountns"]:
            assert "Read-only file system" in out["raw"]
        assert os.listdir(open_dir) == []
    finally:
        shutil.rmtree(d, ignore_errors=True)


def test_disk_fill_is_bounded():
    code = src("""
        def score(observation, action, task):
            n = 0
            try:
                while True:
                    with open("f%d" % n, "wb") as f:
                        f.write(b"x" * (4 << 20))
                    n += 1
            except OSError as e:
                print(type(e).__name__, e)
            return float(n)
    """)
    r = run_program(code, ONE, Limits(max_disk_bytes=16 << 20, max_file_bytes=8 << 20, wall_seconds_per_call=5))[0]
    assert r.ok, r
    if REPORT.get("work_dir_tmpfs"):
        assert r.value <= 4 and "No space left" in r.output


def test_segfault_crash_is_contained():
    code = src("""
        import sys
        def score(observation, action, task):
            if action == "crash":
                sys.setrecursionlimit(10 ** 8)
                class Deep:
                    def __repr__(self):
                        return repr(self)    # recursion through C -> stack overflow
                repr(Deep())
            return 1.0
    """)
    calls = [{"observation": "", "action": a, "task": ""} for a in ["ok", "crash", "ok"]]
    res = run_program(code, calls, Limits(wall_seconds_per_call=5))
    assert res[0].ok and res[2].ok
    assert res[1].kind == "crash" and "SIGSEGV" in res[1].error, res[1]


@pytest.mark.parametrize("payload", ["'{\"i\": %d, \"v\": %s}' % (obj['i'], '9' * 500)", "'[' * 60000"])
def test_a_program_that_forges_the_result_channel_fails_alone(payload):
    """Found from outside: a program replacing json.dumps in the child made the parent's run_program raise
    (OverflowError on a 500-digit number, RecursionError on a nesting bomb). Now it is that program's failure."""
    code = src(f"""
        import json
        _real = json.dumps
        def _forged(obj, **kw):
            if isinstance(obj, dict) and "i" in obj:
                return {payload}
            return _real(obj, **kw)
        json.dumps = _forged
        def score(observation, action, task):
            return 1.0
    """)
    results = run_program(code, ONE * 2, FAST)
    assert len(results) == 2 and not any(r.ok for r in results)
    assert "invalid message" in results[0].error


def test_one_hostile_program_does_not_wipe_the_other_programs_scores():
    from qval.qalign.scorers.code import CodeScorer

    good = src("""
        def score(observation, action, task):
            return 2.0
    """)
    bad = src("""
        import json
        json.dumps = lambda obj, **kw: "[" * 60000
        def score(observation, action, task):
            return 1.0
    """)
    scorer = CodeScorer.__new__(CodeScorer)
    scorer.params = CodeScorer.Params(programs=2)
    scorer.sources = [good, bad]

    class Point:
        observation, task = "o", "t"
        candidates = (type("C", (), {"action": "a"})(), type("C", (), {"action": "b"})())

    scores = scorer.score_batch([Point()])
    assert scores == [[2.0, 2.0]]  # the good program's scores survive; the bad one failed alone
