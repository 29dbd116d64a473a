"""Reading labeled and unlabeled examples from files or the dataset hub into one shape.

Every source becomes a pyarrow table of string columns: ``id``, the input fields, and
``label`` when the source has labels. Problems are reported with the file and row, so a user
can fix the input instead of reading a stack trace.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import pyarrow as pa
import pyarrow.compute as pc
from pydantic import BaseModel, ConfigDict, Field, model_validator

from .dataset_store import DatasetStore, Version
from .errors import DataError
from .location import exists, is_url, local, location
from .textfile import check_text

FORMATS = ("csv", "tsv", "jsonl", "parquet")


class Source(BaseModel):
    """Where examples come from and how to read them.

    ``path`` is a file (csv, tsv, jsonl, parquet), local or at an fsspec URL (``s3://…``); ``hub`` a dataset name for
    ``datasets.load_dataset``; ``store`` a dataset store directory (``ipet ingest`` fills it) with
    ``dataset``, ``kind`` (``unlabeled`` or ``labeled``; by default what the slot it fills needs) and
    ``version`` (default: the current one, resolved once per run). ``columns`` names the columns of
    a header-less file, ``rename`` maps source columns to the field names the patterns use, and
    ``rows`` keeps a ``[start, stop)`` slice of the data rows (0-based), e.g. an agreed train/test split.
    """

    model_config = ConfigDict(extra="forbid")

    path: str | None = None
    hub: str | None = None
    hub_config: str | None = None
    split: str = "train"
    format: Literal["auto", "csv", "tsv", "jsonl", "parquet"] = "auto"
    header: bool = True
    columns: list[str] | None = None
    rename: dict[str, str] = Field(default_factory=dict)
    label_column: str = "label"
    id_column: str | None = None
    rows: tuple[int, int] | None = None
    store: str | None = None
    dataset: str | None = None
    kind: Literal["unlabeled", "labeled"] | None = None
    version: int | None = Field(None, ge=1)

    @model_validator(mode="after")
    def _one_origin(self) -> "Source":
        if sum(x is not None for x in (self.path, self.hub, self.store)) != 1:
            raise ValueError("give exactly one of 'path' (a local file), 'hub' (a dataset name) or "
                             "'store' (a dataset store directory, with 'dataset')")
        if self.store and is_url(self.store):
            raise ValueError(f"store {self.store!r}: a dataset store is a local (or shared POSIX) directory, not a "
                             "URL; a file source's path may be a URL")
        if (self.store is None) != (self.dataset is None):
            raise ValueError("'store' and 'dataset' go together: the store directory and the dataset in it")
        if self.rows and not 0 <= self.rows[0] < self.rows[1]:
            raise ValueError(f"rows must be [start, stop) with 0 <= start < stop, got {list(self.rows)}")
        return self

    @property
    def name(self) -> str:
        if self.store:
            return f"store:{self.store}/{self.dataset}/{self.kind or 'unlabeled'}@{self.version or 'current'}"
        return self.path or f"hub:{self.hub}"

    def resolved_format(self) -> str:
        if self.format != "auto":
            return self.format
        suffix = Path(self.path or "").suffix.lower().lstrip(".")
        fmt = {"json": "jsonl", "ndjson": "jsonl", "pq": "parquet"}.get(suffix, suffix)
        if fmt not in FORMATS:
            raise DataError(f"{self.path}: cannot tell the format from the suffix; set format: to one of {FORMATS}")
        return fmt


def read_source(source: Source, base_dir: str | Path = ".", version: Version | None = None) -> pa.Table:
    """The source as a table of string columns (nested ones kept) with a stable ``id`` per row.
    ``version``: a store source's version as already resolved (``data.prepare.pin_versions``)."""
    if source.store:
        table = (version or dataset_store(source, base_dir).version(source.version)).read(source.kind or "unlabeled")
    else:
        table = _read_hub(source) if source.hub else _read_file(source, base_dir)
    table = table.rename_columns([source.rename.get(c, c) for c in table.column_names])
    offset = 0
    if source.rows:
        start, stop = source.rows
        if start >= table.num_rows:
            raise DataError(f"{source.name}: rows {list(source.rows)} start past the end ({table.num_rows} rows)")
        offset = start
        table = table.slice(start, stop - start)
    table = pa.table({c: _as_strings(table[c], f"{source.name}: column {c!r}", offset) for c in table.column_names})
    id_column = source.id_column or ("id" if source.store else None)  # a store's ids are unique already
    if id_column:
        if id_column not in table.column_names:
            raise DataError(f"{source.name}: id column {id_column!r} not found (columns: {table.column_names})")
        ids = table[id_column]
    else:
        ids = pa.array([str(offset + i + 1) for i in range(table.num_rows)], pa.string())
    table = table.drop_columns([c for c in ("id",) if c in table.column_names])
    table = table.add_column(0, "id", ids)
    if source.label_column != "label" and source.label_column in table.column_names:
        table = table.rename_columns(["label" if c == source.label_column else c for c in table.column_names])
    return table


def source_path(source: Source, base_dir: str | Path) -> Path:
    """A file source's location: absolute, a URL, or relative to the data root (itself maybe a URL)."""
    path = location(source.path)
    return path if is_url(source.path) or path.is_absolute() else location(base_dir) / source.path


def local_file(source: Source, base_dir: str | Path = ".") -> Path:
    """The source file on this machine: a local one as is, one at a URL copied afresh (it may have
    changed since the last copy)."""
    try:
        path = source_path(source, base_dir)
        if not is_url(path):
            if not path.is_file():
                raise DataError(f"{source.path}: file not found (looked at {path.resolve()})")
            return path
        if not exists(path):
            raise DataError(f"{source.path}: file not found (looked at {path})")
        return local(path, fresh=True)
    except DataError:
        raise
    except Exception as err:  # the storage behind a URL: no package for it, no credentials, no permission
        raise DataError(f"{source.path}: cannot read from {base_dir}: {type(err).__name__}: {err}") from None


def _read_file(source: Source, base_dir: str | Path) -> pa.Table:
    import pyarrow.json as pajson
    import pyarrow.parquet as pq

    path = local_file(source, base_dir)
    fmt = source.resolved_format()
    if fmt != "parquet":
        check_text(path, source.path, fmt)
    try:
        if fmt in ("csv", "tsv"):
            return _read_csv(path, source, fmt)
        if fmt == "jsonl":
            return pajson.read_json(path)
        return pq.read_table(path)
    except DataError:
        raise
    except (pa.ArrowInvalid, UnicodeDecodeError, OSError) as err:
        raise DataError(f"{source.path}: cannot read as {fmt}: {_arrow_message(err)}") from None


def _read_csv(path: Path, source: Source, fmt: str) -> pa.Table:
    import pyarrow.csv as pacsv

    if not source.header and not source.columns:
        raise DataError(f"{source.path}: header: false needs columns: [...] to name the columns")
    ragged = []

    def collect(row) -> str:
        ragged.append(row)
        return "skip"

    table = pacsv.read_csv(
        path,
        read_options=pacsv.ReadOptions(column_names=None if source.header else source.columns, block_size=1 << 22),
        parse_options=pacsv.ParseOptions(delimiter="\t" if fmt == "tsv" else ",", newlines_in_values=True,
                                         quote_char=False if fmt == "tsv" else '"', invalid_row_handler=collect),
        convert_options=pacsv.ConvertOptions(strings_can_be_null=False, quoted_strings_can_be_null=False),
    )
    if ragged:
        content = path.read_bytes()
        shown = [f"line {_line_of(content, r.text)} has {r.actual_columns} columns, expected "
                 f"{r.expected_columns}: {r.text[:60]!r}" for r in ragged[:5]]
        more = f" (and {len(ragged) - 5} more)" if len(ragged) > 5 else ""
        raise DataError(f"{source.path}: {len(ragged)} malformed row(s){more}; wrong delimiter or unquoted "
                        f"{'tab' if fmt == 'tsv' else 'comma'}? " + "; ".join(shown))
    return table


def _line_of(content: bytes, text: str) -> int:
    """pyarrow does not number rows it rejects; find the row's text in the file instead."""
    return content[: max(content.find(text.encode()), 0)].count(b"\n") + 1


def dataset_store(source: Source, root: str | Path) -> DatasetStore:
    """The store a ``store`` source names: its directory, relative to the data root unless absolute."""
    store = Path(source.store)
    return DatasetStore(store if store.is_absolute() else Path(root) / store, source.dataset)


def _read_hub(source: Source) -> pa.Table:
    import datasets

    try:
        ds = datasets.load_dataset(source.hub, source.hub_config, split=source.split)
    except Exception as err:  # the hub raises many types; the user needs the message either way
        raise DataError(f"hub:{source.hub}: cannot load split {source.split!r}: {err}") from None
    return ds.with_format("arrow")[0 : len(ds)]


def label_text(value: object) -> str:
    """A label as the text every set and verbalizer compares: what ``_as_strings`` makes of a typed
    value, so a YAML key ``1``, ``1.0`` or ``true`` matches the data's ``1``, ``1.0`` or ``true``."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _as_strings(column: pa.ChunkedArray, where: str, offset: int) -> pa.ChunkedArray:
    if pa.types.is_nested(column.type):
        return column  # lists, structs: kept as they are; check_examples objects if a pattern or label uses one
    if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
        return column.cast(pa.string())
    if pa.types.is_binary(column.type) or pa.types.is_large_binary(column.type):
        _check_utf8(column, where, offset)
    if pa.types.is_floating(column.type):
        # 1.0 -> "1": float labels from a typed reader should match integer verbalizer keys
        as_int = pc.cast(column, pa.int64(), safe=False)
        if pc.all(pc.equal(pc.cast(as_int, column.type), column)).as_py() is not False:
            return pc.cast(as_int, pa.string())
    return pc.cast(column, pa.string())


def _check_utf8(column: pa.ChunkedArray, where: str, offset: int) -> None:
    """The CSV reader keeps non-UTF-8 bytes as binary; name the first bad row instead."""
    for i, value in enumerate(column.to_pylist()):
        try:
            value is None or value.decode("utf-8")
        except UnicodeDecodeError as err:
            raise DataError(f"{where}, row {offset + i + 1}: not UTF-8 text ({err.reason} at byte {err.start}); "
                            "save the file as UTF-8") from None


def _arrow_message(err: Exception) -> str:
    """The first line of a reader's error, with anything unprintable escaped: a parser may quote
    the row it choked on, and a terminal should never receive raw bytes."""
    first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    return "".join(c if c.isprintable() and c != "\ufffd" else ascii(c)[1:-1] for c in first)[:300]
