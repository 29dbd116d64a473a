"""The data layer's one error: input data that cannot be used, and the nearest right word to name in it."""

from __future__ import annotations

import difflib
from typing import Iterable


class DataError(ValueError):
    """Input data that cannot be used; the message names the file and, where known, the row."""


def nearest(word: str, choices: Iterable[str], cutoff: float = 0.6) -> str | None:
    """The choice ``word`` most likely mistypes, for a message's "did you mean"; None when none is close
    (``nearby``'s first)."""
    return next(iter(nearby(word, choices, 1, cutoff)), None)


def nearby(word: str, choices: Iterable[str], n: int, cutoff: float = 0.6) -> list[str]:
    """Up to ``n`` choices ``word`` may mistype, nearest first: the same but for case, then the closest
    spellings with case ignored (``MODELS:/x`` mistypes ``models:/``), at least ``cutoff`` alike (difflib's
    ratio: 0.6 its default; a higher one where a wrong guess would mislead, such as a registered model's name)."""
    spelled: dict[str, list[str]] = {}
    for choice in choices:
        spelled.setdefault(choice.casefold(), []).append(choice)
    close = difflib.get_close_matches(word.casefold(), list(spelled), n=n, cutoff=cutoff)
    return [choice for folded in close for choice in spelled[folded]][:n]
