"""The sandbox child's audit-hook policy: the deny lists and the hook itself.

Part of the child program (``_child.py``), split off only to keep each file short.  It is
standard library only (just ``os``) and is never imported by the child: ``_child.py`` reads,
compiles and runs this file into a private namespace at its own start, before any isolation
step (so no ``sys.path`` entry, no ``sys.modules`` entry, no module untrusted code could
import).  The parent hashes this file together with ``_child.py`` and refuses to start a
child if either changed on disk.  No ``typing``/``__future__`` at run time, no classes.
"""

import os

TYPE_CHECKING = False  # typing is imported for mypy only, never in the child
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

# Files outside the work dir that untrusted code may read.
READ_OK = frozenset(["/dev/null", "/dev/zero", "/dev/urandom", "/dev/random"])

# Audit events refused outright (prefix match).
DENY_PREFIXES = (
    "socket.",
    "subprocess.",
    "os.exec",
    "os.spawn",
    "os.posix_spawn",
    "os.fork",
    "os.forkpty",
    "os.kill",
    "os.killpg",
    "os.system",
    "os.popen",
    "pty.",
    "ctypes.",
    "_thread.",
    "gc.",
    "sys._current",
    "sys.settrace",
    "sys.setprofile",
    "resource.",
    "code.__new__",
    "marshal.",
    "os.link",
    "os.chdir",
    "os.fchdir",
    "os.chroot",
    "os.setns",
    "os.unshare",
    "os.putenv",
    "os.unsetenv",
    "signal.pthread_kill",
    "webbrowser.",
    "urllib.",
    "http.",
    "ftplib.",
    "smtplib.",
    "poplib.",
    "imaplib.",
    "telnetlib.",
    "nntplib.",
    "mmap.",
    "winreg.",
    "msvcrt.",
    "cpython._PySys_ClearAuditHooks",
    "sys.addaudithook",
    "os.startfile",
    "os.add_dll_directory",
    "pickle.find_class",
    "shelve.",
    "dbm.",
    "sqlite3.",
)

# Audit events refused outright (exact match).
DENY_EXACT = frozenset(["function.__new__"])

# Attributes that lead from a traceback/generator/coroutine to frames or code objects.
FRAME_ATTRS = frozenset(
    [
        "tb_frame",
        "gi_frame",
        "cr_frame",
        "ag_frame",
        "f_back",
        "f_globals",
        "f_locals",
        "f_builtins",
        "gi_code",
        "cr_code",
        "ag_code",
        "f_code",
    ]
)

# Classes of these modules may not be patched (setattr/delattr on the class): the child's
# own classes live in __main__, the rest is what the bootstrap relies on.
PROTECTED_MODULES = frozenset(
    ["__main__", "builtins", "sys", "os", "posix", "json", "json.encoder", "json.decoder", "signal", "resource"]
)


def _hook_factory(
    workdir: str,
    read_ok: "frozenset[str]",
    allowed_modules: "frozenset[str]",
    deny_prefixes: "tuple[str, ...]",
    deny_exact: "frozenset[str]",
    frame_attrs: "frozenset[str]",
    protected_modules: "frozenset[str]",
    _type: "type[type]",
    _str: "type[str]",
    _bytes: "type[bytes]",
    _int: "type[int]",
    _lstat: "Callable[[str], os.stat_result]",
    _readlink: "Callable[[str], str]",
    _getcwd: "Callable[[], str]",
    _PermissionError: "type[PermissionError]",
    _ImportError: "type[ImportError]",
    _ValueError: "type[ValueError]",
    _OSError: "type[OSError]",
    _type_getattr: "Callable[[object, str], Any]",
) -> "Callable[[str, tuple[Any, ...]], None]":
    # Everything the hook uses is bound here (closure cells), never looked up in
    # globals/builtins at call time: untrusted code may monkeypatch modules and
    # builtins.  tests assert the hook's code has no LOAD_GLOBAL/LOAD_NAME.
    # (Annotations are strings so that defining _hook loads no global either.)
    def _hook(event: "str", args: "tuple[Any, ...]") -> "None":
        # events that touch the file system: their paths are checked against the work dir
        paths: tuple[Any, ...]
        if event == "open" or event in (
            "os.listdir",
            "os.scandir",
            "os.remove",
            "os.rmdir",
            "os.mkdir",
            "os.rename",
            "os.chmod",
            "os.chown",
            "os.truncate",
            "os.utime",
            "os.symlink",
            "shutil.rmtree",
            "os.chflags",
            "os.lchflags",
            "os.getxattr",
            "os.listxattr",
            "os.setxattr",
            "os.removexattr",
            "os.lockf",
            "shutil.copyfile",
            "shutil.copymode",
            "shutil.copystat",
            "shutil.copytree",
            "shutil.move",
            "shutil.unpack_archive",
            "shutil.make_archive",
        ):
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
            elif event in (
                "os.rename",
                "os.symlink",
                "shutil.copyfile",
                "shutil.copymode",
                "shutil.copystat",
                "shutil.copytree",
                "shutil.move",
            ):
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
                out: list[str] = []
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
            if _type(name) is not _str or (name not in allowed_modules and name.split(".")[0] not in allowed_modules):
                raise _ImportError(f"sandbox: import of {name!r} is not allowed")
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
                raise _PermissionError(f"sandbox: {event} denied")
            mod = _type_getattr(obj, "__module__")
            if _type(mod) is not _str or mod in protected_modules:
                raise _PermissionError(f"sandbox: {event} on protected class denied")
            return
        if event in deny_exact:
            raise _PermissionError(f"sandbox: {event} denied")
        for pre in deny_prefixes:
            if event.startswith(pre):
                raise _PermissionError(f"sandbox: {event} denied")

    return _hook


def make_hook(workdir: str, modules: "list[str]") -> "Callable[[str, tuple[Any, ...]], None]":
    """The audit hook for ``workdir`` and the allowed ``modules``, bound to the real builtins."""
    return _hook_factory(
        os.path.realpath(workdir),
        READ_OK,
        frozenset(modules),
        DENY_PREFIXES,
        DENY_EXACT,
        FRAME_ATTRS,
        PROTECTED_MODULES,
        type,
        str,
        bytes,
        int,
        os.lstat,
        os.readlink,
        os.getcwd,
        PermissionError,
        ImportError,
        ValueError,
        OSError,
        type.__getattribute__,
    )
