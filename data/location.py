"""Where a run's outputs live: a local directory, or any fsspec URL (``s3://``, ``gs://``, ...) that
Ray workers on other machines share.

Object stores have no rename, so an output at a URL is written atomically into a local mirror of
the URL first (``IPET_CACHE``, default ``~/.cache/ipet``) and uploaded before it is renamed into
place there: a file as one object (an object store's PUT is all or nothing), a directory file by
file and then its ``.complete`` marker, without which readers take it for absent. Readers work
on the mirror and download what it lacks. Outputs are content-addressed and never change, so a
mirrored copy stays valid; ``fresh=True`` re-reads the few that do (``results.json``).

Credentials and endpoints come from the backend's own settings (``AWS_*`` variables, fsspec's
configuration), as for any fsspec user.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import tempfile
import threading
from pathlib import Path

from upath import UPath

from .errors import DataError

COMPLETE = ".complete"  # written last into an uploaded directory
_swapping = threading.Lock()  # one thread at a time puts a copy in place...
SWAP_LOCK = ".swap.lock"


def is_url(location: str | os.PathLike) -> bool:
    return "://" in str(location) and not str(location).startswith("file://")


def location(path: str | os.PathLike) -> Path:
    """A local path as a ``Path``, a URL as a ``UPath`` (joins with ``/`` and has ``.name`` alike)."""
    path = str(path).removeprefix("file://")
    return UPath(path) if is_url(path) else Path(path)


def mirror(url: str | os.PathLike) -> Path:
    """The local copy's place: ``<cache>/<protocol>/<bucket>/<key>``, the same for every process."""
    url = UPath(str(url))
    root = Path(os.environ.get("IPET_CACHE") or Path.home() / ".cache" / "ipet")
    return root / url.protocol / url.path.strip("/")


def exists(path: str | os.PathLike) -> bool:
    """A local path exists; a URL exists as a file, or as a directory with its ``.complete`` marker."""
    if not is_url(path):
        return location(path).exists()
    url = UPath(str(path))
    if _mirrored(mirror(url)):
        return True
    url.fs.invalidate_cache(url.path)  # another process may have written it since this one listed
    return _is_file(url) or _is_file(url / COMPLETE)


def _is_file(url: UPath) -> bool:
    """fsspec's ``isfile`` without its ``except Exception``: absent is False, but storage that cannot
    be read (no credentials, no permission, no endpoint) raises ``DataError`` naming the URL, instead
    of passing for a missing file ("file not found" for an object that is there)."""
    try:
        return url.fs.info(url.path)["type"] == "file"
    except FileNotFoundError:
        return False
    except Exception as err:
        raise DataError(f"{url}: cannot be read: {type(err).__name__}: {err}") from None


def _mirrored(copy: Path) -> bool:
    """A whole local copy: a file, or a directory with its marker (a directory holding only files
    read one by one, such as a model's metrics, is not one)."""
    return copy.is_file() or (copy / COMPLETE).is_file()


def local(path: str | os.PathLike, fresh: bool = False) -> Path:
    """A local path as is; a URL's mirrored copy, downloaded (file or whole directory) if missing or
    if ``fresh``. The download lands under a temporary name and is renamed, so a copy is whole."""
    if not is_url(path):
        return location(path)
    url, target = UPath(str(path)), mirror(path)
    if _mirrored(target) and not fresh:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".download", dir=target.parent))
    copy = tmp / "copy"
    try:
        if _is_file(url):
            url.fs.get_file(url.path, str(copy))
        else:
            files = url.fs.find(url.path)
            if not files:
                raise FileNotFoundError(f"{path}: no such file or directory")
            for name in files:
                dest = copy / Path(name).relative_to(url.path)
                dest.parent.mkdir(parents=True, exist_ok=True)
                url.fs.get_file(name, str(dest))
        with _swapping, open(target.parent / SWAP_LOCK, "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # and one process: Ray workers of a node share the mirror
            if fresh or not _mirrored(target):  # else another thread or process copied it meanwhile
                if target.is_dir():  # a stale folder, or one holding single files: set aside, removed below
                    os.replace(target, tmp / "old")
                os.replace(copy, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def checksum(path: str | os.PathLike) -> str:
    """What identifies the current content of a file at a URL without reading it (an S3 ETag)."""
    url = UPath(str(path))
    return f"{url.protocol}:{url.fs.checksum(url.path)}"


def upload(source: Path, path: str | os.PathLike) -> None:
    """Put a finished local file or directory at a URL; a directory's marker goes last."""
    url = UPath(str(path))
    if source.is_dir():
        for file in sorted(p for p in source.rglob("*") if p.is_file()):
            url.fs.put_file(str(file), f"{url.path}/{file.relative_to(source).as_posix()}")
        url.fs.pipe_file(f"{url.path}/{COMPLETE}", b"")
        (source / COMPLETE).touch()  # the local copy is whole too
    else:
        url.fs.put_file(str(source), url.path)


def remove(path: str | os.PathLike) -> None:
    """Delete a file, at a URL with its mirrored copy; one that is not there is no error."""
    if is_url(path):
        url = UPath(str(path))
        try:
            url.fs.rm_file(url.path)
        except FileNotFoundError:
            pass
        path = mirror(url)
    Path(path).unlink(missing_ok=True)


def names(folder: str | os.PathLike) -> list[str] | None:
    """The names in a folder (local or at a URL); None if it is not one."""
    if not is_url(folder):
        folder = location(folder)
        return [p.name for p in folder.iterdir()] if folder.is_dir() else None
    url = UPath(str(folder))
    url.fs.invalidate_cache(url.path)
    if not url.fs.isdir(url.path):
        return None
    return [Path(p).name for p in url.fs.ls(url.path, detail=False)]
