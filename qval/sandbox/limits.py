"""What a sandboxed program is allowed: resources, importable modules, the identity it runs as.

The child (``_child.py``) applies these; it cannot import this module (it runs without
qval on its path), so :func:`child_limits` turns them into the plain JSON fields it reads.
"""

from __future__ import annotations

import dataclasses
from typing import Any

#: uid/gid used for untrusted code when the parent runs as root (nobody/nogroup).
SANDBOX_UID = 65534
SANDBOX_GID = 65534

#: Modules untrusted code may import.  They are imported by the child *before*
#: privileges are dropped (the stdlib may be unreadable to the sandbox uid, e.g. a
#: pyenv under /root); any other import is refused by the audit hook.
ALLOWED_MODULES: tuple[str, ...] = (
    "math",
    "cmath",
    "re",
    "json",
    "string",
    "collections",
    "collections.abc",
    "itertools",
    "functools",
    "operator",
    "statistics",
    "random",
    "heapq",
    "bisect",
    "difflib",
    "unicodedata",
    "textwrap",
    "fractions",
    "decimal",
    "numbers",
    "enum",
    "datetime",
    "copy",
    "typing",
    "array",
    "struct",
    "abc",
    "types",
    "time",
    "encodings",
    "encodings.ascii",
    "encodings.latin_1",
    "encodings.utf_16",
    "encodings.utf_32",
    "encodings.cp1252",
    "encodings.unicode_escape",
)


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


_POSITIVE = (
    "cpu_seconds",
    "memory_mb",
    "wall_seconds_per_call",
    "total_wall_seconds",
    "max_output_bytes",
    "max_processes",
    "max_open_files",
    "max_file_bytes",
    "max_disk_bytes",
)


def check_limits(limits: Limits) -> None:
    """Raise ValueError for a limit that would disable its layer (0 or negative)."""
    for f in _POSITIVE:
        if not getattr(limits, f) > 0:
            raise ValueError(f"Limits.{f} must be > 0")
    if limits.max_restarts < 0:
        raise ValueError("Limits.max_restarts must be >= 0")


def child_limits(limits: Limits) -> dict[str, Any]:
    """The config fields the child reads its limits from."""
    return {
        "cpu_seconds": limits.cpu_seconds,
        "memory_bytes": int(limits.memory_mb) * 1024 * 1024,
        "per_call": limits.wall_seconds_per_call,
        "max_output": limits.max_output_bytes,
        "nproc": limits.max_processes,
        "nofile": limits.max_open_files,
        "fsize": limits.max_file_bytes,
        "disk": limits.max_disk_bytes,
    }
