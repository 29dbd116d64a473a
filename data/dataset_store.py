"""A versioned dataset store: every ingest adds one immutable version; a run reads exactly one.

    <store>/<dataset>/
      CURRENT                    the current version number (replaced atomically)
      versions/v000003.json      a version's manifest: its segments per kind, row counts, hashes, source
      segments/v000003.parquet   the rows that one ingest added (never changed, never removed)
      .lock                      held while an ingest reads the current version and commits the next
      typed/<sha256>.json        what ``Version.typed_fields`` found in a segment of an earlier reader, by its content

A version lists the segments it is made of (its parent's plus one new), so versions share rows
instead of copying the pool. Segments and manifests are written before the pointer moves and are
never rewritten once it has, so a reader that resolved a version keeps reading exactly that version
while later ingests commit. A version is committed when the current one lists its segment: files an
ingest killed before it moved the pointer left behind are refused to readers, and the next commit
replaces them.
"""

from __future__ import annotations

import contextlib
import fcntl
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator, Literal, Sequence

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from .location import is_url
from .errors import DataError
from .outputs import content_key, file_digest, read_json, remove_stale_temps, write_json, write_parquet
from .readers import READER

Kind = Literal["unlabeled", "labeled"]
KINDS: tuple[Kind, ...] = ("unlabeled", "labeled")
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
POINTER = "CURRENT"
# What a column of an earlier reader's typing holds (READER): numbers as pyarrow wrote them, or true/false
TYPED = r"-?(\d+(\.\d+)?(e[+-]?\d+)?|inf|nan)|true|false"
TYPED_DIR = "typed"  # per segment of an earlier reader, named by its sha256: which fields hold only TYPED values


def dataset_dir(store: str | Path, dataset: str) -> Path:
    """``store/dataset``; a name that could leave the store (``../x``, ``/abs``, ``a/b``) is refused."""
    if not NAME.fullmatch(dataset or ""):
        raise DataError(f"dataset name {dataset!r}: use letters, digits, '.', '_' and '-' only, starting with a "
                        "letter or digit (it becomes a directory name)")
    if is_url(store):  # it moves CURRENT under a flock and by rename, which object stores lack
        raise DataError(f"dataset store {store}: a store is a local (or shared POSIX) directory, not a URL; "
                        "runs may still read their pool from a URL (data.root, a source's path)")
    root = Path(store).resolve()
    for folder in (root, root / dataset):
        if folder.exists() and not folder.is_dir():
            raise DataError(f"dataset store {store}: {folder} is a file, not a directory; give --store a "
                            "directory (new or one `ipet ingest` filled)")
    path = (root / dataset).resolve()
    if path.parent != root:  # belt and braces: the pattern already rules out separators and '..'
        raise DataError(f"dataset name {dataset!r} leaves the store {root}")
    return path


def segment_path(number: int) -> str:
    """The segment a version adds, relative to the dataset directory (as its manifest lists it)."""
    return f"segments/v{number:06d}.parquet"


def text_keys(table: pa.Table, fields: Sequence[str]) -> pa.ChunkedArray:
    """One string per row that is equal exactly when every input field is, ignoring surrounding whitespace."""
    parts = [pc.utf8_trim_whitespace(pc.fill_null(table[f], "")) for f in fields]
    return pc.binary_join_element_wise(*parts, "\x1f")


def texts_key(keys: pa.Array | pa.ChunkedArray) -> str:
    """A key over a set's distinct ``text_keys``: a test set's identity for what a store keeps out (a version's
    ``schema.test_key``), the same whichever file, order or repeats hold the texts."""
    return content_key(sorted(set(keys.to_pylist())))


