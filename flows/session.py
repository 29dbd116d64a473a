"""What every flow that trains does first: own the run directory, check the tracking store,
prepare the data, open the flow's parent MLflow run, keep the imported libraries out of the garbage
collections after each task, stop the tasks in flight when the flow is stopped. Shared by ``ipet`` and
``adapt``."""

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
from .interrupt import tasks_stop_with_the_run
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
    collections walk only what the block makes (``collections_of_this_run``); a Ctrl-C, SIGTERM or cancel
    stops the trainings and labelings it submitted (``tasks_stop_with_the_run``)."""
    uri = tracking.store_uri(config.tracking.mlflow_uri, run_dir if config.tracking.fallback_local else None)
    exp_id = tracking.experiment_id(uri, config.tracking.experiment)
    data = prepare_data(config.data, config.fields, config.labels, run_dir)
    for line in Leaks.of(data.get("leaks")).lines(config.data.test.name if config.data.test else "test"):
        print(f"warning: {line}")  # the flow's log (log_prints), as `ipet validate` prints it
    tags = {"prefect.flow_run_id": entry_flow_run_id(), "run_dir": run_dir}
    crash_killed_flow_runs(MlflowClient(uri), exp_id, run_dir)  # before their MLflow runs are ended
    with collections_of_this_run(), \
            tracking.parent_run(uri, config.tracking.experiment, run_name, tags) as (client, parent_id), \
            tasks_stop_with_the_run():  # innermost: the tasks stop first, while MLflow is told
        log_provenance(client, parent_id, config, data)
        yield Session(data, tracking.TrackedRun(uri, parent_id), client)


def crash_killed_flow_runs(client: MlflowClient, exp_id: str, run_dir: str) -> list[str]:
    """Mark Crashed the Prefect flow runs (and their subflows) of runs a SIGKILL stopped in this run
    directory: nothing else ends them (a deployment's worker does, a CLI run has none), so the UI showed
    them Running for ever. They are the ones the MLflow parent runs still RUNNING here name, found with
    the run directory's lock held, so none is alive. One this Prefect API does not know (another
    server's) is left alone; a failure here is a warning, never the run's failure. The ids crashed."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId, FlowRunFilterParentFlowRunId
    from prefect.states import Crashed

    ids = [run.data.tags["prefect.flow_run_id"] for run in tracking.killed_runs(client, exp_id, run_dir)
           if "prefect.flow_run_id" in run.data.tags]
    crashed: list[str] = []
    if not ids:
        return crashed
    state = Crashed(message=f"killed: its process ended without a word; a later run in {run_dir} found it so")
    try:
        with get_client(sync_client=True) as prefect:
            runs = prefect.read_flow_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=ids)))
            runs += prefect.read_flow_runs(flow_run_filter=FlowRunFilter(
                parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=ids)))
            for run in runs:
                if run.state is not None and not run.state.is_final():
                    prefect.set_flow_run_state(run.id, state, force=True)
                    crashed.append(str(run.id))
    except Exception as err:  # the record of a dead run must not stop a live one
        print(f"warning: could not mark the killed runs' Prefect flow runs crashed: {type(err).__name__}: {err}")
    return crashed
