"""Parquet rows in and out of tasks; paths are what tasks pass to each other.

A set's logits are one parquet file, or, for a set labeled in shards, a directory of
``shard-00007-of-00010.parquet`` files (each written atomically by its own task); readers take
either, in row order, and refuse a shard directory that is not complete. Paths may be URLs
(``data/location.py``): readers work on local copies.
"""

from __future__ import annotations

import math
import re
from collections import abc
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from data.location import local, location, names
from data.readers import rebatch


def ref(path: str | Path) -> str:
    """A path's identity for content keys: its keyed folder and name, not where the run dir lives."""
    path = Path(path)
    return f"{path.parent.name}/{path.name}"


class TableRows(abc.Sequence):
    """A table's rows as dicts, each made when asked for: a training set of a million pool rows
    stays in columns (about its text's bytes) rather than a million dicts of Python strings."""

    def __init__(self, table: pa.Table):
        self.table = table

    def __len__(self) -> int:
        return self.table.num_rows

    def __getitem__(self, i: int) -> dict:
        if not -len(self) <= i < len(self):
            raise IndexError(i)
        return {name: column[i].as_py() for name, column in zip(self.table.column_names, self.table.columns)}


def read_rows(path: str | Path, columns: Sequence[str] | None = None) -> list[dict]:
    return pq.read_table(local(path), columns=list(columns) if columns else None).to_pylist()


def iter_rows(path: str | Path, columns: Sequence[str], batch_size: int = 4096, start: int = 0,
              stop: int | None = None) -> Iterator[dict]:
    """Rows ``start``…``stop`` of a parquet file as dicts, read ``batch_size`` at a time; row groups
    wholly outside the range are not read, rows outside it are not converted."""
    file = pq.ParquetFile(local(path), pre_buffer=False)
    stop = file.metadata.num_rows if stop is None else stop
    groups, seen, offset = [], None, 0
    for i in range(file.metadata.num_row_groups):
        size = file.metadata.row_group(i).num_rows
        if offset < stop and offset + size > start:
            groups.append(i)
            seen = offset if seen is None else seen
        offset += size
    if not groups:
        return
    for batch in file.iter_batches(batch_size=batch_size, columns=list(columns), row_groups=groups):
        lo, hi = max(start - seen, 0), min(stop - seen, batch.num_rows)
        seen += batch.num_rows
        if lo < hi:
            yield from batch.slice(lo, hi - lo).to_pylist()
        if seen >= stop:
            return


CHUNK_ROWS = 65_536  # rows held at once where a pool is streamed (combining, selecting)
SHARD = "shard-{:05d}-of-{:05d}.parquet"
SHARD_NAME = re.compile(r"shard-(\d{5})-of-(\d{5})\.parquet")  # temporaries (".shard-…") do not match


def num_rows(path: str | Path) -> int:
    return pq.ParquetFile(local(path)).metadata.num_rows


def shard_count(rows: int, shard_rows: int | None) -> int:
    """How many labeling tasks a set of ``rows`` rows gets: one unless it has more than ``shard_rows``."""
    return 1 if shard_rows is None or rows <= shard_rows else math.ceil(rows / shard_rows)


def parquet_files(path: str | Path) -> list[Path]:
    """A parquet file as itself; a shard directory as its shards in order, all of them or an error
    (local paths either way: shards at a URL are copied)."""
    path = location(path)
    listing = names(path)
    if listing is not None:
        shards = sorted(name for name in listing if SHARD_NAME.fullmatch(name))
        total = int(SHARD_NAME.fullmatch(shards[0])[2]) if shards else 0
        if not shards or shards != [SHARD.format(i, total) for i in range(total)]:
            raise FileNotFoundError(f"{path}: incomplete shard directory ({len(shards)} of {total or '?'} shards)")
        return [local(path / name) for name in shards]
    return [local(path)]


def iter_chunks(path: str | Path, columns: Sequence[str] | None, rows: int) -> Iterator[pa.Table]:
    """A parquet file's (or shard directory's) rows in order, ``rows`` at a time (the last may be fewer),
    so several files of the same rows can be read in step with ``zip``.

    Streaming readers open files with ``pre_buffer=False``: pre-buffering fetches every row group
    asked for up front, which makes memory grow with the file (35 MiB against 13 MiB for 1M texts).
    """
    batches = (batch for file in parquet_files(path)
               for batch in pq.ParquetFile(file, pre_buffer=False).iter_batches(batch_size=rows, columns=columns))
    yield from rebatch((pa.Table.from_batches([batch]) for batch in batches), rows)


def iter_with_logits(path: str | Path, columns: Sequence[str] | None, logit_paths: Sequence[str | Path],
                     rows: int) -> Iterator[tuple[pa.Table, list[np.ndarray]]]:
    """A set's rows, ``rows`` at a time, each chunk with every model's logits on those rows (one array per
    file of ``logit_paths``, in order): what ensembling a set streams through."""
    streams = (iter_chunks(p, ["logits"], rows) for p in logit_paths)
    for chunk, *model_chunks in zip(iter_chunks(path, columns, rows), *streams, strict=True):
        yield chunk, [table_logits(c) for c in model_chunks]


def logits_column(logits: np.ndarray) -> pa.Array:
    flat = pa.array(np.ascontiguousarray(logits, dtype=np.float32).ravel())
    return pa.FixedSizeListArray.from_arrays(flat, logits.shape[1])


def read_logits(path: str | Path, column: str = "logits") -> np.ndarray:
    """All logits of a file or shard directory at once: for sets small enough to hold."""
    return np.concatenate([table_logits(pq.read_table(f, columns=[column]), column) for f in parquet_files(path)])


def table_logits(table: pa.Table, column: str = "logits") -> np.ndarray:
    col = table[column].combine_chunks()  # flatten(), not .values: a sliced chunk keeps its offset
    return col.flatten().to_numpy(zero_copy_only=False).reshape(len(col), col.type.list_size)
