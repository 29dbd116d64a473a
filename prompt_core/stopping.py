"""Stopping a training or a labeling between two steps, when the run it belongs to is stopped.

Python cannot stop a thread from outside, and a run's trainings and labelings run in threads of its
process: a run stopped by Ctrl-C, SIGTERM or a cancel went on waiting for each one to end, minutes on a
GPU. So they stop themselves: the training loop (``training.optimize``, the backbone's adaptation too)
calls :func:`check` before every optimizer step and the labeling loop (``label.predict_logits``) before
every batch, and it raises :class:`Stopped` once the run is asked to stop. What they write is written
under a temporary name and renamed when complete (``data/outputs.py``), so a stop leaves nothing
half-written under a final name, and a rerun does the stopped work again.

A run is the block of :func:`stoppable`: its own stop request, which every thread started from inside
the block sees (a ``ContextVar``: threads started through ``contextvars.copy_context``, as Prefect's
thread pool starts its tasks, inherit it). A request belongs to that run alone, so a stopped run does
not stop a later run in the same process, nor a training or labeling called outside any run. A signal
handler that does not know which run is going calls :func:`stop_all`. Another process (a Ray worker)
has no request to see: its training goes on to its end.
"""

from __future__ import annotations

import contextlib
import threading
from contextvars import ContextVar
from typing import Iterator

_REQUEST: ContextVar[threading.Event | None] = ContextVar("prompt_core_stop_request", default=None)
# the requests of the runs open in this process; no lock (a signal handler may interrupt its holder):
# adding, discarding and copying a set are atomic under the GIL
_OPEN: set[threading.Event] = set()


class Stopped(BaseException):
    """A training or labeling that stopped because its run was asked to. A ``BaseException``, as
    ``KeyboardInterrupt``: an ``except Exception`` on the way must not take it for an error to handle."""


@contextlib.contextmanager
def stoppable() -> Iterator[threading.Event]:
    """A run: a fresh stop request for the block, which the block sets to stop its trainings and labelings."""
    request = threading.Event()
    token = _REQUEST.set(request)
    _OPEN.add(request)
    try:
        yield request
    finally:
        _OPEN.discard(request)
        _REQUEST.reset(token)


def stop_all() -> None:
    """Ask every run open in this process to stop (a signal handler's call)."""
    for request in tuple(_OPEN):
        request.set()


def check(what: str) -> None:
    """Raise :class:`Stopped` if this thread's run was asked to stop; ``what`` says what stopped where
    (``train: stopped after 12 of 600 steps``)."""
    request = _REQUEST.get()
    if request is not None and request.is_set():
        raise Stopped(f"{what}, as its run was asked to stop")
