"""What every flow that trains does first: own the run directory, check the tracking store,
prepare the data, open the flow's parent MLflow run, keep the imported libraries out of the garbage
collections after each task. Shared by ``ipet`` and ``adapt``."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Iterator

from mlflow.tracking import MlflowClient

from data.leaks import Leaks
from data.lock import run_dir_lock
from data.outputs import remove_stale_temps
from tasks import tracking
from tasks.memory import collections_of_this_run
from tasks.data import prepare_data

from .config import RunConfig
from .provenance import log_provenance
from .reporter import entry_flow_run_id


@dataclass(frozen=True)
class Session:
    """A flow's prepared data and tracking.

    Attributes:
        data: the prepared sets' manifest (``prepare_data``): each set's path and row count.
        tracked: the MLflow store and parent run tasks log to.
        client: a client of that store.
    """

    data: dict
    tracked: tracking.TrackedRun
    client: MlflowClient


@contextlib.contextmanager
def owned_run_dir(run_dir: str) -> Iterator[str]:
    """Hold the run directory's lock for the block (``RunDirBusy`` if another run has it), with what
    a killed run left half-written removed; yields it absolute (or the URL)."""
    with run_dir_lock(run_dir) as locked:
        remove_stale_temps(locked)  # safe: the run dir is ours
        yield str(locked)


@contextlib.contextmanager
def tracked_session(config: RunConfig, run_dir: str, run_name: str) -> Iterator[Session]:
    """The tracking store checked (a store that fails, fails before any compute), the data prepared,
    and one parent MLflow run ``run_name`` open for the block, ended FINISHED or FAILED. The tasks' garbage
    collections walk only what the block makes (``collections_of_this_run``)."""
    uri = tracking.store_uri(config.tracking.mlflow_uri, run_dir if config.tracking.fallback_local else None)
    tracking.experiment_id(uri, config.tracking.experiment)
    data = prepare_data(config.data, config.fields, config.labels, run_dir)
    for line in Leaks.of(data.get("leaks")).lines(config.data.test.name if config.data.test else "test"):
        print(f"warning: {line}")  # the flow's log (log_prints), as `ipet validate` prints it
    tags = {"prefect.flow_run_id": entry_flow_run_id(), "run_dir": run_dir}
    with collections_of_this_run(), \
            tracking.parent_run(uri, config.tracking.experiment, run_name, tags) as (client, parent_id):
        log_provenance(client, parent_id, config, data)
        yield Session(data, tracking.TrackedRun(uri, parent_id), client)
