"""Few-shot draws and pool samples, reproducible by seed."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pyarrow as pa

from .errors import DataError


def draw_per_class(table: pa.Table, k: int, labels: Sequence[str], seed: int, source: str) -> tuple[pa.Table, pa.Table]:
    """``k`` rows of every label (the labeled set) and the remaining rows (the pool side)."""
    rng = np.random.default_rng(seed)
    column = np.asarray(table["label"].to_pylist(), dtype=object)
    chosen: list[int] = []
    for label in labels:
        rows = np.flatnonzero(column == label)
        if len(rows) < k:
            raise DataError(f"{source}: label {label!r} has {len(rows)} examples, fewer than labeled_per_class={k}")
        chosen.extend(rng.choice(rows, size=k, replace=False).tolist())
    chosen.sort()
    rest = np.setdiff1d(np.arange(table.num_rows), chosen)
    # typed indices: an empty Python list (k=0, zero-shot) is a null array, which take() rejects
    return table.take(pa.array(chosen, type=pa.int64())), table.take(rest)


def sample_rows(table: pa.Table, n: int | None, seed: int) -> pa.Table:
    """At most ``n`` rows, drawn without replacement and kept in file order."""
    if n is None or n >= table.num_rows:
        return table
    rows = np.sort(np.random.default_rng(seed).choice(table.num_rows, size=n, replace=False))
    return table.take(rows)
