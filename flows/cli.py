"""``ipet``: run the iPET flow, adapt its backbone, check a config and its data, ingest new data, predict,
suggest a verbalizer."""

from __future__ import annotations

import argparse
import errno
import os
import sys
from pathlib import Path

from . import suggest
from .config import ConfigError, assignment, load_config

EXIT_BUSY = 75  # EX_TEMPFAIL: another run holds the run directory; try again later
WRITE_ERRORS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EACCES, errno.EPERM, errno.EROFS,
                errno.ENOTDIR}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ipet", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    for name, text in (("run", "run the iPET flow"),
                       ("adapt", "MLM-train the backbone on the pool (TAPT); zero-shot accuracy before/after"),
                       ("validate", "check a config and its data, run nothing")):
        p = sub.add_parser(name, help=text)
        p.add_argument("config", help="YAML run configuration")
        p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                       help="override a config field, e.g. --set ipet.generations=2 (repeatable)")
        if name != "validate":
            p.add_argument("--run-dir", help="where outputs go (default runs/<name>); re-use it to resume")
    _ingest_parser(sub)
    _predict_parser(sub)
    suggest.add_parser(sub)
    args = parser.parse_args(argv)
    if args.command in ("ingest", "predict", "suggest"):
        return {"ingest": _ingest, "predict": _predict, "suggest": suggest.command}[args.command](args)

    try:
        config = load_config(args.config, args.set)
    except ConfigError as err:
        print(err, file=sys.stderr)
        return 2
    if args.command == "adapt":
        config = config.for_adaptation()
    from .checks import check_run

    problems, rows = check_run(config)
    if problems:
        print("\n".join(f"{args.config}: {p}" for p in problems), file=sys.stderr)
        return 2
    print(f"{args.config}: ok · labels {list(config.labels)} · rows {rows}")
    if args.command == "validate":
        return 0
    from data.location import location
    from data.lock import RunDirBusy, RunDirUnusable, run_dir_lock
    from tasks.tracking import TrackingError

    run_dir = location(args.run_dir or Path("runs") / config.name)
    try:
        with run_dir_lock(run_dir):  # refuse a busy run dir before starting Prefect; the flow holds it too
            _prefect_defaults()
            return _adapt(config, run_dir) if args.command == "adapt" else _run(config, run_dir)
    except RunDirBusy as err:
        print(f"ipet: {err}", file=sys.stderr)
        return EXIT_BUSY
    except (TrackingError, RunDirUnusable) as err:
        print(f"ipet: {err}", file=sys.stderr)
        return 2
    except OSError as err:
        if err.errno not in WRITE_ERRORS:
            raise
        print(f"ipet: cannot write {err.filename or run_dir}: {err.strerror}; finished outputs are kept, "
              "run again to resume", file=sys.stderr)
        return 1


def _ingest_parser(sub) -> None:
    p = sub.add_parser("ingest", help="add a file to a versioned dataset store; announce it (retraining)")
    p.add_argument("file", help="csv, tsv, jsonl or parquet with the input fields (and 'label' with --labeled)")
    p.add_argument("--dataset", required=True, help="dataset name in the store (letters, digits, . _ -)")
    p.add_argument("--labeled", action="store_true", help="labeled examples: they extend the gold set")
    p.add_argument("--store", default="stores", help="dataset store directory (default: stores)")
    p.add_argument("--config", help="run config giving fields, labels and test set (required on a first ingest)")
    p.add_argument("--read", action="append", default=[], metavar="KEY=VALUE",
                   help="how to read the file, as a data source's fields, e.g. --read header=false "
                        "--read columns=[label,title,description] --read rows=[0,3000]")


def _ingest(args) -> int:
    """The store work runs in this process; only the event needs Prefect, and only a configured server."""
    from data.errors import DataError
    from data.ingest import ingest_file

    from .ingest import schema_of, summary

    try:
        read = dict(assignment(item, "--read", "header=false") for item in args.read)
        result = ingest_file(args.file, args.dataset, args.store, args.labeled, schema_of(args.config), read)
    except (ConfigError, DataError) as err:
        print(err, file=sys.stderr)
        return 2
    print(summary(result))
    if result["committed"]:
        print(_announce(result))
    return 0


