"""Champion/challenger: every finished run's final model goes into the MLflow model registry; the
``champion`` alias moves to it only if it beats the current champion on the same held-out set.

The model is an MLflow pyfunc (``tasks/mlflow_model.py``) whose artifact is the learner directory
(or a self-contained copy of an ensemble), so ``mlflow.pyfunc.load_model("models:/NAME@champion")``
works for anyone, and our own code gets the directory back for ``Predictor``. Everything goes
through ``MlflowClient`` with explicit ids and URIs (MLflow's active run is per thread, its
tracking URI global to the process), so this runs in any worker thread.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import mlflow.pyfunc
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
from mlflow.entities import LoggedModelOutput, LoggedModelStatus
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from mlflow.models import Model, ModelSignature
from mlflow.protos.databricks_pb2 import RESOURCE_ALREADY_EXISTS, RESOURCE_DOES_NOT_EXIST, ErrorCode
from mlflow.tracking import MlflowClient
from mlflow.types import ColSpec, ParamSchema, ParamSpec, Schema
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

import prompt_core
from data.location import local, location
from data.outputs import file_digest
from data.stream import read_batches

# prompt_core.predictor (torch, transformers) is imported in the functions that stage or score a model: a
# process that only imports the flow (Prefect's cancellation hooks, a deployment's start) does not wait for it

from . import adapt, devices, models
from .backbones import fetcher
from .model_uri import ARTIFACT, download, model_files
from .store_uri import CHAMPION, RegistryError
from .tracking import TrackedRun

MODEL_CODE = Path(__file__).with_name("mlflow_model.py")
CONTENT_KEY = "content_key"  # version tag: ``files_key`` of the model it holds
# a training's record (its loss curve and seconds), not the model: two trainings of the same weights differ in it
TELEMETRY = {models.METRICS, adapt.METRICS}


@dataclass
class Decision:
    """What registration decided, as logged to MLflow and written into results.json."""

    registered_model: str
    version: str
    model_uri: str
    decision: str  # "promoted" (the alias moved to this version) or "kept" (the champion stayed)
    reason: str
    challenger_score: float | None
    champion_score: float | None
    previous_champion: str | None
    champion: str
    reused: bool  # an earlier version holds the same model (``files_key``), so no new version was made


def decide(challenger: float | None, champion: float | None, previous: str | None,
           problem: str | None = None, floor: tuple[str, float] | None = None) -> tuple[bool, str]:
    """Promote the challenger? A tie keeps the champion: equal accuracy is no evidence the new
    model is better, and keeping it avoids flipping the alias between equal models.

    ``floor`` (what, accuracy) is the least a final model must score on this run's test set: a run
    whose final model is worse than its own earlier stages, or than always guessing the commonest
    class, has failed, and its model is registered but never made champion, first or not."""
    if floor is not None and challenger is not None and challenger < floor[1]:
        return False, (f"not promoted: the final model's {challenger:.4f} is below {floor[0]} = {floor[1]:.4f} "
                       "on this run's test set" + (f"; champion v{previous} kept" if previous else ""))
    if previous is None:
        return True, "no champion yet"
    if problem:
        return False, f"champion v{previous} kept: it could not be scored on this run's test set ({problem})"
    if challenger is None or champion is None:
        return False, f"champion v{previous} kept: no test set to compare on"
    scores = f"challenger {challenger:.4f} vs champion v{previous} {champion:.4f} on this run's test set"
    return (True, f"better: {scores}") if challenger > champion else (False, f"champion kept, not better: {scores}")


@task(task_run_name="register {name}", cache_policy=NO_CACHE)
def register_final_model(name: str, model_dir: str, test_set: str | None, challenger_score: float | None,
                         tracked: TrackedRun, batch_size: int | str = 64,
                         floor: tuple[str, float] | None = None) -> dict[str, Any]:
    """Register ``model_dir`` under ``name``, score the current champion on ``test_set``, move
    ``champion`` if the challenger's ``challenger_score`` (its accuracy on that set) is higher and
    at least ``floor`` (``decide``), and log the decision and both scores to the parent run."""
    logger = get_run_logger()
    uri, parent = tracked.uri, tracked.parent_id
    client = MlflowClient(uri, registry_uri=uri)
    previous = champion_version(client, name)
    with tempfile.TemporaryDirectory() as tmp:
        model = stage(model_dir, Path(tmp))
        earlier = registered_version(client, name, model, Path(tmp))
        version = str(earlier.version) if earlier else log_staged(client, parent, model, name,
                                                                  {"test_accuracy": challenger_score})
    same = None if earlier is None else (
        f"this final model is v{version}, registered from {earlier.tags.get('model_dir', 'another run')} "
        f"(the same files, content key {model.key[:12]})")
    champion_score = problem = None
    if version == previous:
        promote, reason = False, f"v{version} is already the champion: {same}"
    else:
        if previous is not None and test_set and challenger_score is not None:
            try:
                with devices.device() as dev:
                    champion_score = score(uri, name, previous, test_set, batch_size, dev)
            except Exception as err:  # a champion we cannot use must not fail a finished run; say why
                problem = f"{type(err).__name__}: {err}"
        promote, reason = decide(challenger_score, champion_score, previous, problem, floor)
        reason = f"no new version: {same}; {reason}" if same else reason
    if promote:
        client.set_registered_model_alias(name, CHAMPION, version)
    decision = Decision(name, version, f"models:/{name}/{version}", "promoted" if promote else "kept", reason,
                        challenger_score, champion_score, previous, version if promote else previous, bool(earlier))
    for key, value in (("challenger_score", challenger_score), ("champion_score", champion_score)):
        if value is not None:
            client.log_metric(parent, key, value)
    for key in ("registered_model", "version", "decision", "reason", "previous_champion", "champion"):
        client.set_tag(parent, f"registry.{key}", str(getattr(decision, key)))
    client.set_tag(parent, "registry.reused", str(decision.reused).lower())
    if promote or not earlier:  # the version's own record: what its registration decided, or a later promotion
        client.set_model_version_tag(name, version, "decision", decision.decision)
    logger.info("registered %s v%s: %s (%s)", name, version, decision.decision, reason)
    return asdict(decision)


def champion_version(client: MlflowClient, name: str) -> str | None:
    """The champion's version; None when the model is not registered, or is but has no champion (every
    version so far fell below its run's floor)."""
    try:
        champion = client.get_registered_model(name).aliases.get(CHAMPION)
    except MlflowException as err:
        if err.error_code == ErrorCode.Name(RESOURCE_DOES_NOT_EXIST):
            return None
        raise
    return None if champion is None else str(champion)


