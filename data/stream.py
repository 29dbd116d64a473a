"""Streaming a CSV/TSV/JSONL/parquet file in batches of rows, for inputs too large to hold.

``read_source`` (data/sources.py) reads a whole file, which is right for training sets; a file
to predict can be any size, so here only one batch of the needed columns is in memory at a time.
Every batch is a table of string columns (missing values are nulls). Problems raise ``DataError``
naming the file (and the line where the format has one), possibly after earlier batches were
yielded, so a writer must not publish its output until the stream is exhausted.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator, Sequence

import pyarrow as pa

from .errors import DataError
from .sources import Source, _arrow_message, _as_strings, local_file
from .textfile import check_text


def read_batches(path: str | Path, columns: Sequence[str], optional: Sequence[str] = (),
                 batch_size: int = 1024) -> Iterator[pa.Table]:
    """Batches of at most ``batch_size`` rows with ``columns`` (all required) and whichever of
    ``optional`` the file has, in that order, as strings."""
    source = Source(path=str(path))
    path = local_file(source)  # a file at a URL is copied first, then streamed from disk like any file
    fmt = source.resolved_format()
    if fmt != "parquet":
        check_text(path, str(path), fmt)
    try:
        if fmt == "parquet":
            batches = _parquet(path, columns, optional, batch_size)
        elif fmt == "jsonl":
            batches = _jsonl(path, columns, optional, batch_size)
        else:
            batches = _rebatch(_csv(path, columns, optional, fmt), batch_size)
        yield from batches
    except DataError:
        raise
    except (pa.ArrowException, UnicodeDecodeError, OSError) as err:
        raise DataError(f"{path}: cannot read as {fmt}: {_arrow_message(err)}") from None


def _present(path: Path, available: Sequence[str], columns: Sequence[str], optional: Sequence[str]) -> list[str]:
    missing = [c for c in columns if c not in available]
    if missing:
        raise DataError(f"{path}: missing column(s) {missing} that the model reads (columns: {list(available)})")
    return list(columns) + [c for c in optional if c in available and c not in columns]


def _strings(table: pa.Table, path: Path, first_row: int) -> pa.Table:
    return pa.table({c: _as_strings(table[c], f"{path}: column {c!r}", first_row) for c in table.column_names})


def _parquet(path: Path, columns, optional, batch_size: int) -> Iterator[pa.Table]:
    import pyarrow.parquet as pq

    with pq.ParquetFile(path) as f:
        wanted = _present(path, f.schema_arrow.names, columns, optional)
        row = 0
        for batch in f.iter_batches(batch_size=batch_size, columns=wanted):
            yield _strings(pa.Table.from_batches([batch]), path, row)
            row += batch.num_rows


def _csv(path: Path, columns, optional, fmt: str) -> Iterator[pa.Table]:
    import pyarrow.csv as pacsv

    parse = pacsv.ParseOptions(delimiter="\t" if fmt == "tsv" else ",", newlines_in_values=fmt == "csv",
                               quote_char=False if fmt == "tsv" else '"')
    read = pacsv.ReadOptions(block_size=1 << 20)
    with pacsv.open_csv(path, read_options=read, parse_options=parse) as header:
        wanted = _present(path, header.schema.names, columns, optional)
    convert = pacsv.ConvertOptions(include_columns=wanted, column_types={c: pa.string() for c in wanted},
                                   strings_can_be_null=False, quoted_strings_can_be_null=False)
    with pacsv.open_csv(path, read_options=read, parse_options=parse, convert_options=convert) as reader:
        for batch in reader:
            yield pa.Table.from_batches([batch])


def _jsonl(path: Path, columns, optional, batch_size: int) -> Iterator[pa.Table]:
    """One JSON object per line, parsed line by line: values of any JSON type become strings, a
    key missing from one object is a null there, and a bad line is named (pyarrow's block
    reader needs one type per column and cannot say which line broke)."""
    wanted = list(dict.fromkeys([*columns, *optional]))
    seen: set[str] = set()
    rows: list[dict] = []
    with path.open(encoding="utf-8") as f:
        for line_no, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as err:
                raise DataError(f"{path}: line {line_no}: not valid JSON ({err.msg})") from None
            if not isinstance(obj, dict):
                raise DataError(f"{path}: line {line_no}: expected a JSON object, got {type(obj).__name__}")
            seen.update(k for k in wanted if k in obj)
            rows.append(obj)
            if len(rows) == batch_size:
                yield _json_table(rows, wanted)
                rows = []
    _present(path, sorted(seen), columns, ())  # a column no object has is a missing column
    if rows:
        yield _json_table(rows, wanted)


def _json_table(rows: list[dict], columns: list[str]) -> pa.Table:
    def text(value) -> str | None:
        return value if value is None or isinstance(value, str) else json.dumps(value)

    return pa.table({c: pa.array([text(r.get(c)) for r in rows], pa.string()) for c in columns})


def _rebatch(tables: Iterator[pa.Table], size: int) -> Iterator[pa.Table]:
    """Re-cut tables of any length (CSV blocks) into ``size``-row batches."""
    pending: list[pa.Table] = []
    count = 0
    for table in tables:
        pending.append(table)
        count += table.num_rows
        while count >= size:
            joined = pa.concat_tables(pending)
            yield joined.slice(0, size)
            pending = [joined.slice(size)]
            count = pending[0].num_rows
    if count:
        yield pa.concat_tables(pending)
