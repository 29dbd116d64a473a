"""The data layer's one error: input data that cannot be used, and the nearest right word to name in it."""

from __future__ import annotations

import difflib
from typing import Iterable


class DataError(ValueError):
    """Input data that cannot be used; the message names the file and, where known, the row."""


def nearest(word: str, choices: Iterable[str]) -> str | None:
    """The choice ``word`` most likely mistypes (the same but for case, else the closest spelling), for a
    message's "did you mean"; None when none is close."""
    choices = list(choices)
    same = [c for c in choices if c.casefold() == word.casefold()]
    match = same or difflib.get_close_matches(word, choices, n=1)
    return match[0] if match else None
