"""Which registered version ``ipet predict --model`` names, read as MLflow 3 reads a ``models:/`` URI
(split by ``store_uri.parse``, without MLflow), and that version's files; or, for ``models:/m-ID``, the
logged model of that id (the registry logs each final model as one) and the version it was registered as.

``models:/NAME/SUFFIX`` is a version number, ``latest`` (the newest version) or a registry stage
(``Production``: MLflow still reads stages, deprecated since 2.9; this registry never sets one, it moves
the ``champion`` alias), and ``models:/NAME@ALIAS`` an alias. Every way a lookup fails is one
``RegistryError`` line that names the store and what it does hold (the registered models, a model's
aliases and newest version), so the URI to use is in the message.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Iterator

import mlflow.artifacts
from mlflow.entities import LoggedModelStatus
from mlflow.entities.model_registry import RegisteredModel
from mlflow.exceptions import MlflowException
from mlflow.models import Model
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE, RESOURCE_DOES_NOT_EXIST, ErrorCode
from mlflow.tracking import MlflowClient
from sqlalchemy.exc import SQLAlchemyError

from data.errors import nearby

from .store_uri import CHAMPION, LATEST, Ref, RegistryError, TrackingError, named
from .tracking import check_store

ARTIFACT = "model"  # the pyfunc's artifact that holds the model directory (tasks/mlflow_model.py loads it)
SHOWN = 10  # registered models or aliases named in a message


def registered_model_dir(uri: str, model: str, registered_model: str | None, dst: Path) -> tuple[Path, str]:
    """The model directory of the version ``model`` names (``champion`` of ``registered_model``, or a
    ``models:/`` URI) in the store at ``uri``, downloaded under ``dst`` unless the store is local; and
    ``NAME/vN``."""
    ref = named(model, registered_model)
    with _reading(uri) as client:
        if ref is not None and ref.model_id:
            return logged_model_dir(client, ref, uri, dst)
        ref = ref or champion_of_the_store(client, uri)
        version = resolve(client, ref, uri)
        return download(uri, ref.name, version, dst), f"{ref.name}/v{version}"


def logged_model_dir(client: MlflowClient, ref: Ref, uri: str, dst: Path) -> tuple[Path, str]:
    """The model directory of the logged model ``ref`` names by its id (``models:/m-ID``: the registry logs each
    final model as one, and MLflow's UI lists it so), and the version it was registered as (``NAME/vN``; its id
    if it never was). One a run stopped while logging left unfinished (``FAILED``, ``PENDING``) is refused."""
    try:
        logged = client.get_logged_model(ref.model_id)
    except MlflowException as err:
        if err.error_code not in map(ErrorCode.Name, (RESOURCE_DOES_NOT_EXIST, INVALID_PARAMETER_VALUE)):
            raise
        raise RegistryError(f"{ref.text}: no logged model {ref.model_id!r} in {uri}") from None
    if logged.status != LoggedModelStatus.READY:
        raise RegistryError(f"{ref.text}: logged model {logged.name!r} is {logged.status}: its logging did not "
                            "finish (a run stopped while registering it); its run's rerun registers the model again")
    # the SQL store keeps no model id on a version: a version of this model is one registered from its files
    versions = [v for v in client.search_model_versions(f"run_id = '{logged.source_run_id}'")
                if v.source == logged.artifact_location]
    version = f"{versions[0].name}/v{versions[0].version}" if versions else ref.model_id
    return model_files(uri, logged.artifact_location, f"logged model {ref.model_id}", dst), version


def champion_of_the_store(client: MlflowClient, uri: str) -> Ref:
    """``champion`` without ``--registered-model``: the champion of the store's only registered model that has one."""
    names = [m.name for m in client.search_registered_models() if CHAMPION in m.aliases]
    if len(names) != 1:
        found = f"registered models with a champion: {names}" if names else "no registered model has a champion"
        raise RegistryError(f"--model champion needs --registered-model NAME ({found} in {uri})")
    return named(CHAMPION, names[0])


def resolve(client: MlflowClient, ref: Ref, uri: str) -> str:
    """The version number ``ref`` names. An alias is looked up in the model's aliases (MLflow's own lookup
    reports an unknown one as an invalid parameter, not as a missing resource); ``latest`` and a stage
    as MLflow reads them, the newest version (in that stage)."""
    model = _registered(client, ref, uri)
    if ref.alias is not None:
        if ref.alias not in model.aliases:
            raise RegistryError(f"{ref.text}: registered model {ref.name!r} has no alias {ref.alias!r} in {uri} "
                                f"({holdings(model)})")
        return str(model.aliases[ref.alias])
    if ref.suffix.isdigit():
        try:
            return str(client.get_model_version(ref.name, ref.suffix).version)
        except MlflowException as err:
            if err.error_code != ErrorCode.Name(RESOURCE_DOES_NOT_EXIST):
                raise
        raise RegistryError(f"{ref.text}: registered model {ref.name!r} has no version {ref.suffix} in {uri} "
                            f"({holdings(model)})")
    stage = None if ref.suffix.lower() == LATEST else ref.suffix.lower()
    # latest_versions: the newest version of each stage (MLflow's own lookup reads the same)
    found = [int(v.version) for v in model.latest_versions if stage in (None, v.current_stage.lower())]
    if found:
        return str(max(found))
    if stage is None:
        raise RegistryError(f"{ref.text}: registered model {ref.name!r} has no versions in {uri}")
    use = (f"; use models:/{ref.name}@{_first_alias(model)}" if model.aliases else
           f"; use models:/{ref.name}/{LATEST}" if model.latest_versions else "")
    raise RegistryError(f"{ref.text}: no version of {ref.name!r} is in stage {ref.suffix!r}: this registry marks "
                        f"versions with aliases, not stages (deprecated since MLflow 2.9); {holdings(model)}{use}")