def registered_version(client: MlflowClient, name: str, model: Staged, tmp: Path) -> ModelVersion | None:
    """The version of ``name`` that already holds ``model``, so that finishing a run again, or a copy of
    its run directory (``cp -r``), or any training that gave the same files adds no second copy of one
    model to the registry: the one tagged with its content key, else one registered before versions had
    one (``before_keys``)."""
    found = _versions(client, f"name='{name}' and tags.{CONTENT_KEY}='{model.key}'")
    if not found:
        found = before_keys(client, [v for v in _versions(client, f"name='{name}'") if CONTENT_KEY not in v.tags],
                            model, tmp)
    return min(found, key=lambda v: int(v.version)) if found else None


def before_keys(client: MlflowClient, versions: list[ModelVersion], model: Staged, tmp: Path) -> list[ModelVersion]:
    """Of ``versions``, registered before content keys, those that hold ``model``: registered from its model
    directory, or from one of that name elsewhere (the run directory it was copied from: the name holds the
    key of the model's inputs) whose registered files have its content key, which that version is then tagged
    with, so the next lookup finds it by the key."""
    same = [v for v in versions if v.tags.get("model_dir") == model.source]
    copied = [v for v in versions if v.tags.get("model_dir") != model.source
              and Path(v.tags.get("model_dir", "")).name == Path(model.source).name]
    for version in copied:
        with contextlib.suppress(RegistryError):  # files no longer there hold nothing
            number = str(version.version)
            registered = model_files(client.tracking_uri, version.source, f"v{number}", tmp / number)
            if files_key(registered) == model.key:
                client.set_model_version_tag(version.name, version.version, CONTENT_KEY, model.key)
                same.append(version)
    return same


