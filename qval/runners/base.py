"""Base class of runners. A runner executes shards of a written plan; workers write parts, never the database."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import ClassVar

EventHandler = Callable[[int, dict], None]  # (shard index, event)


class Runner:
    name: ClassVar[str] = ""
    options: ClassVar[dict[str, type]] = {}  # accepted --runner-opt keys and their types

    def __init__(self, results: Path, workers: int = 1, options: dict[str, str] | None = None):
        self.results, self.workers = Path(results), max(1, workers)
        self.opts = self.parse_options(options or {})

    @classmethod
    def parse_options(cls, raw: dict[str, str]) -> dict:
        from ..errors import UsageError

        parsed = {}
        for key, value in raw.items():
            if key not in cls.options:
                known = ", ".join(sorted(cls.options)) or "none"
                raise UsageError(f"runner '{cls.name}' has no option '{key}' (options: {known})")
            try:
                parsed[key] = cls.options[key](value)
            except ValueError:
                raise UsageError(f"runner option {key}={value!r} is not a valid {cls.options[key].__name__}") from None
        return parsed

    def run(self, plan, plan_path: Path, shards: list[int], run_id: str, on_event: EventHandler) -> dict[int, int]:
        """Run the shards; return each shard's exit status (0 = all its cells finished)."""
        raise NotImplementedError

    @staticmethod
    def worker_command(plan_path: Path, shard: int, results: Path, run_id: str) -> list[str]:
        return [
            sys.executable,
            "-m",
            "qval.worker",
            "--plan",
            str(plan_path),
            "--shard",
            str(shard),
            "--results",
            str(results),
            "--run-id",
            run_id,
        ]
