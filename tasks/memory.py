"""Handing memory back to the system when a task ends.

The local runner runs tasks in threads of the flow's one process. glibc's malloc keeps what torch
frees (a model, its activations, a batch of logits) in its per-thread arenas for reuse instead of
returning it, so the process's resident memory grows stage by stage to the sum of what each thread
ever held, although no task holds it any more (measured in bench/RESULTS.md: 5.7 GiB at the end of a
LoRA run). ``malloc_trim`` returns the free pages of every arena.

Collecting Python's cycles first walks every object the process tracks: some 750,000 once torch,
transformers, Prefect and MLflow are imported, 0.3-0.45 s a walk on a 2-core CPU, after every task.
A flow's run therefore keeps what was alive when it began out of the walks (``gc.freeze``), so each
walk covers only what the run itself made.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import gc
import threading
from typing import Callable, Iterator, ParamSpec, TypeVar

P = ParamSpec("P")
R = TypeVar("R")


def _malloc_trim() -> Callable[[int], int] | None:
    """glibc's ``malloc_trim``, or None where the C library has none (macOS, musl)."""
    try:
        return ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):
        return None


_TRIM = _malloc_trim()


def release_memory() -> None:
    """Collect Python's cycles, then give the allocator's free pages back to the system."""
    gc.collect()
    if _TRIM is not None:
        _TRIM(0)


def returns_memory(fn: Callable[P, R]) -> Callable[P, R]:
    """Run ``fn``, then ``release_memory()``: after it returns, so that its locals (a model) are gone."""
    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return fn(*args, **kwargs)
        finally:
            release_memory()
    return wrapper


_RUNS = 0  # blocks of collections_of_this_run open in this process (flows may run in threads of one process)
_RUNS_LOCK = threading.Lock()


@contextlib.contextmanager
def collections_of_this_run() -> Iterator[None]:
    """For the block, garbage collection walks only the objects made in it: what is alive when it begins
    (the imported libraries) is collected once, then frozen. Blocks may overlap (two flows in one process's
    threads): each freezes what is alive when it begins, and only the last to end unfreezes, so a block
    that ends does not put a running one's frozen objects back into every walk; from then on nothing that
    died in between stays out of reach."""
    global _RUNS
    with _RUNS_LOCK:
        gc.collect()
        gc.freeze()
        _RUNS += 1
    try:
        yield
    finally:
        with _RUNS_LOCK:
            _RUNS -= 1
            if _RUNS == 0:
                gc.unfreeze()
