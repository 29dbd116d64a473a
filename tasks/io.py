"""Parquet rows in and out of tasks; paths are what tasks pass to each other."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq


def ref(path: str | Path) -> str:
    """A path's identity for content keys: its keyed folder and name, not where the run dir lives."""
    path = Path(path)
    return f"{path.parent.name}/{path.name}"


def read_rows(path: str | Path, columns: Sequence[str] | None = None) -> list[dict]:
    return pq.read_table(path, columns=list(columns) if columns else None).to_pylist()


def iter_rows(path: str | Path, columns: Sequence[str], batch_size: int = 4096) -> Iterator[dict]:
    for batch in pq.ParquetFile(path).iter_batches(batch_size=batch_size, columns=list(columns)):
        yield from batch.to_pylist()


def logits_column(logits: np.ndarray) -> pa.Array:
    flat = pa.array(np.ascontiguousarray(logits, dtype=np.float32).ravel())
    return pa.FixedSizeListArray.from_arrays(flat, logits.shape[1])


def read_logits(path: str | Path, column: str = "logits") -> np.ndarray:
    col = pq.read_table(path, columns=[column])[column].combine_chunks()
    return col.values.to_numpy(zero_copy_only=False).reshape(len(col), -1)
