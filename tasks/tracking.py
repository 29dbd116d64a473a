"""MLflow bookkeeping with explicit run ids.

MLflow's active run is per thread, and tasks run in worker threads (or other processes), so
nothing here relies on it: the flow creates the parent run, and every child is created with
``parent_run_id`` and written through ``MlflowClient``.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, Mapping, Sequence
from urllib.parse import urlparse

from mlflow.entities import LoggedModelStatus, Metric, Param, RunTag
from mlflow.tracking import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID, MLFLOW_RUN_NAME

from data.location import is_url, mirror

from .store_uri import TrackingError, resolve_uri

log = logging.getLogger(__name__)

MAX_PARAM = 6000  # MLflow's limit on a param value, in characters
REUSED_FROM = "reused_from"  # a reused model's run: the id of the run that trained it


@dataclass(frozen=True)
class TrackedRun:
    """Where a flow's MLflow records go: the store's URI and the flow's parent run, which every
    task's child run (a trained model, an adapted backbone) and the registry's decision join."""

    uri: str
    parent_id: str


def check_store(uri: str) -> None:
    """Raise TrackingError within seconds if the store cannot be used.

    MLflow itself retries an unreachable server or an unopenable SQLite file with backoff for
    minutes; a run should instead stop before any compute with the URI and the cause. Nothing is
    written: a SQLite store is checked on the file system, a server with one unretried request.
    """
    scheme = urlparse(uri).scheme
    if scheme in ("http", "https"):
        _check_server(uri)
    elif scheme == "sqlite":
        _check_sqlite(uri, Path(uri.removeprefix("sqlite:///")))


def _check_sqlite(uri: str, path: Path) -> None:
    """MLflow creates the file and missing folders; what it needs is a folder it can create files in
    (probed with a temporary file, since ``os.access`` says yes to root everywhere) and, if the file
    exists, an SQLite database."""
    path = path.resolve()
    if path.exists():
        try:
            with open(path, "r+b") as f:
                head = f.read(16)
        except OSError as err:
            raise TrackingError(f"MLflow tracking store {uri!r} is not usable: {err.strerror}: {path}") from None
        if head and head != b"SQLite format 3\x00":
            raise TrackingError(f"MLflow tracking store {uri!r} is not usable: {path} is not an SQLite database")
        return
    folder = next(p for p in path.parents if p.exists())
    try:
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as err:
        raise TrackingError(f"MLflow tracking store {uri!r} is not usable: cannot create files in {folder}: "
                            f"{err.strerror}") from None


@contextlib.contextmanager
def _no_retries(timeout_s: int = 10) -> Iterator[None]:
    """MLflow reads its HTTP retry settings from the environment at every request."""
    keys = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": str(timeout_s)}
    saved = {k: os.environ.get(k) for k in keys}
    os.environ.update(keys)
    try:
        yield
    finally:
        for k, v in saved.items():
            os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)


def _check_server(uri: str) -> None:
    try:
        with _no_retries():
            MlflowClient(uri).search_experiments(max_results=1)
    except Exception as err:  # refused, timed out, DNS, HTTP errors: all "not usable", with the cause
        cause = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise TrackingError(f"MLflow tracking server {uri!r} is not reachable: {cause}") from None


def store_uri(configured: str | None, fallback_dir: str | Path | None = None) -> str:
    """The URI a run tracks to, checked: ``resolve_uri``'s, or, when that store is not usable and a
    ``fallback_dir`` is given (``tracking.fallback_local``), a SQLite store in that folder."""
    uri = resolve_uri(configured)
    try:
        check_store(uri)
    except TrackingError as err:
        if fallback_dir is None:
            raise
        folder = mirror(fallback_dir) if is_url(fallback_dir) else Path(fallback_dir)  # local, as it says
        local = f"sqlite:///{(folder / 'mlflow.db').resolve()}"
        log.warning("%s; tracking to %s instead (tracking.fallback_local)", err, local)
        return local
    return uri


def experiment_id(uri: str, name: str) -> str:
    """The experiment's id, creating it with an absolute artifact location beside a SQLite store."""
    check_store(uri)
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
    """One parent run per flow run, ended however the block exits: FINISHED; FAILED on an error, KILLED on
    Ctrl-C or SIGTERM, either with the exception as tag ``error`` and with the children still RUNNING."""
    client = MlflowClient(uri)
    exp_id = experiment_id(uri, experiment)
    if "run_dir" in tags:
        end_killed_runs(client, exp_id, tags["run_dir"])
    run = client.create_run(exp_id, run_name=name, tags=dict(tags))
    try:
        yield client, run.info.run_id
    except BaseException as err:  # Ctrl-C, SIGTERM: stopped, not failed; children ended with it either way
        cause = ": ".join(filter(None, (type(err).__name__, str(err))))
        with contextlib.suppress(Exception):  # the list view says why, without opening the Prefect logs
            client.set_tag(run.info.run_id, "error", cause[:MAX_PARAM])
        end_runs(client, exp_id, [run.info.run_id], "KILLED" if _stopped(err) else "FAILED")
        raise
    client.set_terminated(run.info.run_id, "FINISHED")


def _stopped(err: BaseException) -> bool:
    """Interrupted (Ctrl-C) or terminated (SIGTERM, as Prefect's ``TerminationSignal``)? Prefect is
    not imported for this: a validation that only checks the store should not pay for it."""
    return isinstance(err, KeyboardInterrupt) or type(err).__name__ == "TerminationSignal"


