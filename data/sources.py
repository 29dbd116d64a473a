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
from .readers import FORMATS, read_whole, string_table
from .validate import delimiter_hint


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
    table = string_table(table, source.name, offset)
    id_column = source.id_column or ("id" if source.store else None)  # a store's ids are unique already
    if id_column:
        if id_column not in table.column_names:
            raise DataError(f"{source.name}: id column {id_column!r} not found (columns: {table.column_names})"
                            f"{delimiter_hint(table.column_names)}")
        ids = table[id_column]
        _every_row_has_an_id(ids, source.name, id_column, offset)
    else:
        ids = pa.array([str(offset + i + 1) for i in range(table.num_rows)], pa.string())
    table = table.drop_columns([c for c in ("id",) if c in table.column_names])
    table = table.add_column(0, "id", ids)
    if source.label_column != "label" and source.label_column in table.column_names:
        table = table.rename_columns(["label" if c == source.label_column else c for c in table.column_names])
    return table


def _every_row_has_an_id(ids: pa.ChunkedArray, name: str, id_column: str, offset: int) -> None:
    """A row whose id cell is empty or null had no id (or ``''``, which a second one then "duplicated"): the
    leak report, a person's answers and the asked rows name a row by it. Rows counted as without an id column."""
    blank = pc.equal(pc.utf8_trim_whitespace(pc.fill_null(ids, "")), "").to_pylist() if len(ids) else []
    rows = [offset + i + 1 for i, empty in enumerate(blank) if empty]
    if rows:
        more = f" and {len(rows) - 5} more" if len(rows) > 5 else ""
        raise DataError(f"{name}: no id in column {id_column!r} at row(s) {rows[:5]}{more}; give every row an id, "
                        "or leave out id_column to number the rows")


def source_path(source: Source, base_dir: str | Path) -> Path:
    """A file source's location: absolute, a URL, or relative to the data root (itself maybe a URL)."""
    path = location(source.path)
    return path if is_url(source.path) or path.is_absolute() else location(base_dir) / source.path


def not_a_file(path: Path) -> str:
    """Why a local ``path`` that is no file cannot be read: absent, or a directory (not "not found")."""
    if path.is_dir():
        return f"is a directory, not a file (looked at {path.resolve()}); give a CSV, TSV, JSONL or parquet file"
    return f"file not found (looked at {path.resolve()})"


def local_file(source: Source, base_dir: str | Path = ".") -> Path:
    """The source file on this machine: a local one as is, one at a URL copied afresh (it may have
    changed since the last copy)."""
    try:
        path = source_path(source, base_dir)
        if not is_url(path):
            if not path.is_file():
                raise DataError(f"{source.path}: {not_a_file(path)}")
            return path
        if not exists(path):
            raise DataError(f"{source.path}: file not found (looked at {path})")
        return local(path, fresh=True)
    except DataError:
        raise
    except Exception as err:  # the storage behind a URL: no package for it, no credentials, no permission
        raise DataError(f"{source.path}: cannot read from {base_dir}: {type(err).__name__}: {err}") from None


def _read_file(source: Source, base_dir: str | Path) -> pa.Table:
    return read_whole(local_file(source, base_dir), source.path, source.resolved_format(), source.header,
                      source.columns)


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
