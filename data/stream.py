"""Streaming a CSV/TSV/JSONL/parquet file in batches of rows, for inputs too large to hold.

``read_source`` (data/sources.py) reads a whole file, which is right for training sets; a file
to predict can be any size, so here only one batch of the needed columns is in memory at a time.
Both read with the same per-format readers (data/readers.py), so a file gets the same checks either
way. Every batch is a table of string columns (missing values are nulls). Problems raise ``DataError``
naming the file (and the line where the format has one), possibly after earlier batches were
yielded, so a writer must not publish its output until the stream is exhausted.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator, Sequence

import pyarrow as pa

from .errors import DataError
from .readers import Columns, blocks, rebatch, string_table
from .sources import Source, local_file


def read_batches(path: str | Path, columns: Sequence[str], optional: Sequence[str] = (),
                 batch_size: int = 1024) -> Iterator[pa.Table]:
    """Batches of at most ``batch_size`` rows with ``columns`` (all required) and whichever of
    ``optional`` the file has, in that order, as strings."""
    source = Source(path=str(path))
    local = local_file(source)  # a file at a URL is copied first, then streamed from disk like any file
    read = blocks(local, source.path, source.resolved_format(), Columns(tuple(columns), tuple(optional)), batch_size)
    yield from rebatch(_strings(read, source.path), batch_size)


def _strings(tables: Iterator[pa.Table], name: str) -> Iterator[pa.Table]:
    """Each block's columns as strings, before blocks are joined (a column may be all nulls in one
    block, or ints in one and floats in the next); a column of lists or objects is refused."""
    row = 0
    for table in tables:
        nested = [c for c in table.column_names if pa.types.is_nested(table[c].type)]
        if nested:
            raise DataError(f"{name}: column {nested[0]!r} holds {table[nested[0]].type} values, not text")
        yield string_table(table, name, row)
        row += table.num_rows
