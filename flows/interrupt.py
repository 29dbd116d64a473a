"""Ctrl-C and SIGTERM for a command that runs a flow: stop within seconds, say how to resume.

The first SIGINT or SIGTERM raises :class:`Interrupted` in the main thread, so the flow unwinds:
its MLflow runs are marked KILLED (``tasks/tracking.py``), Prefect records the flow run as
crashed, and the command stops its temporary server. Training and labeling run in worker threads,
which Python cannot stop from outside: the signal asks them to stop (``prompt_core/stopping.py``),
and they do before their next optimizer step or batch. Every output is written under a temporary
name and renamed when complete, so nothing half-written is visible, and a rerun reuses every
finished task. The process exits ``GRACE_S`` after the signal at the latest, however far the
unwinding got (a step that takes longer), and at once on a second signal. Exit status 128 + the
signal's number: 130 for SIGINT, 143 for SIGTERM.

A deployment's flow run gets no such handler: the worker's cancel (the UI's Cancel) reaches it as a
SIGTERM, which Prefect's own handler turns into ``TerminationSignal`` in the main thread (after
telling the process, over its control channel, that it is a cancel). ``tasks_stop_with_the_run``
stops the run's tasks as that, or any stop from outside, unwinds the flow.

SIGPIPE (a write to stdout or stderr after its reader left: ``ipet run 2>&1 | head``) stops the run
the same way, without a line (there is no reader for it), exit 141, as any command in a pipe; the closed
stream is pointed at /dev/null so the unwinding's log lines go nowhere. Python ignores SIGPIPE by
default, so every such write raised ``BrokenPipeError`` (rich's console, under Prefect's log handler,
made it ``SystemExit(1)``) wherever it happened, a task's thread too. A SIGPIPE from a socket whose
peer left is ignored as before: its write fails with ``EPIPE`` and the client retries.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import sys
import threading
from typing import Callable, Iterator

from prompt_core.stopping import stop_all, stoppable

GRACE_S = 6.0
SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGPIPE)


class Interrupted(KeyboardInterrupt):
    """A run stopped by a signal; ``code`` is the exit status (128 + signal number)."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.code = 128 + signum


RESUMES = "finished outputs are kept, and running the same command again resumes where it stopped"


def resume_line(command: str, signum: int, outcome: str = RESUMES) -> str:
    return f"ipet: {signal.Signals(signum).name}: {command} stopped; {outcome}\n"


def closed_outputs() -> list[int]:
    """stdout and stderr where they are pipes whose reader has gone (poll reports POLLERR on them)."""
    poll = select.poll()
    for fd in (1, 2):
        poll.register(fd, 0)  # no events asked: only the errors poll always reports
    return [fd for fd, events in poll.poll(0) if events & select.POLLERR]


def discard(fds: list[int]) -> None:
    """Point ``fds`` at /dev/null, so what is still written or buffered for them (the flush at exit) goes nowhere."""
    for fd in fds:
        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, fd)
        os.close(null)


@contextlib.contextmanager
def stop_on_signals(command: str, cleanup: Callable[[], None], outcome: str = RESUMES) -> Iterator[None]:
    """For the block: the first signal says so on stderr (``outcome``: what survives) and raises
    :class:`Interrupted`; ``cleanup`` (stopping the server) then runs, and the process exits ``GRACE_S``
    later at the latest, or at once on a second signal. Outside the main thread (a caller's worker)
    nothing is installed."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    seen: list[int] = []

    def finish(code: int) -> None:
        with contextlib.suppress(Exception):
            cleanup()
        with contextlib.suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(code)

    def handler(signum: int, frame) -> None:
        if signum == signal.SIGPIPE:
            closed = closed_outputs()
            discard(closed)
            if not closed or seen:  # a socket's peer left (its write fails, as with SIGPIPE ignored), or stopping
                return
        elif seen:
            os._exit(128 + seen[0])
        seen.append(signum)
        stop_all()  # the run's trainings and labelings, in threads the exception below does not reach
        if signum != signal.SIGPIPE:  # not print: the handler may interrupt a print
            os.write(2, resume_line(command, signum, outcome).encode())
        threading.Thread(target=lambda: (threading.Event().wait(GRACE_S), finish(128 + signum)),
                         name="ipet-interrupt-deadline", daemon=True).start()
        raise Interrupted(signum)

    previous = {s: signal.signal(s, handler) for s in SIGNALS}
    try:
        yield
    except BaseException:
        if seen:  # Interrupted, or what a library made of it (pydantic wraps one raised in its serializer)
            finish(128 + seen[0])  # worker threads may still be training: do not wait for them
        raise
    finally:
        for s, old in previous.items():
            signal.signal(s, old)


@contextlib.contextmanager
def tasks_stop_with_the_run() -> Iterator[None]:
    """For a flow's body, which submits the run's tasks: a stop request of its own (``stoppable``), set
    when the body ends by a stop from outside, a ``BaseException`` that is not an ``Exception``:
    Ctrl-C's and SIGTERM's :class:`Interrupted`, Prefect's ``TerminationSignal`` (a cancel), a
    ``SystemExit``. The trainings and labelings in flight then stop before their next step or batch,
    so the flow's task runner, which waits for its threads as the flow ends, waits seconds. An error
    does not stop them: what they finish is kept for the rerun. A run started later in the process
    (tests run many) has its own request, never this one's."""
    with stoppable() as request:
        try:
            yield
        except Exception:
            raise
        except BaseException:
            request.set()
            raise