@dataclass(frozen=True)
class Version:
    """One committed version: its manifest, and its rows read from the segments it lists."""

    directory: Path
    manifest: dict

    @property
    def number(self) -> int:
        return self.manifest["version"]

    @property
    def path(self) -> Path:
        """The manifest file."""
        return self.directory / "versions" / f"v{self.number:06d}.json"

    @property
    def fields(self) -> list[str]:
        return self.manifest["schema"]["fields"]

    def read(self, kind: Kind) -> pa.Table:
        """The rows of ``kind``. The unlabeled rows leave out texts that have since been labeled,
        so a run never has the same text in its pool and in its gold set."""
        table = self._segments(kind)
        if kind == "unlabeled" and self.manifest["segments"]["labeled"]:
            labeled = text_keys(self._segments("labeled"), self.fields)
            table = table.filter(pc.invert(pc.is_in(text_keys(table, self.fields), value_set=labeled.combine_chunks())))
        return table

    def typed_fields(self) -> list[str]:
        """The input fields an earlier reader may have changed on their way in: in a segment that records no
        ``reader`` (ingested before ``READER`` 2), a field holding nothing but numbers or true/false, as a CSV
        or JSONL column of them was then typed (``007`` kept as ``7``, ``1.50`` as ``1.5``, ``7.0`` dropped as
        a duplicate of ``7``). A text field of words never was; a field of numbers may be as written."""
        earlier = [s for k in KINDS for s in self.manifest["segments"][k] if "reader" not in s]
        found = [self._typed_in(s) for s in earlier]
        return [f for f in self.fields if any(f in typed for typed in found)]

    def _typed_in(self, segment: dict) -> list[str]:
        """The fields of one segment that hold only numbers or true/false. A segment never changes, so it is
        read for this once: the answer is kept in ``typed/<its sha256>.json`` (named by its content, so it never
        describes other rows), which every later load of a version listing it reads instead. Only a cache: where
        it cannot be written (a read-only store, a full disk) the segment is read again at the next load."""
        record = self.directory / TYPED_DIR / f"{segment['sha256']}.json"
        if record.exists():
            known = read_json(record)
            if known["pattern"] == TYPED and set(self.fields) <= set(known["checked"]):
                return [f for f in known["typed"] if f in self.fields]
        table = read_segment(self.directory / segment["path"], self.fields)
        typed = [f for f in self.fields if table.num_rows and _all_typed(table[f])]
        with contextlib.suppress(OSError):
            write_json({"pattern": TYPED, "checked": self.fields, "typed": typed}, record)
        return typed

    def _segments(self, kind: Kind) -> pa.Table:
        tables = [read_segment(self.directory / s["path"]) for s in self.manifest["segments"][kind]]
        if not tables:
            columns = ["id", *self.fields] + (["label"] if kind == "labeled" else [])
            return pa.table({c: pa.array([], pa.string()) for c in columns})
        return pa.concat_tables(tables, promote_options="default")


def read_segment(path: Path, columns: Sequence[str] | None = None) -> pa.Table:
    """A segment's rows (only ``columns``, if given): every read of a store's rows goes through here."""
    return pq.read_table(path, columns=columns)


def _all_typed(column: pa.ChunkedArray) -> bool:
    """Whether every value of ``column`` is what a typed column became as text (a null too)."""
    matches = pc.match_substring_regex(pc.fill_null(column, "true"), f"^({TYPED})$", ignore_case=True)
    return bool(pc.all(matches).as_py())


def typed_line(store: str, version: int, fields: Sequence[str]) -> str:
    """The warning for a store version with ``typed_fields``: what they may hold, and what to do."""
    return (f"dataset store {store} (version {version}): field(s) {list(fields)} hold only numbers or true/false in "
            "rows ingested by an ipet older than 2026-12-05, which read such a CSV or JSONL column as numbers (007 "
            "as 7, 1.50 as 1.5, 7.0 dropped as a duplicate of 7), so they may not be the files' text; to be sure, "
            "ipet ingest those files (its versions/*.json name them) into a new dataset")


