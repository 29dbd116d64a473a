"""A training, labeling or adaptation task that its run stopped ends Cancelled, saying how far it got.

The task's loop raises ``prompt_core.stopping.Stopped`` when the run is stopped (Ctrl-C, SIGTERM, the
UI's Cancel: ``flows/interrupt.py``). Raised out of the task, Prefect would record the task Crashed,
"interrupted by an unexpected exception", and log it as an error; the run's own end says why it stopped.
"""

from __future__ import annotations

import functools
from typing import Callable, ParamSpec, TypeVar

from prefect.states import Cancelled, State

from prompt_core.stopping import Stopped

P = ParamSpec("P")
R = TypeVar("R")


def cancelled_when_stopped(fn: Callable[P, R]) -> Callable[P, R | State]:
    """Run ``fn``; a stop of its run makes it return Prefect's ``Cancelled`` state (the task's final state),
    with ``Stopped``'s line (``train: stopped after 12 of 600 steps, …``) as its message."""
    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R | State:
        try:
            return fn(*args, **kwargs)
        except Stopped as stop:
            return Cancelled(message=str(stop))
    return wrapper
