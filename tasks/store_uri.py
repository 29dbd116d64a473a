"""Which MLflow store and registered model a command uses, decided without importing MLflow (a
second or more), so a command can refuse a missing store or a malformed ``models:/`` URI before it
loads anything."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path


CHAMPION = "champion"
LATEST = "latest"  # models:/NAME/latest: the newest version (MLflow's meaning)
STAGES = ("None", "Staging", "Production", "Archived")  # MLflow's registry stages (deprecated since 2.9)
FORMS = "models:/NAME@ALIAS, models:/NAME/VERSION, models:/NAME/latest or models:/m-ID"
LOGGED_MODEL_ID = re.compile(r"m-[0-9a-f]{32}")  # MLflow 3's id of a logged model (its stores' ``m-<uuid hex>``)


class RegistryError(LookupError):
    """A registered model, version or alias that does not exist, a URI that names none, a store that
    cannot be read: a user's mistake or setting, not a crash."""


class TrackingError(RuntimeError):
    """The tracking store cannot be reached or written; raised before any compute starts. Defined here,
    without MLflow, so that ``ipet`` names it among the errors it words in one line without importing
    MLflow before the run directory's lock (``tasks.tracking`` raises it)."""


def in_store(model: str) -> bool:
    """Whether ``ipet predict --model`` names something the MLflow store holds (``champion``, a
    ``models:/`` or a ``runs:/`` URI) rather than a directory."""
    return model == CHAMPION or model.startswith(("models:/", "runs:/"))


def resolve_uri(configured: str | None) -> str:
    """Configured URI, else ``$MLFLOW_TRACKING_URI``, else ``sqlite:///<cwd>/mlflow.db`` (absolute,
    so workers in other directories write to the same store)."""
    uri = configured or os.environ.get("MLFLOW_TRACKING_URI")
    return uri or f"sqlite:///{Path('mlflow.db').resolve()}"


def missing_store(uri: str) -> str | None:
    """Why a store to read from (the registry's champion) is not there: a SQLite file that does not exist."""
    if uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).is_file():
        return (f"no MLflow store at {uri} "
                "(run from the project directory, or set --tracking-uri or MLFLOW_TRACKING_URI)")
    return None


@dataclass(frozen=True)
class Ref:
    """A registered model and one of its versions, as ``text`` (what the user gave) names them:
    ``suffix`` (``models:/NAME/SUFFIX``: a version number, ``latest`` or a stage) or ``alias``; or a logged
    model by its id (``models:/m-ID``: ``model_id``, ``name`` empty), whatever version it was registered as."""

    text: str
    name: str
    suffix: str | None = None
    alias: str | None = None
    model_id: str | None = None


def named(model: str, registered_model: str | None) -> Ref | None:
    """The registered version ``ipet predict --model`` names, as far as the text says: a ``models:/`` URI
    parsed, ``champion`` of ``registered_model``; None for ``champion`` alone (the store knows whose)."""
    if not model.startswith("models:/"):
        return None if registered_model is None else Ref(f"models:/{registered_model}@{CHAMPION}", registered_model,
                                                         alias=CHAMPION)
    ref = parse(model)
    if registered_model and ref.model_id:
        raise RegistryError(f"{model} names a logged model by its id, whatever it is registered as; leave out "
                            f"--registered-model {registered_model}")
    if registered_model and registered_model != ref.name:  # which of the two was meant is not ours to guess
        raise RegistryError(f"{model} names registered model {ref.name!r}, --registered-model {registered_model!r}; "
                            "give one of them")
    return ref


def parse(model: str) -> Ref:
    """``models:/NAME/SUFFIX``, ``models:/NAME@ALIAS`` and ``models:/m-ID`` split as MLflow splits them. A suffix
    that is none of a version, ``latest`` or a stage is refused with the alias form (MLflow would read it as a
    stage that does not exist). A bare ``models:/X`` is MLflow 3's logged model id: one of the form its stores
    give (``LOGGED_MODEL_ID``, which the registry logs each final model as, shown in MLflow's UI) is read so;
    another, such as a registered model's name without a version, is refused with the forms to use."""
    ref = model.removeprefix("models:/")
    name, slash, suffix = ref.partition("/")
    plain = bool(name) and ":" not in name and "@" not in ref
    if plain and slash and suffix and "/" not in suffix:
        if re.fullmatch(r"[vV]\d+", suffix):
            raise RegistryError(f"{model}: a version is its number alone: models:/{name}/{suffix[1:]}")
        if not (suffix.isdigit() or suffix.lower() == LATEST or suffix.lower() in map(str.lower, STAGES)):
            raise RegistryError(f"{model}: {suffix!r} is not a version number, 'latest' or a stage; "
                                f"an alias is written models:/{name}@{suffix}")
        return Ref(model, name, suffix=suffix)
    name, at, alias = ref.rpartition("@")
    if at and name and alias and "/" not in ref and ":" not in name:
        return Ref(model, name, alias=alias)
    if plain and not slash and LOGGED_MODEL_ID.fullmatch(ref):
        return Ref(model, "", model_id=ref)
    if plain and not slash:
        raise RegistryError(f"{model}: no version or alias; give models:/{ref}@{CHAMPION}, models:/{ref}/VERSION "
                            f"or models:/{ref}/{LATEST} (models:/m-ID names a logged model by its id)")
    raise RegistryError(f"{model}: expected {FORMS}")
