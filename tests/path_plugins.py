"""Make a plugin package visible to qval without installing anything into the test interpreter's environment.

``pip install -e .`` of a package amounts to two things: a ``<dist>.dist-info`` folder whose ``entry_points.txt``
declares the entry points, and the package's folder on ``sys.path``. Writing both under a temporary folder and
putting it on PYTHONPATH gives every qval process (CLI, workers, ingest) the same view of the plugin as the
install would, and nothing outlives the test.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path


def expose_package(site: Path, project: Path) -> dict[str, str]:
    """Entry points of ``project/pyproject.toml`` as a dist-info under ``site``; returns the env for ``run_qval``."""
    meta = tomllib.loads((project / "pyproject.toml").read_text())["project"]
    info = site / f"{meta['name'].replace('-', '_')}-{meta['version']}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {meta['name']}\nVersion: {meta['version']}\n")
    groups = meta.get("entry-points", {})
    text = "".join(
        f"[{group}]\n" + "".join(f"{name} = {target}\n" for name, target in entries.items()) + "\n"
        for group, entries in groups.items()
    )
    (info / "entry_points.txt").write_text(text)
    path = os.pathsep.join([str(site), str(project), os.environ.get("PYTHONPATH", "")])
    return {"PYTHONPATH": path.rstrip(os.pathsep)}
