"""One writer per run directory: an exclusive ``flock`` on ``<run dir>/.lock``, held for a whole flow.

Two flows writing the same run directory would each see the other's half-finished work as
missing and redo it, and could interleave their results. The second one refuses instead. The
kernel drops the lock when its holder exits, however it exits (SIGKILL included), so a killed run
never leaves a stale lock behind. Re-entrant within a process: the CLI takes the lock to fail
before starting Prefect, and the flow it then runs (which deployments call directly) takes it again.

A run directory at a URL has no flock: its lock is a lease, a ``.lock`` object created only if
absent (a conditional PUT) and renewed every ``LEASE_RENEW`` seconds while held. A lease not
renewed for ``LEASE_STALE`` seconds belongs to a killed run and is taken over.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterator

from upath import UPath

from .location import is_url, location

LOCK_FILE = ".lock"
LEASE_RENEW = 30.0
LEASE_STALE = 300.0

_held: dict[str, list] = {}  # run dir -> [release function, how many holds in this process]
_guard = threading.Lock()


class RunDirBusy(RuntimeError):
    """Another process is writing this run directory."""


class RunDirUnusable(RuntimeError):
    """The run directory's storage refused us: no such bucket, no credentials, no permission."""


def busy(run_dir: str, holder: str) -> RunDirBusy:
    return RunDirBusy(f"run directory {run_dir} is in use by another run ({holder}); "
                      "wait for it to finish or use another --run-dir")


@contextlib.contextmanager
def run_dir_lock(run_dir: str | Path) -> Iterator[str | Path]:
    """Hold the run directory (created if needed) for the block, or raise RunDirBusy at once.
    Yields it absolute: a ``Path``, or the URL as given."""
    run_dir = str(run_dir) if is_url(run_dir) else location(run_dir).resolve()
    key = str(run_dir)
    with _guard:
        if key in _held:
            _held[key][1] += 1
        else:
            _held[key] = [_lease(key) if is_url(key) else _flock(run_dir), 1]
    try:
        yield run_dir
    finally:
        with _guard:
            _held[key][1] -= 1
            if _held[key][1] == 0:
                _held.pop(key)[0]()


def _flock(run_dir: Path) -> Callable[[], None]:
    if run_dir.is_file():
        raise RunDirUnusable(f"run directory {run_dir} is not usable: it is a file, not a directory; "
                             "give --run-dir a directory (new or an earlier run's)")
    run_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(run_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "?"
        os.close(fd)
        raise busy(str(run_dir), f"pid {holder}") from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, str(os.getpid()).encode(), 0)
    return lambda: os.close(fd)  # closing the only descriptor releases the flock


def _take(run_dir: str, stamp: Callable[[], bytes]) -> tuple[Any, str]:
    """Create the lease object (the filesystem and its path), or raise RunDirBusy."""
    lock = UPath(run_dir) / LOCK_FILE  # an unknown protocol fails here: its package is missing
    fs, path = lock.fs, lock.path
    took_over = False
    while True:
        try:
            with fs.open(path, "xb") as f:  # created only if absent: one winner
                f.write(stamp())
            return fs, path
        except FileExistsError:
            try:
                lease = json.loads(fs.cat_file(path))
            except (FileNotFoundError, ValueError):
                lease = {"holder": "?", "renewed": 0}
            if took_over or time.time() - lease["renewed"] < LEASE_STALE:
                raise busy(run_dir, lease["holder"]) from None
            fs.rm_file(path)  # a killed run's lease: take it over (once; a racer that wins it keeps it)
            took_over = True


def _lease(run_dir: str) -> Callable[[], None]:
    holder = f"pid {os.getpid()} on {socket.gethostname()}"

    def stamp() -> bytes:
        return json.dumps({"holder": holder, "renewed": time.time()}).encode()

    try:
        fs, path = _take(run_dir, stamp)
    except RunDirBusy:
        raise
    except Exception as err:  # the first touch of the storage: no bucket, no credentials, no permission
        raise RunDirUnusable(f"run directory {run_dir} is not usable: {type(err).__name__}: {err}") from None
    stop = threading.Event()

    def renew() -> None:
        while not stop.wait(LEASE_RENEW):
            with contextlib.suppress(Exception):  # a missed renewal is retried; the lease lasts LEASE_STALE
                fs.pipe_file(path, stamp())

    threading.Thread(target=renew, name=f"lease {run_dir}", daemon=True).start()

    def release() -> None:
        stop.set()
        with contextlib.suppress(FileNotFoundError):
            fs.rm_file(path)
    return release
