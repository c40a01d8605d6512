"""Reading numbers, letters and code out of model replies. Each reader returns the value or ``Failed(reason)``, and
notes what it read in the point's transcript (qval.models.transcript) beside the reply it read."""

from __future__ import annotations

import math
import re

from ...models import transcript
from .base import Failed

_NUMBER = r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?"
_ANSWER = re.compile(r"<answer>\s*(.*?)\s*</answer>", re.S | re.I)
LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"


def _snippet(text: str) -> str:
    text = " ".join(text.split())
    return repr(text[:80] + ("…" if len(text) > 80 else ""))


def parse_number(text: str) -> float | Failed:
    """The number inside <answer></answer>, else the first number in the reply."""
    value = _parse_number(text)
    _note(text, value)
    return value


def _note(text: str, value) -> None:
    """Record a reader's outcome: a value, a list of values (some may be Failed), or Failed."""
    if not transcript.active():
        return
    items = value if isinstance(value, list) else [value]
    errors = [v.reason for v in items if isinstance(v, Failed)]
    shown = ", ".join("failed" if isinstance(v, Failed) else f"{v:g}" for v in items)
    transcript.note_parse(text, None if isinstance(value, Failed) else shown, "; ".join(errors) or None)


def _parse_number(text: str) -> float | Failed:
    tagged = _ANSWER.search(text)
    found = re.search(_NUMBER, tagged.group(1) if tagged else text)
    if not found:
        return Failed(f"no number in the reply {_snippet(text)}")
    value = float(found.group(0))
    return value if math.isfinite(value) else Failed(f"non-finite number in the reply {_snippet(text)}")


def parse_lettered_numbers(text: str, n: int) -> list[float | Failed]:
    """Lines like 'A: 0.5' for n lettered items; an item without a line fails alone."""
    found = {}
    for letter, number in re.findall(rf"(?m)^\W*([A-Z])\W*[:=\-)]\s*({_NUMBER})", text):
        found.setdefault(letter, float(number))
    values: list[float | Failed] = [
        found[LETTERS[i]]
        if LETTERS[i] in found and math.isfinite(found[LETTERS[i]])
        else Failed(f"no value for {LETTERS[i]} in the reply {_snippet(text)}")
        for i in range(n)
    ]
    _note(text, values)
    return values


def parse_ranking(text: str, n: int) -> list[int] | Failed:
    """A best-first order of the n letters; every letter must appear (a partial order is not a ranking)."""
    allowed = LETTERS[:n]
    order = []
    for letter in re.findall(r"\b([A-Z])\b", text):
        if letter in allowed and letter not in order:
            order.append(letter)
    if len(order) < n:
        missing = "".join(c for c in allowed if c not in order)
        failed = Failed(f"ranking misses {missing} in the reply {_snippet(text)}")
        _note(text, failed)
        return failed
    if transcript.active():
        transcript.note_parse(text, "ranking " + " > ".join(order), None)
    return [allowed.index(c) for c in order]


def extract_code(text: str) -> str:
    """The first fenced code block, else the reply from its first 'def'/'import' line on."""
    fenced = re.search(r"```(?:python|py)?\s*\n(.*?)(?:```|$)", text, re.S)
    if fenced:
        return fenced.group(1)
    start = re.search(r"(?m)^(?:def |import |from )", text)
    return text[start.start() :] if start else text


def lettered(options: list[str]) -> str:
    return "\n".join(f"{LETTERS[i]}. {o}" for i, o in enumerate(options))
