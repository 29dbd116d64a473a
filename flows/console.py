"""What an ``ipet`` command shows on the terminal: by default the stage lines, each trained model,
warnings once, and the final table; not Prefect's "Finished in state Completed()" after every task
nor MLflow's download bars, nor Prefect's tracebacks of an error the command words in one line itself
(a failed write), nor a flow's repeat of a warning the command printed. ``--verbose`` shows everything,
``--quiet`` only warnings and the final table."""

from __future__ import annotations

import logging
import os
import sys
from typing import Callable, Collection

ROUTINE = "Finished in state Completed("
REPEATED = ("prompt_core.backbone",)  # loggers whose warnings say the same for every model


class OutputError(OSError):
    """A write to standard output that failed (``ipet run … > /dev/full``): ``ipet`` says it as it says any
    command's (``cannot write standard output``), where ``run``'s other failed writes are its run directory's."""


def say(*text: object) -> None:
    """``print`` for a command whose other failed writes name its run directory: a failure here is an
    :class:`OutputError` (a reader that left stays ``BrokenPipeError``: exit 141)."""
    try:
        print(*text)
    except BrokenPipeError:
        raise
    except OSError as err:
        raise OutputError(err.errno, err.strerror) from None


class _Quiet(logging.Filter):
    """Drops routine state lines, and a message already shown once."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if message.startswith(ROUTINE):
            return False
        if record.name in REPEATED:
            if message in self.seen:
                return False
            self.seen.add(message)
        return True


class _Worded(logging.Filter):
    """For the terminal's handler: drops Prefect's report of an exception ``worded`` says the command
    words in one line itself (the traceback of every task and flow it passed through), and the failed
    state lines that name it. Any other exception, a bug, keeps its traceback; the API's log (a
    configured server's UI) keeps everything, as it is the logger's handler, not this one."""

    def __init__(self, worded: Callable[[BaseException], bool]) -> None:
        super().__init__()
        self.worded = worded
        self.dropped: set[str] = set()  # "Type: message" of each exception dropped, as a state line names it

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if error is not None and self.worded(error):
            self.dropped.add(f"{type(error).__name__}: {error}")
            return False
        message = record.getMessage()
        return not (message.startswith("Finished in state Failed(") and any(d in message for d in self.dropped))


def configure(verbosity: str) -> None:
    """Call before Prefect is imported (it reads its logging level then): ``normal``, ``verbose`` or
    ``quiet``. Ray (``runner.kind: ray``), read at its import, prints its workers' lines into this log: every
    one (it merged lines alike but for their numbers into one, ``[repeated 7x across cluster]``: the others
    were lost), and without colour codes where the log is not a terminal (a file read them as ``[36m``)."""
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    if not (sys.stdout.isatty() and sys.stderr.isatty()):
        os.environ.setdefault("RAY_COLOR_PREFIX", "0")
    if verbosity == "verbose":
        return
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    if verbosity == "quiet":
        os.environ["PREFECT_LOGGING_LEVEL"] = "WARNING"
        os.environ["MLFLOW_LOGGING_LEVEL"] = "WARNING"  # read at its import: a new store's "Creating initial ..."
    quiet = _Quiet()
    for name in ("prefect.task_runs", "prefect.flow_runs", *REPEATED):
        logging.getLogger(name).addFilter(quiet)


class _Warned(logging.Filter):
    """For the terminal's handler: drops a flow's line that repeats a warning the command printed before
    the flow started. ``ipet run`` prints what its checks found (a leak from the test set into the
    training data); the flow then prints its data's leaks again, for a deployment, which runs it without
    the command. The API's log keeps the flow's line."""

    def __init__(self, warned: Collection[str]) -> None:
        super().__init__()
        self.repeats = {f"warning: {line}" for line in warned}

    def filter(self, record: logging.LogRecord) -> bool:
        return record.getMessage() not in self.repeats


def hide_repeats(verbosity: str, worded: Callable[[BaseException], bool], warned: Collection[str] = ()) -> None:
    """After ``configure``, just before a flow runs (Prefect's logging is set up here if it is not yet):
    the terminal shows no Prefect report of an exception ``worded`` says the command reports in a line of
    its own, and no flow's line repeating a warning the command printed (``warned``), unless ``verbose``."""
    from prefect.logging.configuration import ensure_logging_setup
    from prefect.logging.handlers import PrefectConsoleHandler

    if verbosity == "verbose":
        return
    ensure_logging_setup()
    for handler in logging.getLogger().handlers:  # Prefect's console handler is the root logger's
        if isinstance(handler, PrefectConsoleHandler):
            handler.addFilter(_Worded(worded))
            handler.addFilter(_Warned(warned))


class _Only(logging.Filter):
    """Drops the records that carry ``error`` (the very exception object)."""

    def __init__(self, error: BaseException) -> None:
        super().__init__()
        self.error = error

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.exc_info and record.exc_info[1] is self.error)


def refused(error: Exception):
    """A flow's end for a user mistake ``error`` it words in one line: Failed, with that line as the
    state message (the UI shows it) and the error as its data (a caller gets it raised). The engine
    that runs a deployment's flow run raises that error once more after the flow, and logged it with its
    traceback in the flow run's log ("Engine execution exited with unexpected exception"); that record
    is dropped, and only that: any other exception keeps its traceback."""
    from prefect.states import Failed

    logging.getLogger("prefect.flow_runs").addFilter(_Only(error))
    return Failed(message=str(error), data=error)