class DatasetStore:
    """The versions of one dataset under a store directory."""

    def __init__(self, store: str | Path, dataset: str):
        self.name = dataset
        self.directory = dataset_dir(store, dataset)

    def current(self) -> int | None:
        pointer = self.directory / POINTER
        return int(pointer.read_text()) if pointer.exists() else None

    def version(self, number: int | None = None) -> Version:
        """A committed version (default: the current one), resolved once: read its rows from what this
        returns. The pointer is read before the manifest, so a manifest that a commit may still replace
        (a number past the pointer) is never taken for a committed one."""
        current = self.current()
        number = current if number is None else number
        if number is None:
            raise DataError(f"dataset store {self.directory}: no versions yet; add data with `ipet ingest FILE "
                            f"--dataset {self.name}`")
        path = Version(self.directory, {"version": number}).path
        if not path.exists():
            raise DataError(f"dataset store {self.directory}: no version {number} (current: {current})")
        if number != current and not self._lists_segment_of(current, number):
            pointer = f"CURRENT is {current}" if current else "no version is committed yet"
            raise DataError(f"dataset store {self.directory}: version {number} was never committed: an ingest "
                            f"stopped after writing it, before moving the pointer ({pointer}); pin a committed "
                            f"version, or run that `ipet ingest` again: it commits the same rows as version "
                            f"{(current or 0) + 1}")
        return Version(self.directory, read_json(path))

    def _lists_segment_of(self, current: int | None, number: int) -> bool:
        """Whether version ``current`` holds version ``number``'s segment, i.e. ``number`` was committed.
        A number past the pointer never was; one below it was not either if a killed ingest wrote it
        before commits reused numbers (the next ingest then took the number after it)."""
        if current is None or number > current:
            return False
        segments = read_json(Version(self.directory, {"version": current}).path)["segments"]
        return any(s["path"] == segment_path(number) for k in KINDS for s in segments[k])

    @contextlib.contextmanager
    def lock(self) -> Iterator[Version | None]:
        """Hold the dataset's lock; yields the current version (None for a new dataset).

        Everything from reading the current version to moving the pointer happens under it, so
        concurrent ingests queue up instead of both building on the same parent.
        """
        self.directory.mkdir(parents=True, exist_ok=True)
        with open(self.directory / ".lock", "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield self.version() if self.current() is not None else None
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def commit(self, parent: Version | None, kind: Kind, rows: pa.Table, record: dict) -> Version:
        """Write ``rows`` as a new segment and a version that adds it to ``parent``; then move the pointer.

        Call under :meth:`lock`, with the version it yielded. ``record`` (schema, source,
        duplicates) goes into the manifest as it is. Row ids become ``<version>:<id>`` (``3:17``:
        row 17 of version 3's file), unique across the dataset. The number is one past the parent's:
        what an ingest killed before it moved the pointer left at that number was never committed
        (no reader was given it), so it is replaced, with its temporary files; ingesting the same
        file again so writes the version the killed ingest would have.
        """
        # safe: every writer here holds the lock but a load writing a typed record (TYPED_DIR), a cache whose
        # write, if this undoes it, fails quietly and is made again at the next load
        remove_stale_temps(self.directory)
        number = (parent.number if parent else 0) + 1
        ids = pc.binary_join_element_wise(pa.scalar(str(number)), rows["id"], ":")
        rows = rows.set_column(rows.column_names.index("id"), "id", ids)
        segment = write_parquet(rows, self.directory / segment_path(number))
        segments = {k: list(parent.manifest["segments"][k]) if parent else [] for k in KINDS}
        segments[kind].append({"path": segment_path(number), "rows": rows.num_rows, "sha256": file_digest(segment),
                               "reader": READER})
        manifest = {
            "dataset": self.name,
            "version": number,
            "parent": parent.number if parent else None,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            **record,
            "segments": segments,
            "rows": {k: sum(s["rows"] for s in segments[k]) for k in KINDS},
            "hashes": {k: content_key([s["sha256"] for s in segments[k]]) for k in KINDS},
        }
        version = Version(self.directory, manifest)
        write_json(manifest, version.path)
        write_json(number, self.directory / POINTER)  # the commit point: readers see the new version from here
        return version