def holdings(model: RegisteredModel) -> str:
    """A registered model's aliases and newest version, for a message that must say what there is."""
    aliases = sorted(model.aliases.items(), key=lambda item: item[0] != CHAMPION)
    listed = ", ".join(f"{alias} (v{version})" for alias, version in aliases[:SHOWN]) + (
        ", …" if len(aliases) > SHOWN else "")
    newest = max((int(v.version) for v in model.latest_versions), default=None)
    return (f"its aliases: {listed}" if aliases else "it has no aliases") + (
        f"; newest version v{newest}" if newest is not None else "; no versions")


def _first_alias(model: RegisteredModel) -> str:
    return CHAMPION if CHAMPION in model.aliases else next(iter(model.aliases))


def _registered(client: MlflowClient, ref: Ref, uri: str) -> RegisteredModel:
    try:
        return client.get_registered_model(ref.name)
    except MlflowException as err:
        if err.error_code != ErrorCode.Name(RESOURCE_DOES_NOT_EXIST):
            raise
    names = [m.name for m in client.search_registered_models()]
    close = nearby(ref.name, names, 3, cutoff=0.8)
    known = (f"did you mean {' or '.join(map(repr, close))}?" if close else
             f"registered models: {', '.join(names[:SHOWN])}{', …' if len(names) > SHOWN else ''}" if names else
             "it has no registered models")
    raise RegistryError(f"{ref.text}: no registered model {ref.name!r} in {uri} ({known})")


def download(uri: str, name: str, version: str, dst: Path) -> Path:
    """A registered version's model directory (the pyfunc's ``model`` artifact): in place for a
    local artifact store, else downloaded under ``dst``."""
    location = MlflowClient(uri, registry_uri=uri).get_model_version_download_uri(name, version)
    # resolved here, not as models:/NAME/V, which MLflow looks up in the process-global registry
    return model_files(uri, location, f"registered model {name!r} v{version}", dst)


def model_files(uri: str, location: str, what: str, dst: Path) -> Path:
    """The model directory inside the MLflow model at ``location`` (the pyfunc's ``model`` artifact): in place
    for a local artifact store, else downloaded under ``dst``; ``what`` names the model in a message."""
    folder = location.removeprefix("file://") if location.startswith("file://") else None
    if folder is None or not Path(folder).is_dir():
        try:
            folder = mlflow.artifacts.download_artifacts(artifact_uri=location, dst_path=str(dst), tracking_uri=uri)
        except MlflowException as err:  # the registry names files its artifact store no longer has
            raise RegistryError(f"{what}: its files cannot be read from {location} "
                                f"({str(err).splitlines()[-1]}; was the artifact store moved or deleted?)") from None
    artifacts = Model.load(folder).flavors.get("python_function", {}).get("artifacts", {})
    if ARTIFACT not in artifacts:  # another program's MLflow model, which ipet cannot read
        raise RegistryError(f"{what}: not a model ipet registered (its MLflow model has no {ARTIFACT!r} artifact)")
    return Path(folder) / artifacts[ARTIFACT]["path"]


def refuse_run_uri(uri: str, model: str) -> None:
    """``runs:/RUN_ID/PATH``: a run's artifacts are no model ``ipet predict`` reads (the final model an
    iPET run logs there is no MLflow model, and an ensemble's lacks its members). RegistryError naming
    what to give instead: the version the run registered, else its model directory."""
    run_id = model.removeprefix("runs:/").split("/")[0]
    if not run_id:
        raise RegistryError(f"{model}: expected runs:/RUN_ID/PATH")
    with _reading(uri) as client:
        try:
            tags = client.get_run(run_id).data.tags
        except MlflowException as err:  # an id that cannot be one is an invalid parameter
            if err.error_code not in map(ErrorCode.Name, (RESOURCE_DOES_NOT_EXIST, INVALID_PARAMETER_VALUE)):
                raise
            raise RegistryError(f"{model}: no MLflow run {run_id!r} in {uri}") from None
    name, version = tags.get("registry.registered_model"), tags.get("registry.version")
    directory = tags.get("final_model.dir") or tags.get("model_dir")
    instead = (f"its final model is registered as models:/{name}/{version}" if name and version
               else f"give its model directory {directory}" if directory else "the run names no model of its own")
    raise RegistryError(f"{model}: ipet predict reads registered models, run directories and model directories, "
                        f"not a run's artifacts; {instead}")


@contextlib.contextmanager
def _reading(uri: str) -> Iterator[MlflowClient]:
    """A client of the store at ``uri``; what keeps the store from being read (a server that does not
    answer, a file that is no SQLite database, a URI MLflow has no store for, a database driver not
    installed) is one RegistryError naming it. A server is asked first with one unretried request
    (``check_store``), where MLflow's retries would hold an unreachable one for minutes; a SQLite file is
    not checked so (that check asks for a file it may write, and reading needs none)."""
    try:
        if uri.startswith(("http://", "https://")):
            check_store(uri)
        yield MlflowClient(uri, registry_uri=uri)
    except TrackingError as err:
        raise RegistryError(str(err)) from None
    except (MlflowException, SQLAlchemyError, ImportError) as err:
        cause = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise RegistryError(f"MLflow store {uri} cannot be read: {cause}") from None
