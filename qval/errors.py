"""Errors that reach the user as a clear message (never a traceback) and their exit codes."""

from __future__ import annotations

import os


class QvalError(Exception):
    """Base class: a problem the user can fix. The CLI prints the message and exits with `exit_code`."""

    exit_code = 1


class UsageError(QvalError):
    """Bad input from the user (suite file, CLI argument): exit code 2, nothing is written."""

    exit_code = 2


class SuiteError(UsageError):
    """A malformed suite. The message always names the file, the field and the reason."""

    def __init__(self, path: str | os.PathLike, field: str, reason: str):
        self.path, self.field, self.reason = str(path), field, reason
        super().__init__(f"{self.path}: field '{field}': {reason}")


class PluginError(QvalError):
    """A plugin that is unknown, clashes with another, or fails to import when it is used."""

    exit_code = 2


class ResultsLockedError(QvalError):
    """Another qval process writes into the same results directory."""

    exit_code = 3
