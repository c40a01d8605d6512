"""Where a leaderboard row's drill-down page lives (drilldown.py writes it, document.py links to it); its own module
so the document model needs nothing of the page writer."""

from __future__ import annotations

from urllib.parse import quote

FOLDER = "cells"


def page_file(cell_id: str) -> str:
    """The page's file name in FOLDER. Cell ids are hex digests; any other id (an import's, a test's) is
    percent-encoded whole, so its page can never land outside the folder."""
    return f"{quote(str(cell_id), safe='')}.html"


def cell_page(cell_id: str) -> str:
    """The link to the page, relative to the leaderboard's index.html (the file name encoded once more: a browser
    decodes a link's escapes before it opens the file)."""
    return f"{FOLDER}/{quote(page_file(cell_id), safe='')}"