def _versions(client: MlflowClient, query: str) -> list[ModelVersion]:
    try:
        return list(client.search_model_versions(query))
    except MlflowException:
        return []


def log_staged(client: MlflowClient, run_id: str, model: Staged, name: str, tags: dict[str, Any]) -> str:
    """Log a staged model as a pyfunc LoggedModel of ``run_id`` and register it as a new version of
    ``name``, tagged with its directory and content key; the new version."""
    from prompt_core.predictor import describe

    run = client.get_run(run_id)
    tags = {**tags, "model_dir": model.source, CONTENT_KEY: model.key}
    if model.backbones:  # where an adapter model's backbone comes from: inside the model, or the hub by name
        tags["backbone"] = "; ".join(f"{how}: {name}" for name, how in model.backbones.items())
    with tempfile.TemporaryDirectory() as tmp:
        logged = client.create_logged_model(run.info.experiment_id, name="final-model", source_run_id=run_id,
                                            tags={"model_dir": model.source})
        try:
            fields, labels = describe(model.path)
            mlflow.pyfunc.save_model(
                Path(tmp) / "mlflow", python_model=str(MODEL_CODE), artifacts={ARTIFACT: str(model.path)},
                code_paths=[str(Path(prompt_core.__file__).parent)], pip_requirements=pip_requirements(),
                signature=signature(fields, labels), input_example=input_example(fields),
                mlflow_model=Model(artifact_path=logged.artifact_location, model_uuid=logged.model_id,
                                   run_id=run_id, model_id=logged.model_id))
            client.log_model_artifacts(logged.model_id, str(Path(tmp) / "mlflow"))
        except BaseException:  # not left PENDING for ever beside the copy a rerun logs (a SIGKILL: end_runs)
            with contextlib.suppress(Exception):
                client.finalize_logged_model(logged.model_id, LoggedModelStatus.FAILED)
            raise
    client.finalize_logged_model(logged.model_id, LoggedModelStatus.READY)
    client.log_outputs(run_id, [LoggedModelOutput(logged.model_id, step=0)])
    try:
        client.create_registered_model(name)
    except MlflowException as err:
        if err.error_code != ErrorCode.Name(RESOURCE_ALREADY_EXISTS):
            raise
    # source: the artifact location, not models:/<id> (MLflow 3.17 resolves that with a default client,
    # i.e. the process-global tracking URI, which is not ours)
    version = client.create_model_version(name, logged.artifact_location, run_id=run_id, model_id=logged.model_id,
                                          tags={k: str(v) for k, v in tags.items() if v is not None})
    return str(version.version)


@dataclass(frozen=True)
class Staged:
    """A final model as the registry stores it: ``source``, the run's model directory; ``path``, the
    directory to log (``staged``); where its adapter backbones come from; and its content key (``files_key``)."""

    source: str
    path: Path
    backbones: dict[str, str]
    key: str


def stage(model_dir: str, tmp: Path) -> Staged:
    """``model_dir`` staged under ``tmp`` (copied only where ``staged`` must), with its content key."""
    path, backbones = staged(local(model_dir), tmp / "final-model", location(model_dir).parent.parent)
    return Staged(model_dir, path, backbones, files_key(path))


def files_key(directory: Path) -> str:
    """SHA-256 of every file the registered model holds (its path in the model and its bytes), but a
    training's record (``TELEMETRY``): equal keys, the same model, wherever its run directory is. Read once
    per state of the files: the run tags its final model with it (flows/reporter.py), then registers it."""
    files = sorted(p for p in directory.rglob("*") if p.is_file() and p.name not in TELEMETRY)
    stamp = tuple((p.relative_to(directory).as_posix(), s.st_size, s.st_mtime_ns) for p in files for s in [p.stat()])
    return _files_key(str(directory.resolve()), stamp)


@functools.lru_cache(maxsize=8)
def _files_key(directory: str, stamp: tuple) -> str:
    """``files_key`` of ``directory`` whose files are as ``stamp`` (their paths, sizes and modification times)."""
    digest = hashlib.sha256()
    for name, *_ in stamp:
        digest.update(f"{name}\0{file_digest(Path(directory) / name)}\n".encode())
    return digest.hexdigest()


