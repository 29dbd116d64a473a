"""What an ``ipet`` command shows on the terminal: by default the stage lines, each trained model,
warnings once, and the final table; not Prefect's "Finished in state Completed()" after every task
nor MLflow's download bars. ``--verbose`` shows everything, ``--quiet`` only warnings and the final table."""

from __future__ import annotations

import logging
import os

ROUTINE = "Finished in state Completed("
REPEATED = ("prompt_core.backbone",)  # loggers whose warnings say the same for every model


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


def configure(verbosity: str) -> None:
    """Call before Prefect is imported (it reads its logging level then): ``normal``, ``verbose`` or
    ``quiet``."""
    if verbosity == "verbose":
        return
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    if verbosity == "quiet":
        os.environ["PREFECT_LOGGING_LEVEL"] = "WARNING"
        os.environ["MLFLOW_LOGGING_LEVEL"] = "WARNING"  # read at its import: a new store's "Creating initial ..."
    quiet = _Quiet()
    for name in ("prefect.task_runs", "prefect.flow_runs", *REPEATED):
        logging.getLogger(name).addFilter(quiet)
