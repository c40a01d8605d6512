"""The transcript of a Q-alignment evaluation point: every request its scorer sent to the model (the prompt as the
model saw it, chat template included), the raw reply, and what the scorer's reader made of a generated reply (the
parsed value or the parse error). Stored with the point's rows (``qalign_samples.requests``) so a researcher can
see why a method scored what it did (``qval samples``, the report's drill-down pages). Requests sent while the
scorer prepares its cell are the cell's, stored once (``prepare_requests``).

Recording is on only inside ``recording()`` (the worker wraps the scorer's prepare() and each scored batch of points
in it); elsewhere, e.g. point collection with an LLM actor or a benchmark, the request layers skip it at the cost of
one lookup. It uses a context variable, not an attribute of the request layer: the layer is shared by every scorer
and cell of a worker.

Text is stored, never token ids. A text longer than ``MAX_CHARS`` keeps its first ``MAX_CHARS`` characters and the
entry's ``capped`` flag says so: nothing is cut silently.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar

MAX_CHARS = 16_000
# Log-prob replies list at most this many entries (continuations, or top next tokens): the rest is summarised.
MAX_ITEMS = 16

_ACTIVE: ContextVar[list[dict] | None] = ContextVar("qval_transcript", default=None)


@contextmanager
def recording() -> Iterator[list[dict]]:
    """Collect the requests made inside the block; yields the list they are appended to."""
    entries: list[dict] = []
    token = _ACTIVE.set(entries)
    try:
        yield entries
    finally:
        _ACTIVE.reset(token)


def active() -> bool:
    return _ACTIVE.get() is not None


def cap(text: str) -> tuple[str, bool]:
    """(text cut to MAX_CHARS, whether it was cut)."""
    return (text, False) if len(text) <= MAX_CHARS else (text[:MAX_CHARS], True)


def note_request(kind: str, prompt: Callable[[], str], reply: Callable[[], str], memo: bool) -> None:
    """Record one request. ``prompt`` and ``reply`` are callables so nothing is decoded when nobody records."""
    entries = _ACTIVE.get()
    if entries is None:
        return
    prompt_text, prompt_capped = cap(prompt())
    reply_text, reply_capped = cap(reply())
    entries.append(
        {
            "kind": kind,
            "prompt": prompt_text,
            "reply": reply_text,
            "memo": memo,
            "capped": prompt_capped or reply_capped,
            "parsed": None,
            "parse_error": None,
        }
    )


def note_parse(reply: str, parsed: str | None, error: str | None) -> None:
    """Attach a reader's outcome to the latest generated reply with this text that has none yet (readers get the
    reply text, not the request, so the text is the link)."""
    entries = _ACTIVE.get()
    if not entries:
        return
    text = cap(reply)[0]
    for entry in reversed(entries):
        if entry["kind"] == "generate" and entry["parsed"] is None and entry["parse_error"] is None:
            if entry["reply"] == text:
                entry["parsed"], entry["parse_error"] = parsed, error
                return


def listing(items: list[tuple[str, float]]) -> str:
    """A log-prob reply as text: ``'left': -1.2345 | 'up': -0.3141``, at most MAX_ITEMS entries."""
    shown = " | ".join(f"{label!r}: {value:.4f}" for label, value in items[:MAX_ITEMS])
    more = len(items) - MAX_ITEMS
    return shown + (f" | … {more} more" if more > 0 else "")
