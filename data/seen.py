"""Which values of a stream were seen before, in 8 bytes per value: for ids of a file too large to
hold (``ipet predict``'s input), where a set of the ids themselves would cost 60–100 bytes each.

A value is kept as its 64-bit hash, in sorted runs whose lengths at least halve from one to the next
(a new run is merged into the one before while it is as long), so a batch is looked up with one
binary search per run (at most log2 of the count) and each value is merged O(log n) times. 10 million
values take 80 MB, and up to three times that for a moment while the largest runs merge. Two
different values may share a hash (about once in 400,000 streams of 10^7 values): a hit is a
candidate, for the caller to check against the values themselves. Python's ``hash`` of a string
differs between processes, so the hashes are good for one process only, which is all they are kept for.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np


class Seen:
    """Hashes of the values added so far."""

    def __init__(self) -> None:
        self._runs: list[np.ndarray] = []

    def add(self, values: Sequence[str]) -> list[int]:
        """Remember ``values``; the positions among them whose hash was seen before (in an earlier call,
        or earlier in this one), in order."""
        if not len(values):  # an empty batch (a parquet row group of none): no run, as an empty one breaks lookups
            return []
        hashes = np.fromiter((hash(v) for v in values), dtype=np.int64, count=len(values))
        seen = np.zeros(len(hashes), dtype=bool)
        for run in self._runs:
            at = np.searchsorted(run, hashes).clip(max=len(run) - 1)
            seen |= run[at] == hashes
        order = np.argsort(hashes, kind="stable")  # stable: a repeat sorts after its first occurrence
        ordered = hashes[order]
        seen[order[1:][ordered[1:] == ordered[:-1]]] = True
        self._runs.append(ordered)
        while len(self._runs) > 1 and len(self._runs[-2]) <= len(self._runs[-1]):
            last = self._runs.pop()
            self._runs[-1] = np.sort(np.concatenate([self._runs[-1], last]), kind="stable")
        return np.flatnonzero(seen).tolist()
