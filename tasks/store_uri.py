"""Which MLflow store and registered model a command uses, decided without importing MLflow (a
second or more), so a command can refuse a missing store before it loads anything."""

from __future__ import annotations

import os
from pathlib import Path


CHAMPION = "champion"


class RegistryError(LookupError):
    """A registered model, version or alias that does not exist (a user mistake, not a crash)."""


class TrackingError(RuntimeError):
    """The tracking store cannot be reached or written; raised before any compute starts. Defined here,
    without MLflow, so that ``ipet`` names it among the errors it words in one line without importing
    MLflow before the run directory's lock (``tasks.tracking`` raises it)."""


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