def _announce(result: dict) -> str:
    from prefect.settings import PREFECT_API_URL

    if not PREFECT_API_URL.value():
        return "no event sent: no Prefect server is configured (set PREFECT_API_URL to trigger retraining)"
    from prefect.events.worker import EventsWorker

    from .ingest import EVENT, announce

    event = announce(result)
    EventsWorker.drain_all(timeout=30, at_exit=False)  # send it before this process exits
    return f"event {EVENT} sent ({event.id})" if event else f"event {EVENT} not sent (Prefect emits no events here)"


def _prefect_defaults() -> None:
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")  # first start migrates a DB
    os.environ.setdefault("PREFECT_SERVER_LOGGING_LEVEL", "CRITICAL")  # its shutdown noise is not ours to show


def _adapt(config, run_dir: Path) -> int:
    from .adapt import accuracy_table, adapt

    report = adapt(config=config, run_dir=str(run_dir))
    losses = report["losses"]
    print()
    print(accuracy_table(report))
    print(f"\nMLM loss {losses[0]:.4f} -> {losses[-1]:.4f} over {len(losses)} steps"
          f"{' (reused)' if report['reused'] else ''} · MLflow run {report['mlflow_run_id']}")
    print(f"adapted backbone, usable as `model:`: {report['model_dir']}")
    return 0


def _run(config, run_dir: Path) -> int:
    from .ipet import ipet
    from .stages import stage_table

    results = ipet(config=config, run_dir=str(run_dir))
    print()
    print(stage_table(results["stages"]))
    print(f"\nresults: {run_dir / 'results.json'} · MLflow run {results['mlflow_run_id']} · "
          f"trained {results['tasks']['trained']}, reused {results['tasks']['reused']}")
    registry = results.get("registry")
    if registry:
        print(f"model registry: {registry['registered_model']} v{registry['version']} {registry['decision']} "
              f"({registry['reason']})" if "version" in registry else f"model registry: {registry['error']}")
    return 0


def _predict_parser(sub) -> None:
    p = sub.add_parser("predict", help="label a CSV/TSV/JSONL/parquet file with a final model, streamed")
    p.add_argument("--model", required=True, metavar="champion|RUN_DIR|PATH",
                   help="the registry's champion (or models:/NAME@ALIAS, models:/NAME/VERSION), "
                        "a run directory (its final model) or a model directory")
    p.add_argument("--input", required=True, help="rows to label, with the fields the model reads (and `id`)")
    p.add_argument("--output", required=True, help="parquet file to write (replaced only when complete)")
    p.add_argument("--registered-model", help="registry name for --model champion (default: the only one "
                                              "with a champion)")
    p.add_argument("--tracking-uri", help="MLflow store (default: $MLFLOW_TRACKING_URI, else ./mlflow.db)")
    p.add_argument("--batch-size", type=int, default=1024, help="rows read, labeled and written at a time")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, mps")


def _predict(args) -> int:
    """As a Prefect flow when a Prefect server is configured (PREFECT_API_URL: the run shows in
    its UI); otherwise the same function directly, without starting a temporary server."""
    from .predict import PREDICT_ERRORS, predict, predict_file, summary_text

    if args.batch_size < 1:
        print("--batch-size: must be at least 1", file=sys.stderr)
        return 2
    kwargs = dict(model=args.model, input=args.input, output=args.output, registered_model=args.registered_model,
                  tracking_uri=args.tracking_uri, batch_size=args.batch_size, device=args.device)
    try:
        if os.environ.get("PREFECT_API_URL"):
            _prefect_defaults()
            summary = predict(**kwargs)
        else:
            summary = predict_file(**kwargs)
            print(summary_text(summary))
    except PREDICT_ERRORS as err:
        print(f"ipet predict: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
