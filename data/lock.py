"""One writer per run directory: an exclusive ``flock`` on ``<run dir>/.lock``, held for a whole flow.

Two flows writing the same run directory would each see the other's half-finished work as
missing and redo it, and could interleave their results. The second one refuses instead. The
kernel drops the lock when its holder exits, however it exits (SIGKILL included), so a killed run
never leaves a stale lock behind. Re-entrant within a process: the CLI takes the lock to fail
before starting Prefect, and the flow it then runs (which deployments call directly) takes it again.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import threading
from pathlib import Path
from typing import Iterator

LOCK_FILE = ".lock"

_held: dict[Path, list[int]] = {}  # run dir -> [lock file descriptor, how many holds in this process]
_guard = threading.Lock()


class RunDirBusy(RuntimeError):
    """Another process is writing this run directory."""


@contextlib.contextmanager
def run_dir_lock(run_dir: str | Path) -> Iterator[Path]:
    """Hold the run directory (created if needed) for the block, or raise RunDirBusy at once."""
    run_dir = Path(run_dir).resolve()
    with _guard:
        if run_dir in _held:
            _held[run_dir][1] += 1
        else:
            run_dir.mkdir(parents=True, exist_ok=True)
            fd = os.open(run_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "?"
                os.close(fd)
                raise RunDirBusy(f"run directory {run_dir} is in use by another run (pid {holder}); "
                                 "wait for it to finish or use another --run-dir") from None
            os.ftruncate(fd, 0)
            os.pwrite(fd, str(os.getpid()).encode(), 0)
            _held[run_dir] = [fd, 1]
    try:
        yield run_dir
    finally:
        with _guard:
            _held[run_dir][1] -= 1
            if _held[run_dir][1] == 0:
                os.close(_held.pop(run_dir)[0])  # closing the only descriptor releases the flock
