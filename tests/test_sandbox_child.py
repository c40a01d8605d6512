"""In-process tests of the sandbox's pure parts: the child's audit hook and helpers, and the
parent's result-channel validator.  (The hook is only called here, never installed: an
audit hook cannot be removed from a process.)  The hostile programs are in test_sandbox."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys

import pytest

import qval.sandbox as S
from qval.sandbox import _child, process
from qval.sandbox.channel import Channel

OPEN_WRITE = os.O_WRONLY | os.O_CREAT


@pytest.fixture
def hook(tmp_path):
    return _child.make_hook(str(tmp_path), list(S.ALLOWED_MODULES))


def test_child_imports_only_what_the_bootstrap_always_did():
    """The child runs without qval or site-packages, and every module it imports becomes
    importable by untrusted code: the set is fixed (over every file the child runs)."""
    runtime, typing_only = set(), set()
    for path in process.CHILD_FILES:
        with open(path, encoding="utf-8") as f:
            tree = ast.parse(f.read())
        guarded = [
            n
            for n in tree.body
            if isinstance(n, ast.If) and isinstance(n.test, ast.Name) and n.test.id == "TYPE_CHECKING"
        ]
        # the body only: the else branch (if any) runs in the child
        guarded_nodes = {id(x) for g in guarded for b in g.body for x in ast.walk(b)}
        for node in ast.walk(tree):
            if isinstance(node, ast.Import | ast.ImportFrom):
                names = [node.module] if isinstance(node, ast.ImportFrom) else [a.name for a in node.names]
                (typing_only if id(node) in guarded_nodes else runtime).update(names)
    assert runtime == {"json", "os", "resource", "signal", "sys", "ctypes", "_thread"}
    assert typing_only <= {"typing", "collections.abc", "qval.sandbox._child_hook"}


def test_child_files_add_no_module_and_are_all_hash_checked():
    """Loading the child (and through it the hook file) adds nothing to sys.modules beyond
    its own imports: the hook file is run by path, never imported or registered."""
    probe = (
        "import sys\n"
        "import json, os, resource, signal\n"
        "before = set(sys.modules)\n"
        "path = sys.argv[1]\n"
        "ns = {'__name__': 'probe', '__file__': path}\n"
        "exec(compile(open(path, 'rb').read(), path, 'exec'), ns)\n"
        "assert callable(ns['make_hook'])\n"
        "print(sorted(set(sys.modules) - before), sys.path.count(__import__('os').path.dirname(path)))\n"
    )
    out = subprocess.run(
        [sys.executable, "-I", "-S", "-B", "-c", probe, process.CHILD_PATH],
        check=True,
        capture_output=True,
        text=True,
        env=process.child_env(),
        timeout=60,
    ).stdout
    assert out.split() == ["[]", "0"]
    # what the in-process child loaded is the hashed hook file, next to the hashed child
    assert _child.make_hook.__code__.co_filename == process.CHILD_HOOK_PATH
    assert os.path.dirname(process.CHILD_HOOK_PATH) == os.path.dirname(process.CHILD_PATH)
    assert set(process.CHILD_FILES) == {process.CHILD_PATH, process.CHILD_HOOK_PATH}
    assert set(process._CHILD_SHA256) == set(process.CHILD_FILES)
    with open(process.CHILD_HOOK_PATH, encoding="utf-8") as f:
        hook_tree = ast.parse(f.read())
    # no classes: nothing of the hook file needs PROTECTED_MODULES' protection
    assert not any(isinstance(n, ast.ClassDef) for n in ast.walk(hook_tree))


def test_hook_allows_the_work_dir_and_denies_outside(hook, tmp_path):
    inside = str(tmp_path / "f.txt")
    hook("open", (inside, "w", OPEN_WRITE))
    hook("open", ("/dev/null", "r", os.O_RDONLY))
    hook("open", (3, "r", os.O_RDONLY))  # an already-open fd
    with pytest.raises(PermissionError, match="write outside work dir denied: /tmp"):
        hook("open", ("/tmp/x", "w", OPEN_WRITE))
    with pytest.raises(PermissionError, match="read outside work dir denied: /etc/shadow"):
        hook("open", (b"/etc/shadow", "rb", os.O_RDONLY))
    with pytest.raises(PermissionError, match="write outside"):
        hook("open", (inside + "/../../x", None, os.O_WRONLY))  # flags alone mean write
    with pytest.raises(PermissionError, match="write outside"):
        hook("os.rename", (inside, "/tmp/y", None, None))
    with pytest.raises(PermissionError, match="path must be str/bytes"):
        hook("os.remove", (1.5, None))


def test_hook_resolves_symlinks(hook, tmp_path):
    (tmp_path / "out").symlink_to("/etc")
    (tmp_path / "loop").symlink_to(tmp_path / "loop")
    with pytest.raises(PermissionError, match="read outside work dir denied: /etc/passwd"):
        hook("open", (str(tmp_path / "out" / "passwd"), "r", os.O_RDONLY))
    with pytest.raises(PermissionError, match="too many symlinks"):
        hook("open", (str(tmp_path / "loop"), "r", os.O_RDONLY))


def test_hook_events(hook):
    hook("import", ("math", None, None, None, None))
    hook("import", ("collections.abc", None, None, None, None))
    for name in ("socket", "ctypes", "qval", 42):
        with pytest.raises(ImportError, match="is not allowed"):
            hook("import", (name, None, None, None, None))
    for event in (
        "os.system",
        "socket.connect",
        "subprocess.Popen",
        "function.__new__",
        "sys.addaudithook",
        "resource.setrlimit",
    ):
        with pytest.raises(PermissionError, match=f"{event} denied"):
            hook(event, ())
    with pytest.raises(ValueError, match="_getframe"):
        hook("sys._getframe", (None,))
    with pytest.raises(PermissionError, match="frame access"):
        hook("object.__getattr__", (None, "f_globals"))
    hook("object.__getattr__", (None, "real"))
    with pytest.raises(PermissionError, match="protected class"):
        hook("object.__setattr__", (json.JSONDecoder, "decode", None))
    with pytest.raises(PermissionError, match="object.__setattr__ denied"):
        hook("object.__setattr__", (object(), "x", None))
    hook("object.__setattr__", (type("Mine", (), {}), "x", None))
    hook("compile", (b"", "<x>"))  # anything else passes


def test_capture_and_clip():
    cap = _child._Capture(10)
    assert cap.write("0123456789abc") == 13
    assert cap.take() == "0123456789\n[output truncated]"
    cap.write("more")  # the budget is per run, not per take()
    assert cap.take() == "\n[output truncated]"
    clipped = _child._clip("\x00" * 1000, 100)  # 6 JSON bytes per char
    assert len(json.dumps(clipped)) <= 164


def test_channel_accepts_the_protocol():
    ch = Channel(start=5, n=2, max_output_bytes=1000)
    lines = [
        {"stage": "loading", "layers": {"process": True}},
        {"stage": "ready"},
        {"i": 5, "o": "hi", "v": 2},
        {"i": 6, "o": "", "kind": "timeout", "e": "slow"},
        {"stage": "done"},
    ]
    data = b"".join(json.dumps(m).encode() + b"\n" for m in lines)
    assert ch.feed(data[:7]) == (None, False)  # a partial line waits
    assert ch.feed(data[7:]) == (None, True)
    assert ch.done and ch.loaded and ch.expect == 7 and ch.layers == {"process": True}
    assert ch.results[5].value == 2.0 and ch.results[5].output == "hi"
    assert ch.results[6].kind == "timeout" and not ch.results[6].ok


@pytest.mark.parametrize(
    "line",
    [
        b'{"i": 0, "v": 1}',  # a call before "ready"
        b'{"stage": "ready"}\n{"i": 1, "v": 1}',  # out of order
        b'{"stage": "ready"}\n{"i": 0, "v": NaN}',
        b'{"stage": "ready"}\n{"i": 0, "v": ' + b"9" * 500 + b"}",
        b'{"stage": "ready"}\n{"i": 0, "v": true}',
        b'{"stage": "ready"}\n{"i": 0, "kind": "ok", "e": "x"}',
        b'{"stage": "ready"}\n{"stage": "done"}',  # done with calls unanswered
        b'{"stage": "load_error", "kind": "nope", "e": "x"}',
        b"[" * 60000,
        b"not json",
        b"[]",
    ],
)
def test_channel_rejects_forged_messages(line):
    assert Channel(0, 1, 1000).feed(line + b"\n")[0] == "protocol"


def test_channel_caps_bytes():
    assert Channel(0, 1, 10).feed(b"x" * 80000)[0] == "output"  # one line over the line cap
    budget = 10 + 4096 * 5 + 65536
    assert Channel(0, 1, 10).feed(b" " * (budget + 1))[0] == "output"  # over the channel cap


@pytest.mark.parametrize("which", ["child", "hook"])
def test_changed_child_is_refused(monkeypatch, which):
    path = process.CHILD_PATH if which == "child" else process.CHILD_HOOK_PATH
    monkeypatch.setitem(process._CHILD_SHA256, path, "0" * 64)
    with pytest.raises(RuntimeError, match="changed on disk"):
        S.run_program(
            "def score(observation, action, task):\n    return 1.0\n", [{"observation": "", "action": "", "task": ""}]
        )


def test_missing_child_file_is_refused(monkeypatch, tmp_path):
    monkeypatch.setattr(process, "CHILD_FILES", (*process.CHILD_FILES, str(tmp_path / "gone.py")))
    monkeypatch.setitem(process._CHILD_SHA256, str(tmp_path / "gone.py"), "0" * 64)
    with pytest.raises(RuntimeError, match="changed on disk"):
        process.check_child()
