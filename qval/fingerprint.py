"""Environment fingerprint: what a number was measured on (hardware, versions, git sha)."""

from __future__ import annotations

import os
import platform
import socket
import subprocess
import sys
from functools import lru_cache
from importlib import metadata
from pathlib import Path

PACKAGES = ("qval", "torch", "transformers", "duckdb", "numpy", "scipy", "pandas", "gymnasium", "vllm")


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def gpu_name() -> str | None:
    """The visible GPU, without importing torch when nvidia-smi answers (keeps `qval plan` fast)."""
    if os.environ.get("CUDA_VISIBLE_DEVICES", None) == "":
        return None
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True, text=True, timeout=10
        )
        names = [n.strip() for n in out.stdout.splitlines() if n.strip()]
        return names[0] if out.returncode == 0 and names else None
    except (OSError, subprocess.SubprocessError):
        return None


@lru_cache(maxsize=1)
def hardware_class() -> str:
    """A coarse hardware label for decode-cell identity: timings are only compared within one class."""
    gpu = gpu_name()
    return f"gpu:{gpu}" if gpu else f"cpu:{cpu_name()}x{os.cpu_count()}"


def git_sha(repo: Path | None = None) -> tuple[str | None, bool]:
    repo = repo or Path(__file__).resolve().parent.parent
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True, timeout=10)
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=repo,
            capture_output=True,
            text=True,
            timeout=10,
        )
        if sha.returncode != 0:
            return None, False
        return sha.stdout.strip()[:12], bool(dirty.stdout.strip())
    except (OSError, subprocess.SubprocessError):
        return None, False


def package_versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


THREAD_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "QVAL_TORCH_THREADS", "VLLM_CPU_OMP_THREADS_BIND")


def fingerprint() -> dict:
    sha, dirty = git_sha()
    return {
        "host": socket.gethostname(),
        "hardware": hardware_class(),
        "cpu": cpu_name(),
        "cpu_count": os.cpu_count(),
        # The CPUs qval may use (taskset, a cpuset): what the runner splits into the workers' threads.
        "cpus_allowed": len(os.sched_getaffinity(0)),
        "gpu": gpu_name(),
        # Thread settings a timing depends on, as this process was given them (unset: the library's default). Each
        # decoding turn also records the threads its engine actually ran with (decode_samples.threads).
        "thread_env": {name: os.environ.get(name) for name in THREAD_ENV},
        "python": platform.python_version(),
        "platform": platform.platform(),
        "git_sha": sha,
        "git_dirty": dirty,
        "packages": package_versions(),
        "argv": " ".join(sys.argv),
    }