def staged(model_dir: Path, out: Path, run_dir: str | Path) -> tuple[Path, dict[str, str]]:
    """The directory to log, and where its adapter members' backbones come from (``bundled`` or
    ``hub``). A whole learner as is; an ensemble copied with its members inside, and an adapter
    model with its local backbones (``bundle_backbones``; one in ``run_dir``, the model's, from there),
    so the registered model depends neither on the run directory nor on this machine's files."""
    from prompt_core.predictor import ENSEMBLE_FILE, adapter_backbones, bundle_backbones, read_ensemble, save_ensemble

    ensemble = (model_dir / ENSEMBLE_FILE).is_file()
    if not ensemble and not adapter_backbones(model_dir):
        return model_dir, {}
    if ensemble:
        members, weights = read_ensemble(model_dir)
        copies = [out / "members" / m.name for m in members]
        for member, copy in zip(members, copies):
            shutil.copytree(member, copy, copy_function=_link_or_copy)
        save_ensemble(out, copies, weights)
    else:
        shutil.copytree(model_dir, out, copy_function=_link_or_copy)
    return out, bundle_backbones(out, fetcher(run_dir), _link_or_copy)


def _link_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst)  # weights are written once and never modified in place
    except OSError:
        shutil.copy2(src, dst)


def pip_requirements() -> list[str]:
    from importlib.metadata import version

    return [f"{p}=={version(p).split('+')[0]}" for p in ("torch", "transformers", "peft", "numpy", "pandas")]


def signature(fields: tuple[str, ...], labels: tuple[str, ...]) -> ModelSignature:
    """Every field the model reads is a required input column (its values may be null), as for
    ``ipet predict``: MLflow drops the columns a frame has beyond an optional input, so a frame
    without the model's column came back as zero rows, with no error. In the output, ``error`` is null
    where ``label`` and the probabilities are set, and set where they are null (a row with no text)."""
    from prompt_core.predictor import PROB_PREFIX

    outputs = [ColSpec("string", "label", required=False),
               *(ColSpec("double", PROB_PREFIX + l, required=False) for l in labels),
               ColSpec("string", "error", required=False)]
    return ModelSignature(inputs=Schema([ColSpec("string", f) for f in fields]),
                          outputs=Schema(outputs), params=ParamSchema([ParamSpec("precision", "string", "auto")]))


def input_example(fields: tuple[str, ...]) -> pd.DataFrame:
    """One row naming each field the model reads, made up rather than drawn from the run's data (a
    registered model is shared beyond it): MLflow shows it, checks it against the signature, and saves
    it as the request ``mlflow models serve`` takes (``serving_input_example.json``)."""
    return pd.DataFrame({field: [f"the {field} of a row to label"] for field in fields})


# --- scoring a registered version -----------------------------------------------------------------

def score(uri: str, name: str, version: str, test_set: str, batch_size: int, device: str) -> float:
    """Accuracy of a registered version on a labeled parquet set, whose rows are streamed.

    Compared as labels, not with ``prompt_core.accuracy`` on the probabilities: a row the model
    cannot predict (no text in any field it reads) has no label and counts as wrong, where the
    argmax of its NaN probabilities would read as the first label."""
    from prompt_core.predictor import Predictor, PredictorError

    with tempfile.TemporaryDirectory() as tmp:
        predictor = Predictor.load(download(uri, name, version, Path(tmp)))
    test_set = str(local(test_set))
    truth = pq.read_table(test_set, columns=["label"])["label"].to_pylist()
    unknown = sorted(set(truth) - set(predictor.labels))
    if unknown:
        raise PredictorError(f"its labels {list(predictor.labels)} lack {unknown} of the test set")
    missing = [f for f in predictor.fields if f not in pq.read_schema(test_set).names]
    if missing:
        raise PredictorError(f"it reads field(s) {missing} the test set lacks")
    predicted = [label for batch in read_batches(test_set, predictor.fields)
                 for label in predictor.predict(batch.to_pylist(), batch_size, device).labels]
    return float(np.mean([p == t for p, t in zip(predicted, truth)]))
