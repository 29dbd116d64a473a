"""Atomic, content-addressed outputs: what makes a killed run resumable.

Every output is written to a temporary sibling and renamed into place, so a reader sees either
nothing or the complete file or directory, never a half-written one. Names carry a hash of
everything the output depends on, so a re-run finds finished work by name and reuses it.
Outputs may live at a URL (``data/location.py``): written into its local mirror, uploaded, renamed.
"""

from __future__ import annotations

import contextlib
import errno
import glob
import hashlib
import json
import os
import re
import shutil
import secrets
import socket
from pathlib import Path
from typing import Any, Iterator

import pyarrow as pa
import pyarrow.parquet as pq

from .errors import DataError
from .location import is_url, local, location, mirror, upload

TMP_SUFFIX = ".tmp"  # atomic_path's temporaries: ".<final name>.<host>.<pid>.<random>.tmp" beside the final path


def content_key(*parts: Any) -> str:
    """A short, stable hash of JSON-serialisable parts (config subsets, upstream keys)."""
    blob = json.dumps(parts, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def file_digest(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


@contextlib.contextmanager
def atomic_path(final: str | Path, directory: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside ``final``; on success rename it into place.

    On any error the temporary is removed and ``final`` is untouched (a previous version, if
    any, survives). If another writer finished ``final`` first, ours is discarded. A URL's
    temporary is beside its local mirror, and is uploaded before the rename. The temporaries of
    ``final`` that killed writers on this host left are removed first (``remove_dead_temps``): a task
    retried within the run (Ray runs one again when its worker dies) leaves none beside what it writes.
    """
    url = final if is_url(final) else None
    final = _on_disk(final)
    _folder(final.parent)
    remove_dead_temps(final)
    tmp = _temporary(final, directory)
    try:
        yield tmp
        if url:
            upload(tmp, url)
        if directory and final.exists():
            shutil.rmtree(tmp)
        else:
            if not directory:
                with open(tmp, "rb") as f:
                    os.fsync(f.fileno())
            os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True) if directory else tmp.unlink(missing_ok=True)
        raise


def _folder(path: Path) -> None:
    """Create ``path`` and the folders above it. A file in the way is the write error it is (``ENOTDIR``,
    naming the file, as the OS names it for a path through a file), not mkdir's ``FileExistsError``."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except FileExistsError as err:
        raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), err.filename) from None


def _on_disk(final: str | Path) -> Path:
    """Where ``final`` and its temporaries are on this machine: a URL's local mirror, else the path."""
    return mirror(final) if is_url(final) else location(final)


def _temporary(final: Path, directory: bool) -> Path:
    """A new ``.<name>.<host>.<pid>.<random>.tmp`` beside ``final`` (its writer in its name, for
    ``remove_dead_temps``), created with the permissions the umask gives (``tempfile``'s are
    0600/0700, which would make outputs private unlike the rest of the run dir)."""
    while True:
        writer = f"{socket.gethostname()}.{os.getpid()}"
        tmp = final.parent / f".{final.name}.{writer}.{secrets.token_hex(6)}{TMP_SUFFIX}"
        try:
            if directory:
                os.mkdir(tmp, 0o777)
            else:
                os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
            return tmp
        except FileExistsError:
            continue


def remove_stale_temps(root: str | Path) -> list[Path]:
    """Delete what killed writers left in ``root``, its folders (where a run's outputs live) and theirs
    (a sharded set's logits: ``logits/<set>/shard-…``): ``atomic_path`` temporaries never renamed. Not
    recursive further, so a run directory given as some larger tree costs a few globs, not a walk of it.

    Only safe while no one else writes under ``root``, i.e. with the run directory's lock held.
    """
    root = mirror(root) if is_url(root) else Path(root)  # a URL's temporaries are only in its mirror
    stale = [path for depth in ("", "*/", "*/*/") for path in root.glob(f"{depth}.*{TMP_SUFFIX}")]
    _remove(stale)
    return stale


def remove_dead_temps(final: str | Path) -> list[Path]:
    """Delete the temporaries of ``final`` whose writers were killed (``kill -9``: nothing ran to remove
    them), so that running the same command again leaves none beside it. Only ``final``'s own, and only
    those written on this host by a process that no longer exists: another live writer's stay. Safe
    without a lock, where ``remove_stale_temps`` needs one."""
    final = _on_disk(final)
    host = re.escape(f".{final.name}.{socket.gethostname()}.")
    mine = re.compile(rf"{host}(\d+)\.[0-9a-f]{{12}}{re.escape(TMP_SUFFIX)}")
    dead = [path for path in _temps_of(final) if (match := mine.fullmatch(path.name)) and not _running(int(match[1]))]
    _remove(dead)
    return dead


def earlier_temps(final: str | Path) -> list[Path]:
    """``final``'s temporaries as an ipet before 2026-12-05 named them, ``.<name>.<random>.tmp``: without
    their writer in the name, a killed writer's cannot be told from a live one's (an earlier ipet predict
    still writing), so ``remove_dead_temps`` leaves them, and the caller names them to the user instead."""
    final = _on_disk(final)
    earlier = re.compile(rf"\.{re.escape(final.name)}\.[0-9a-f]{{12}}{re.escape(TMP_SUFFIX)}")
    return [path for path in _temps_of(final) if earlier.fullmatch(path.name)]


def _temps_of(final: Path) -> list[Path]:
    """Every temporary beside ``final`` named after it, whoever wrote it."""
    return sorted(final.parent.glob(f".{glob.escape(final.name)}.*{TMP_SUFFIX}"))


def _remove(temporaries: list[Path]) -> None:
    for path in temporaries:
        shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink(missing_ok=True)


def _running(pid: int) -> bool:
    """Whether process ``pid`` exists on this host (another user's too: signalling it is refused)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's
        pass
    return True


TEXT_FORMATS = {".csv": "csv", ".tsv": "tsv", ".txt": "text", ".json": "json", ".jsonl": "jsonl", ".ndjson": "jsonl"}


def check_output_file(path: str | Path, source: str | Path | None = None) -> None:
    """Raise ``DataError`` if ``path`` cannot become a parquet file: ``check_file_path``'s faults, or it
    is ``source`` (the rows it is made from, which its rename would replace), or its name says a text
    format (``out.csv`` would hold parquet bytes that a spreadsheet or ``pandas.read_csv`` cannot read)."""
    local = not is_url(path) and source is not None and not is_url(source)
    if local and _entry(Path(path)) == _entry(Path(source)):
        raise DataError(f"{path}: is the input file; give the output another name (the input would be replaced)")
    suffix = Path(str(path)).suffix.lower()
    if suffix in TEXT_FORMATS:
        raise DataError(f"{path}: the file is written as parquet, not {TEXT_FORMATS[suffix]}; "
                        f"name it {Path(str(path)).stem}.parquet")
    check_file_path(path, "predictions.parquet")


def check_file_path(path: str | Path, example: str) -> None:
    """Raise ``DataError`` if ``path`` cannot become a file: it is a directory (``example`` is a file
    name to suggest in it), or a folder above it is a file. Checked before any work, so a long job
    does not fail at its last rename."""
    if is_url(path):
        return
    path = Path(path)
    if path.is_dir():
        raise DataError(f"{path}: is a directory; give a file name (e.g. {path / example})")
    blocker = next((p for p in path.parents if p.exists()), None)
    if blocker is not None and not blocker.is_dir():
        raise DataError(f"{path}: cannot be written: {blocker} is a file, not a directory")


def _entry(path: Path) -> Path:
    """The directory entry a rename onto ``path`` replaces: its folder resolved, its own name as is
    (a rename replaces a link, not what it points to)."""
    return path.absolute().parent.resolve() / path.name


def write_parquet(table: pa.Table, path: str | Path) -> str | Path:
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)
    return path


def write_json(obj: Any, path: str | Path) -> str | Path:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=False, default=str))
    return path


def read_json(path: str | Path, fresh: bool = False) -> Any:
    return json.loads(local(path, fresh).read_text())
