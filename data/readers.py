"""One reader per file format (CSV/TSV, JSONL, parquet), each streaming a file in blocks and
checking it as it goes: UTF-8 text, ragged CSV rows, one JSON type per column.

Whole-file reads (``read_source``, data/sources.py) and batch streams (``read_batches``,
data/stream.py) are both built on ``blocks``, and both make strings of its typed values with
``string_table``, so a file gets the same checks and the same texts whichever path reads it. A problem
raises ``DataError`` naming the file and, where the format has lines, the line.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

import pyarrow as pa
import pyarrow.compute as pc

from .errors import DataError
from .textfile import check_text, line_of

FORMATS = ("csv", "tsv", "jsonl", "parquet")
BLOCK_ROWS = 65_536  # rows a JSONL or parquet block holds when a whole file is read
CSV_BLOCK = 1 << 20  # bytes a CSV block holds
SHOWN = 5
# How files are read, in every data key (data/prepare.py) and every store segment ``ipet ingest`` writes, so
# a run directory prepared by readers that read otherwise reads its data again, and a store's rows they
# ingested are known (2: CSV/JSONL values as written; before, a CSV column of numbers was typed, so `007`
# was `7`). A set that comes out row for row the same keeps its file name and what was trained on it.
READER = 2


@dataclass(frozen=True)
class Columns:
    """The columns a stream reads: every one of ``required`` and whichever of ``optional`` the file has."""

    required: tuple[str, ...]
    optional: tuple[str, ...] = ()

    def of(self, name: str, available: Sequence[str]) -> list[str]:
        """The columns to read, in this order; a DataError naming the file if a required one is missing."""
        missing = [c for c in self.required if c not in available]
        if missing:
            raise DataError(f"{name}: missing column(s) {missing} that the model reads (columns: {list(available)})")
        return list(self.required) + [c for c in self.optional if c in available and c not in self.required]


def blocks(path: Path, name: str, fmt: str, columns: Columns | None = None, block_rows: int = BLOCK_ROWS,
           header: bool = True, names: Sequence[str] | None = None) -> Iterator[pa.Table]:
    """The rows of the local file ``path`` (called ``name`` in messages) in blocks, typed as the format
    types them (nested values kept).

    Args:
        fmt: one of ``FORMATS``.
        columns: the columns a stream reads, or None for every column of a whole-file read.
        block_rows: how many rows a JSONL or parquet block holds (a CSV's blocks are 1 MiB).
        header, names: a CSV's header row, or the names of its columns when it has none.

    Yields:
        The blocks. A CSV's and a JSONL file's values are their text as written, never parsed as
        numbers or booleans: ``007``, ``1.0``, ``1e3``, ``true``, ``NA`` and an empty field are those
        texts (a JSONL number is a string column, a JSON ``true`` a boolean one). Texts and ids must
        reach the model and the predictions exactly as the user wrote them; only labels are matched
        loosely, against the config's labels (``data/labels.py``). A problem raises ``DataError``,
        possibly after earlier blocks were yielded. A CSV or parquet file without rows gives one empty
        block that has its columns; a JSONL file without an object is a problem.
    """
    if fmt != "parquet":
        check_text(path, name, fmt)
    try:
        if fmt == "parquet":
            yield from _parquet(path, name, columns, block_rows)
        elif fmt == "jsonl":
            yield from _jsonl(path, name, columns, block_rows)
        else:
            yield from _csv(path, name, fmt, columns, header, names)
    except (pa.ArrowException, UnicodeDecodeError, OSError, OverflowError) as err:
        raise DataError(f"{name}: cannot read as {fmt}: {arrow_message(err)}") from None


def read_whole(path: Path, name: str, fmt: str, header: bool = True, names: Sequence[str] | None = None) -> pa.Table:
    """Every row and column of a file as one table: its blocks joined, a column's type widened where
    blocks differ (ints in one, floats in the next) and a JSONL key missing from a block null there."""
    parts = list(blocks(path, name, fmt, header=header, names=names))
    try:
        return pa.concat_tables(parts, promote_options="permissive") if parts else pa.table({})
    except pa.ArrowException as err:
        raise DataError(f"{name}: cannot read as {fmt}: {arrow_message(err)}") from None


def _parquet(path: Path, name: str, columns: Columns | None, rows: int) -> Iterator[pa.Table]:
    import pyarrow.parquet as pq

    with pq.ParquetFile(path) as f:
        names = _named_once(f.schema_arrow.names, name)  # a name twice: selecting it raised a KeyError
        wanted = None if columns is None else columns.of(name, names)
        empty = True
        for batch in f.iter_batches(batch_size=rows, columns=wanted):
            empty = False
            yield pa.Table.from_batches([batch])
        if empty:
            yield f.schema_arrow.empty_table().select(wanted or f.schema_arrow.names)


def _named_once(columns: Sequence[str], name: str) -> Sequence[str]:
    """``columns``, unless the header (a parquet file's schema) names one twice: which of the two a pattern
    or the label means is not ours to guess (pyarrow said only "Can't unify schema with duplicate field
    names", or for parquet raised a KeyError)."""
    twice = sorted({c for c in columns if columns.count(c) > 1})
    if twice:
        raise DataError(f"{name}: column(s) {twice} named more than once in the header; give each column its "
                        "own name")
    return columns


def _csv(path: Path, name: str, fmt: str, columns: Columns | None, header: bool,
         names: Sequence[str] | None) -> Iterator[pa.Table]:
    import pyarrow.csv as pacsv

    if not header and not names:
        raise DataError(f"{name}: header: false needs columns: [...] to name the columns")
    ragged: list = []

    def collect(row) -> str:
        ragged.append(row)
        return "skip"

    read = pacsv.ReadOptions(column_names=None if header else list(names), block_size=CSV_BLOCK)
    parse = pacsv.ParseOptions(delimiter="\t" if fmt == "tsv" else ",", newlines_in_values=fmt == "csv",
                               quote_char=False if fmt == "tsv" else '"', invalid_row_handler=collect)
    with pacsv.open_csv(path, read_options=read, parse_options=parse) as first:  # the header, to type every column
        available = _named_once(first.schema.names, name)
    ragged.clear()  # the second open reads the same rows again
    wanted = list(available) if columns is None else columns.of(name, available)
    convert = pacsv.ConvertOptions(include_columns=wanted, column_types={c: pa.string() for c in wanted},
                                   strings_can_be_null=False, quoted_strings_can_be_null=False)
    with pacsv.open_csv(path, read_options=read, parse_options=parse, convert_options=convert) as reader:
        empty = True
        for batch in reader:
            _no_ragged(ragged, path, name, fmt)
            empty = False
            yield pa.Table.from_batches([batch])
        _no_ragged(ragged, path, name, fmt)
        if empty:
            yield reader.schema.empty_table()


def _no_ragged(ragged: list, path: Path, name: str, fmt: str) -> None:
    """pyarrow skips the rows with too few or too many fields; name them (with their lines) instead."""
    if not ragged:
        return
    shown = [f"line {line_of(path, r.text)} has {r.actual_columns} columns, expected {r.expected_columns}: "
             f"{r.text[:60]!r}" for r in ragged[:SHOWN]]
    more = f" (and {len(ragged) - SHOWN} more)" if len(ragged) > SHOWN else ""
    raise DataError(f"{name}: {len(ragged)} malformed row(s){more}; wrong delimiter or unquoted "
                    f"{'tab' if fmt == 'tsv' else 'comma'}? " + "; ".join(shown))


def _jsonl(path: Path, name: str, columns: Columns | None, rows: int) -> Iterator[pa.Table]:
    """One JSON object per line, parsed line by line, so a bad line is named (pyarrow's block
    reader cannot say which line broke). A number is kept as written (``_Number``). A column keeps
    one JSON type (null aside), as a typed column must; a key missing from an object is a null there,
    and one no object has is missing."""
    wanted = None if columns is None else list(dict.fromkeys([*columns.required, *columns.optional]))
    seen: dict[str, None] = {}  # the keys read so far, in the order they first came
    kinds: dict[str, tuple[str, int]] = {}  # a column's JSON type and the line that set it
    batch: list[dict] = []
    empty = True
    with path.open(encoding="utf-8-sig") as f:  # -sig: a BOM (Windows tools write one) read as CSV's reader does
        for line_no, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                obj = _DECODER.decode(line)
            except json.JSONDecodeError as err:
                raise DataError(f"{name}: line {line_no}: not valid JSON ({err.msg})") from None
            except _KeyTwice as err:
                raise DataError(f"{name}: line {line_no}: key {err.key!r} given twice in one object, so one of its "
                                "values would be dropped without a word; keep one") from None
            if not isinstance(obj, dict):
                raise DataError(f"{name}: line {line_no}: expected a JSON object, got {type(obj).__name__}")
            seen.update((key, None) for key in obj if wanted is None or key in wanted)
            _check_kinds(obj, seen, kinds, name, line_no)
            batch.append(obj)
            if len(batch) == rows:
                yield _json_table(batch, wanted or list(seen))
                batch, empty = [], False
    if empty and not batch:
        raise DataError(f"{name}: cannot read as jsonl: no JSON object in the file")
    if columns is not None:
        columns.of(name, list(seen))  # a column no object has is a missing column
    if batch:
        yield _json_table(batch, wanted or list(seen))


class _KeyTwice(ValueError):
    """A JSON object naming ``key`` twice: ``json`` keeps the last value and drops the first silently
    (``{"text": "a", "text": "b"}`` is the text "b"); which one a row means is not ours to guess."""

    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """The object of ``pairs``, unless it names a key twice (at any depth: a nested object too)."""
    obj = dict(pairs)
    if len(obj) < len(pairs):
        raise _KeyTwice(next(key for key, n in Counter(key for key, _ in pairs).items() if n > 1))
    return obj


class _Number(str):
    """A JSON number as written: ``7.0`` stays ``7.0`` and ``1e3`` stays ``1e3`` (as floats they would be
    ``7`` and ``1000``), a 30-digit id keeps every digit; a string still, told from one for the type check."""


# made once: json.loads with hooks makes one a line
_DECODER = json.JSONDecoder(object_pairs_hook=_unique_keys, parse_int=_Number, parse_float=_Number,
                            parse_constant=_Number)


def _check_kinds(obj: dict, read: dict[str, None], kinds: dict[str, tuple[str, int]], name: str,
                 line_no: int) -> None:
    """Each value of a column that is ``read`` has the JSON type the column's first value had."""
    for key, value in obj.items():
        if value is None or key not in read:
            continue
        kind = ("a boolean" if isinstance(value, bool) else "a number" if isinstance(value, _Number)
                else "a string" if isinstance(value, str) else "an object" if isinstance(value, dict) else "an array")
        first, where = kinds.setdefault(key, (kind, line_no))
        if kind != first:
            raise DataError(f"{name}: line {line_no}: cannot read as jsonl: column {key!r} holds {kind} here but "
                            f"{first} on line {where}; give a column one JSON type")


def _json_table(batch: list[dict], columns: list[str]) -> pa.Table:
    return pa.table({c: pa.array([r.get(c) for r in batch]) for c in columns})


def as_strings(column: pa.ChunkedArray, where: str, offset: int) -> pa.ChunkedArray:
    """A column as strings, the one way every reader makes them. CSV and JSONL columns are text as
    written already (JSON booleans aside); a parquet file's or the hub's typed values have no written
    form, so each is its value's text: integers in decimal, floats that are whole numbers as integers
    (``1.0`` is ``1`` and ``1e16`` is ``10000000000000000``: pandas stores an int column with a gap as
    floats), other floats in their shortest exact form (``0.1``, ``1e+30``, ``nan``), booleans as
    ``true``/``false``, binary as UTF-8 (else a DataError naming ``where`` and the row, counted from
    ``offset``); nested columns (lists, structs) kept as they are, for the checks to name."""
    if pa.types.is_nested(column.type):
        return column
    if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
        return column.cast(pa.string())
    if pa.types.is_binary(column.type) or pa.types.is_large_binary(column.type):
        _check_utf8(column, where, offset)
    if pa.types.is_float16(column.type):  # pyarrow's compute has no kernels for half floats; float32 holds each
        column = column.cast(pa.float32())
    if pa.types.is_floating(column.type):  # pyarrow writes 1.0 as 1, but 1e16 as 1e+16: a float id loses its digits
        whole = pc.and_(pc.equal(pc.floor(column), column), pc.less(pc.abs(column), 2.0 ** 63))  # in int64's range
        digits = pc.cast(pc.cast(pc.if_else(whole, column, 0), pa.int64()), pa.string())
        return pc.if_else(whole, digits, pc.cast(column, pa.string()))
    return pc.cast(column, pa.string())


def string_table(table: pa.Table, name: str, offset: int) -> pa.Table:
    """Every column of ``table`` (rows of the file ``name`` from row ``offset`` on) as ``as_strings``
    makes it."""
    return pa.table({c: as_strings(table[c], f"{name}: column {c!r}", offset) for c in table.column_names})


def _check_utf8(column: pa.ChunkedArray, where: str, offset: int) -> None:
    """The CSV reader keeps non-UTF-8 bytes as binary; name the first bad row instead."""
    for i, value in enumerate(column.to_pylist()):
        try:
            value is None or value.decode("utf-8")
        except UnicodeDecodeError as err:
            raise DataError(f"{where}, row {offset + i + 1}: not UTF-8 text ({err.reason} at byte {err.start}); "
                            "save the file as UTF-8") from None


def arrow_message(err: Exception) -> str:
    """The first line of a reader's error, with anything unprintable escaped: a parser may quote
    the row it choked on, and a terminal should never receive raw bytes."""
    first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    return "".join(c if c.isprintable() and c != "\ufffd" else ascii(c)[1:-1] for c in first)[:300]


def rebatch(tables: Iterator[pa.Table], size: int) -> Iterator[pa.Table]:
    """Tables of any length (CSV blocks, parquet batches, shards) re-cut into ``size``-row tables in
    order, the last one shorter; empty tables give nothing."""
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
