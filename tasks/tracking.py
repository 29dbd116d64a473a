"""MLflow bookkeeping with explicit run ids.

MLflow's active run is per thread, and tasks run in worker threads (or other processes), so
nothing here relies on it: the flow creates the parent run, and every child is created with
``parent_run_id`` and written through ``MlflowClient``.
"""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path
from typing import Iterator, Mapping, Sequence

from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID, MLFLOW_RUN_NAME


class TrackingError(RuntimeError):
    """The tracking store cannot be reached or written; raised before any compute starts."""


def resolve_uri(configured: str | None) -> str:
    """Configured URI, else ``$MLFLOW_TRACKING_URI``, else ``sqlite:///<cwd>/mlflow.db`` (absolute,
    so workers in other directories write to the same store)."""
    uri = configured or os.environ.get("MLFLOW_TRACKING_URI")
    return uri or f"sqlite:///{Path('mlflow.db').resolve()}"


def experiment_id(uri: str, name: str) -> str:
    """The experiment's id, creating it with an absolute artifact location beside a SQLite store."""
    client = MlflowClient(uri)
    try:
        found = client.get_experiment_by_name(name)
        if found is not None:
            return found.experiment_id
        location = None
        if uri.startswith("sqlite:///"):
            location = (Path(uri.removeprefix("sqlite:///")).parent / "mlartifacts").resolve().as_uri()
        return client.create_experiment(name, artifact_location=location)
    except Exception as err:  # connection errors come in many types; the user needs the URI and cause
        raise TrackingError(f"MLflow tracking store {uri!r} is not usable: {err}") from None


@contextlib.contextmanager
def parent_run(uri: str, experiment: str, name: str, tags: Mapping[str, str]) -> Iterator[tuple[MlflowClient, str]]:
    """One parent run per flow run, ended FINISHED or FAILED however the block exits."""
    client = MlflowClient(uri)
    run = client.create_run(experiment_id(uri, experiment), run_name=name, tags=dict(tags))
    try:
        yield client, run.info.run_id
    except BaseException:
        client.set_terminated(run.info.run_id, "FAILED")
        raise
    client.set_terminated(run.info.run_id, "FINISHED")


def log_child(uri: str, parent_id: str, name: str, params: Mapping[str, object],
              curve: Sequence[float] = (), metrics: Mapping[str, float] = (), tags: Mapping[str, str] = ()) -> str:
    """A finished child run: params, a loss curve (one metric per step) and final metrics."""
    client = MlflowClient(uri)
    parent = client.get_run(parent_id)
    run = client.create_run(parent.info.experiment_id, run_name=name,
                            tags={MLFLOW_PARENT_RUN_ID: parent_id, MLFLOW_RUN_NAME: name, **dict(tags)})
    now = int(time.time() * 1000)
    points = [Metric("loss", float(v), now, step) for step, v in enumerate(curve, start=1)]
    points += [Metric(k, float(v), now, 0) for k, v in dict(metrics).items() if v is not None]
    log_batch(client, run.info.run_id, points, [Param(k, str(v)[:6000]) for k, v in params.items()])
    client.set_terminated(run.info.run_id, "FINISHED")
    return run.info.run_id


def log_batch(client: MlflowClient, run_id: str, metrics: Sequence[Metric] = (), params: Sequence[Param] = (),
              tags: Sequence[RunTag] = ()) -> None:
    """``log_batch`` in chunks under MLflow's per-call limits (1000 metrics, 100 params)."""
    metrics, params = list(metrics), list(params)
    for start in range(0, len(params), 100):
        client.log_batch(run_id, params=params[start : start + 100])
    for start in range(0, len(metrics), 1000):
        client.log_batch(run_id, metrics=metrics[start : start + 1000])
    if tags:
        client.log_batch(run_id, tags=list(tags))
