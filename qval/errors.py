"""Errors that reach the user as a clear message (never a traceback) and their exit codes."""

from __future__ import annotations

import errno
import os


class QvalError(Exception):
    """Base class: a problem the user can fix. The CLI prints the message and exits with `exit_code`."""

    exit_code = 1


class UsageError(QvalError):
    """Bad input from the user (suite file, CLI argument): exit code 2, nothing is written."""

    exit_code = 2


MAX_LISTED_PROBLEMS = 20  # a suite with more is probably the wrong file: the first screenful says so


class SuiteError(UsageError):
    """A malformed suite. The message always names the file, the field and the reason; a suite with several problems
    lists each on its own line (fixing one typo per run is slow). ``field``/``reason`` are the first problem's."""

    def __init__(self, path: str | os.PathLike, field: str, reason: str, more: list[tuple[str, str]] | None = None):
        self.path, self.field, self.reason = str(path), field, reason
        self.problems = [(field, reason), *(more or [])]
        if len(self.problems) == 1:
            super().__init__(f"{self.path}: field '{field}': {reason}")
            return
        lines = [f"  field '{f}': {r}" for f, r in self.problems[:MAX_LISTED_PROBLEMS]]
        if len(self.problems) > MAX_LISTED_PROBLEMS:
            lines.append(f"  … and {len(self.problems) - MAX_LISTED_PROBLEMS} more")
        super().__init__(f"{self.path}: {len(self.problems)} problems:\n" + "\n".join(lines))

    @classmethod
    def of(cls, path: str | os.PathLike, problems: list[tuple[str, str]]) -> SuiteError:
        """One error for a non-empty list of (field, reason)."""
        return cls(path, *problems[0], more=problems[1:])


class PluginError(QvalError):
    """A plugin that is unknown, clashes with another, or fails to import when it is used."""

    exit_code = 2


class ResultsLockedError(QvalError):
    """Another qval process writes into the same results directory."""

    exit_code = 3


def results_not_writable(results: str | os.PathLike, exc: OSError) -> UsageError:
    """The usage error for a results folder qval cannot create or write (read-only, a file in the way)."""
    if isinstance(exc, (NotADirectoryError, FileExistsError)) or exc.errno in (errno.ENOTDIR, errno.EEXIST):
        why = f"{exc.filename or results} is a file, not a folder"
    elif isinstance(exc, PermissionError) or exc.errno == errno.EROFS:
        why = "permission denied"
    else:
        why = exc.strerror or str(exc)
    return UsageError(f"cannot write to {results}: {why}; choose another --results folder or fix its permissions")