def end_killed_runs(client: MlflowClient, exp_id: str, run_dir: str) -> list[str]:
    """Mark KILLED the runs a killed flow left RUNNING in this run directory (a SIGKILL skips every
    ``finally``). Called with the run directory's lock held, so none of them is still alive."""
    return end_runs(client, exp_id, [r.info.run_id for r in killed_runs(client, exp_id, run_dir)], "KILLED")


def killed_runs(client: MlflowClient, exp_id: str, run_dir: str) -> list:
    """The parent runs of this run directory still RUNNING: with its lock held, runs a SIGKILL left so."""
    if "'" in run_dir:
        return []
    return client.search_runs([exp_id], filter_string=f"tags.run_dir = '{run_dir}' and attributes.status = 'RUNNING'")


def end_runs(client: MlflowClient, exp_id: str, parents: list[str], status: str) -> list[str]:
    """End ``parents`` and their children still RUNNING with ``status``, and fail the models they left
    half-logged; the ids ended."""
    ended = list(parents)
    for parent in parents:
        ended += [r.info.run_id for r in client.search_runs(
            [exp_id], filter_string=f"tags.mlflow.parentRunId = '{parent}' and attributes.status = 'RUNNING'")]
    for run_id in ended:
        client.set_terminated(run_id, status)
    fail_pending_models(client, exp_id, parents)
    return ended


def fail_pending_models(client: MlflowClient, exp_id: str, run_ids: Sequence[str]) -> list[str]:
    """Mark FAILED the logged models of ``run_ids`` still PENDING: a run stopped while registering its
    final model (between MLflow's ``create_logged_model`` and ``finalize_logged_model``) left one, which
    MLflow would show as pending for ever beside the copy the rerun logs. The ids failed."""
    failed = []
    for run_id in run_ids:  # MLflow's search cannot filter on status
        logged = client.search_logged_models([exp_id], filter_string=f"source_run_id = '{run_id}'")
        failed += [m.model_id for m in logged if m.status == LoggedModelStatus.PENDING]
    for model_id in failed:
        client.finalize_logged_model(model_id, LoggedModelStatus.FAILED)
    return failed


def log_child(uri: str, parent_id: str, name: str, params: Mapping[str, object],
              curve: Sequence[float] = (), metrics: Mapping[str, float] = (), tags: Mapping[str, str] = ()) -> str:
    """A finished child run: params, a loss curve (one metric per step) and final metrics. A model's run
    (tags ``model_dir`` and ``reused``) reused from an earlier run also gets ``REUSED_FROM`` (``trained_in``);
    its params, curve and metrics are the training's record, logged again so that every parent holds its
    whole run (a rerun's children compare with a first run's), and no files are uploaded for it."""
    client = MlflowClient(uri)
    exp_id, tags = client.get_run(parent_id).info.experiment_id, dict(tags)
    if tags.get("reused") == "true" and "model_dir" in tags:
        tags.update(trained_in(client, exp_id, tags["model_dir"]))
    run = client.create_run(exp_id, run_name=name,
                            tags={MLFLOW_PARENT_RUN_ID: parent_id, MLFLOW_RUN_NAME: name, **tags})
    now = int(time.time() * 1000)
    points = [Metric("loss", float(v), now, step) for step, v in enumerate(curve, start=1)]
    points += [Metric(k, float(v), now, 0) for k, v in dict(metrics).items() if v is not None]
    log_batch(client, run.info.run_id, points, [Param(k, param_value(v)) for k, v in params.items()])
    client.set_terminated(run.info.run_id, "FINISHED")
    return run.info.run_id


def trained_in(client: MlflowClient, exp_id: str, model_dir: str) -> dict[str, str]:
    """``{REUSED_FROM: run id}``: the child run of the experiment that trained the model in ``model_dir``, or,
    where none did (a copy of a run directory, ``cp -r``), the first that trained one of that directory's name
    elsewhere (the name holds the model's content key). Empty where no run of this experiment trained it (an
    earlier store, or a run killed between the training and its logging)."""
    name = Path(model_dir).name
    if "'" in name:  # cannot be quoted in a filter (model names are ipet's own: never so)
        return {}
    runs = client.search_runs([exp_id], filter_string=f"tags.reused = 'false' and tags.model_dir LIKE '%{name}'",
                              order_by=["attributes.start_time ASC"])
    named = [r for r in runs if Path(r.data.tags["model_dir"]).name == name]
    named.sort(key=lambda r: r.data.tags["model_dir"] != model_dir)  # stable: the earliest of each kind first
    return {REUSED_FROM: named[0].info.run_id} if named else {}


def used_tags(computed: Iterable[Mapping[str, str]]) -> dict[str, str]:
    """Tags ``precision.used`` and ``device.used``: the values in ``computed`` (``prompt_core.computed_on``'s),
    sorted and joined by commas: one model's run gets one of each, a parent run the set its tasks used.
    ``auto`` in the params does not say whether a run computed in bf16 or float32, on a CPU or CUDA; its
    numbers depend on it. None where nothing is known (models trained before this was recorded)."""
    computed = list(computed)
    return {f"{what}.used": ",".join(sorted({c[what] for c in computed})) for what in ("precision", "device")
            if computed}


def param_value(value: object) -> str:
    """``value`` as an MLflow param. MLflow refuses one over ``MAX_PARAM`` characters; a longer one is cut
    and marked with its length and hash, so nobody reads the cut for the value, and two values that
    differ only past the cut still differ in the compare view."""
    text = str(value)
    if len(text) <= MAX_PARAM:
        return text
    mark = f" …[cut: {len(text)} characters, sha256 {hashlib.sha256(text.encode()).hexdigest()[:16]}]"
    return text[: MAX_PARAM - len(mark)] + mark


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
