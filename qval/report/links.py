"""Where a leaderboard row's drill-down page lives (drilldown.py writes it, document.py links to it); its own module
so the document model needs nothing of the page writer."""

from __future__ import annotations

FOLDER = "cells"


def cell_page(cell_id: str) -> str:
    """The page of a cell, relative to the leaderboard's index.html (cell ids are hex digests: safe in a URL)."""
    if not cell_id.isalnum():
        raise ValueError(f"invalid cell id {cell_id!r}")
    return f"{FOLDER}/{cell_id}.html"
