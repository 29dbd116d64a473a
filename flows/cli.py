"""``ipet``: run the iPET flow, adapt its backbone to the pool, or check a config and its data first."""

from __future__ import annotations

import argparse
import errno
import os
import sys
from pathlib import Path

from .config import ConfigError, load_config

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
    args = parser.parse_args(argv)

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
    run_dir = Path(args.run_dir or Path("runs") / config.name)
    from data.lock import RunDirBusy, run_dir_lock
    from tasks.tracking import TrackingError

    try:
        with run_dir_lock(run_dir):  # refuse a busy run dir before starting Prefect; the flow holds it too
            _prefect_defaults()
            return _adapt(config, run_dir) if args.command == "adapt" else _run(config, run_dir)
    except RunDirBusy as err:
        print(f"ipet: {err}", file=sys.stderr)
        return EXIT_BUSY
    except TrackingError as err:
        print(f"ipet: {err}", file=sys.stderr)
        return 2
    except OSError as err:
        if err.errno not in WRITE_ERRORS:
            raise
        print(f"ipet: cannot write {err.filename or run_dir}: {err.strerror}; finished outputs are kept, "
              "run again to resume", file=sys.stderr)
        return 1


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
    from .run import stage_table

    results = ipet(config=config, run_dir=str(run_dir))
    print()
    print(stage_table(results["stages"]))
    print(f"\nresults: {run_dir / 'results.json'} · MLflow run {results['mlflow_run_id']} · "
          f"trained {results['tasks']['trained']}, reused {results['tasks']['reused']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
