"""Ingesting new data as a flow (so it can be a deployment too), and the event that announces it.

``ipet.data.arrived`` names the dataset as its resource; deployments trigger retraining on it.
"""

from __future__ import annotations

from typing import Any

from prefect import flow
from prefect.events import Event, emit_event

from data.dataset_store import typed_line
from data.errors import DataError
from data.ingest import Schema, ingest_file

from .config import ConfigError, RunConfig, load_config
from .console import refused

EVENT = "ipet.data.arrived"


def schema_of(config: RunConfig | str | None) -> Schema | None:
    """The dataset schema a run config implies: its pattern fields, its labels, its test set."""
    if config is None:
        return None
    config = config if isinstance(config, RunConfig) else load_config(config)
    return Schema.from_config(config.fields, config.labels, config.data.test, config.data.root)


def announce(result: dict) -> Event | None:
    """Emit ``ipet.data.arrived`` for a committed ingest; returns the event (None if Prefect sent none)."""
    name = result["dataset"]
    return emit_event(
        event=EVENT,
        resource={"prefect.resource.id": f"ipet.dataset.{name}", "prefect.resource.name": name},
        payload={key: result[key] for key in ("dataset", "version", "kind", "added", "duplicates", "manifest")},
    )


@flow(name="ingest", log_prints=True)
def ingest(file: str, dataset: str, labeled: bool = False, store: str = "stores",
           config: RunConfig | str | None = None, read: dict[str, Any] | None = None) -> dict:
    """Add ``file`` to ``store/dataset`` as a new version and announce it; see ``data.ingest``.

    ``config`` (a run config or its YAML path) fixes the schema on a dataset's first ingest. A user
    mistake (a bad file, a config that does not load) fails the run with the one line ``ipet ingest``
    prints, without a traceback, and re-raises it to a caller.
    """
    try:
        result = ingest_file(file, dataset, store, labeled, schema_of(config), read or {})
    except (ConfigError, DataError) as err:
        return refused(err)
    print(summary(result))
    if result["committed"]:
        event = announce(result)
        result["event"] = str(event.id) if event else None
    return result


def summary(result: dict) -> str:
    """One line: what the ingest added, what it dropped, which version is current; and a warning where the
    store's rows an earlier reader ingested may not be their files' text (``Version.typed_fields``)."""
    by_origin = ", ".join(f"{n} {o}" for o, n in result["duplicates_by_origin"].items() if n)
    dropped = f"{result['duplicates']} duplicate(s) dropped" + (f" ({by_origin})" if by_origin else "")
    clashes = result.get("label_conflicts") or {"rows": 0}
    if clashes["rows"]:
        dropped += (f", {clashes['rows']} row(s) labeled otherwise than the same text already is, kept as it was: "
                    f"row id(s) {clashes['ids']}{' …' if clashes['rows'] > len(clashes['ids']) else ''}")
    typed = result.get("typed_fields")
    warning = f"\nwarning: {typed_line(**typed)}" if typed else ""
    if not result["committed"]:
        return (f"{result['dataset']}: nothing new in {result['source']['path']}, {dropped}; version "
                f"{result['version']} stays current{warning}")
    return (f"{result['dataset']}: version {result['version']} ({result['kind']}) · {result['added']} row(s) added · "
            f"{dropped} · {result['manifest']}{warning}")
