"""What every `qval` command module shares: the typer app, the consoles, the common options and small helpers.
Commands live in qval/cli.py (running and reporting) and qval/cli_tools.py (import, export, replay, compare,
samples); both register on the one app defined here."""

from __future__ import annotations

import errno
import os
import sys
from contextlib import contextmanager
from pathlib import Path

import typer
from rich.console import Console

from .errors import results_not_writable

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    rich_markup_mode=None,
    help="qval: training-free evaluation of Q-aligned supervision signals and decoding policies.",
)
# Piped output (scripts, CI logs) gets wide lines instead of rich's 80-column truncation of table cells.
out = Console(highlight=False, width=None if sys.stdout.isatty() else 250)
err = Console(stderr=True, highlight=False, width=None if sys.stderr.isatty() else 250)

RESULTS_OPT = typer.Option(Path("results"), "--results", help="Results folder (DuckDB file and Parquet parts).")
JSON_OPT = typer.Option(False, "--json", help="Print one JSON document on stdout instead of tables.")
QUIET_OPT = typer.Option(False, "--quiet", "-q", help="No progress or chatter; errors still go to stderr.")
# `plan` and `run` take the same suite overrides, so both show the cells the other would run.
LIMIT_OPT = typer.Option(
    None,
    "--limit",
    min=1,
    help="At most N samples per cell (Q-alignment points, decoding prompts), the first N: a quick first look. "
    "Limited cells are cells of their own (label 'limit=N'); the full run later runs the full cells.",
)
SET_OPT = typer.Option(
    [],
    "--set",
    help="PATH=VALUE override of the suite file, repeatable: --set qalign.points.episodes=4, "
    "--set 'decode.temperatures=[0, 0.7]' (VALUE is YAML; lists index by position: qalign.envs.0.params.map=8x8). "
    "Checked like the file.",
)
MODEL_OPT = typer.Option(
    [],
    "--model",
    help="Model to evaluate, repeatable; replaces the suite's models: a source name (see `qval list models`) or a "
    "YAML mapping such as '{source: hf, params: {path: /models/x}}'.",
)


def emit_json(obj) -> None:
    import json

    print(json.dumps(obj, indent=1, default=str, allow_nan=False))


@contextmanager
def writing(results: Path):
    """A part of the results folder qval cannot write (a read-only subfolder the up-front check in results_lock does
    not see) is a usage error naming the folder and the fix; other OSErrors, a plugin's own files, stay errors."""
    try:
        yield
    except OSError as exc:
        if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOTDIR) and inside(exc.filename, results):
            raise results_not_writable(results, exc) from None
        raise


def inside(filename, folder: Path) -> bool:
    if not isinstance(filename, str):
        return False
    return Path(os.path.abspath(filename)).is_relative_to(os.path.abspath(folder))
