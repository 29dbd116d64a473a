"""ipet: run the iPET flow, adapt its backbone, check a config and its data, ingest new data, predict,
suggest a verbalizer, record a person's answers, free a finished run's disk."""

from __future__ import annotations

import argparse
import contextlib
import errno
import itertools
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Callable, get_args

from data.errors import DataError, nearest
from data.lock import RunDirBusy, RunDirUnusable
from prompt_core.settings import PRECISION_HELP, Precision, known_device
from tasks.store_uri import TrackingError

from . import suggest
from .config import ConfigError, RunConfig, assignments, load_config
from .console import OutputError, say

if TYPE_CHECKING:
    from .checks import Checked

EXIT_BUSY = 75  # EX_TEMPFAIL: another run holds the run directory; try again later
EXIT_PIPE = 141  # 128 + SIGPIPE: what a shell shows for a command whose output pipe closed
EXIT_UNANNOUNCED = 69  # EX_UNAVAILABLE: ingested, but the Prefect server did not answer: no retraining starts
WRITE_ERRORS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EACCES, errno.EPERM, errno.EROFS,
                errno.ENOTDIR}
# what ``run`` and ``adapt`` report in one line ("ipet: <error>"), and so what Prefect's terminal log
# leaves out (``_worded``); a write error (WRITE_ERRORS) too, in its own words. DataError: data that
# changed, or storage unreadable, since the check
WORDED = (RunDirBusy, RunDirUnusable, TrackingError, DataError)
DISTRIBUTION = "ipet-pipeline"  # [project] name in pyproject.toml: whose installed version --version prints


def main(argv: list[str] | None = None) -> int:
    """The exit status of one command. As the ``ipet`` program itself (``argv`` None), the process
    then ends without the native libraries' teardown: Python's exit handlers run and output is
    flushed, but the threads of pyarrow, tokenizers and torch are not raced by C++ destructors, which
    now and then aborted a finished command ("terminate called without an active exception", 134)."""
    from .interrupt import Interrupted, closed_outputs, discard

    try:
        code = _written(argv)
    except (BrokenPipeError, Interrupted) as err:
        # `ipet predict … | head`: the reader left, which is no error to show a traceback of; or a signal
        # (SIGPIPE for that write) whose handler ran only as its command's block ended
        discard(closed_outputs() or [sys.stdout.fileno()])
        code = err.code if isinstance(err, Interrupted) else EXIT_PIPE
    except OSError as err:
        if not _write_error(err):
            raise
        # `ipet validate … > /dev/full`: the commands word their own files' write errors, so this is stdout
        print(f"ipet: cannot write {err.filename or 'standard output'}: {err.strerror}", file=sys.stderr)
        discard([sys.stdout.fileno()])
        code = 1
    if argv is None:
        _leave(code)
    return code


def _written(argv: list[str] | None) -> int:
    """``_command``'s status once its output is written. Standard output into a file or a pipe is
    buffered, so a full disk or a reader that left shows when it is flushed: here, rather than at the
    exit, where it was a traceback and status 120. argparse's ``--help`` and ``--version`` leave theirs
    in the buffer as they exit."""
    try:
        code = _command(argv)
    except SystemExit:
        sys.stdout.flush()
        raise
    sys.stdout.flush()
    return code


def _leave(code: int) -> None:
    import atexit
    import logging

    atexit._run_exitfuncs()
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):  # the command's own output is flushed already (``_written``)
        with contextlib.suppress(OSError):
            stream.flush()
    os._exit(code)


def _command(argv: list[str] | None) -> int:
    parser, commands = parsers()
    _refuse_typos(parser, commands, sys.argv[1:] if argv is None else argv)
    args, extra = parser.parse_known_args(argv)
    if extra:  # argparse's parse_args names them under ipet's usage, not the command's that has too few slots
        commands[args.command].error(f"unrecognized arguments: {' '.join(extra)}")
    if args.command in ("ingest", "predict", "answer", "gc", "suggest"):
        return {"ingest": _ingest, "predict": _predict, "answer": _answer, "gc": _gc,
                "suggest": suggest.command}[args.command](args)

    if args.command == "validate":
        return _configured(args)
    from .interrupt import stop_on_signals

    # from the start: Prefect's import and its server's start take seconds, which a Ctrl-C must not
    # turn into a traceback (nor a SIGTERM into a silent death); _locked's own handler takes over later
    with stop_on_signals(f"ipet {args.command}", _no_op):
        return _configured(args)


def parsers() -> tuple[argparse.ArgumentParser, dict[str, argparse.ArgumentParser]]:
    """``ipet``'s parser, and each command's by name."""
    parser = _Parser(prog="ipet", description=__doc__)
    parser.add_argument("--version", action=_Version)
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
            shown = p.add_mutually_exclusive_group()
            shown.add_argument("--verbose", action="store_const", const="verbose", dest="verbosity",
                               default="normal", help="also Prefect's state line of every task, MLflow's bars, "
                                                      "and the traceback of an error ipet words in one line")
            shown.add_argument("--quiet", action="store_const", const="quiet", dest="verbosity",
                               help="only warnings, errors and the final table")
    _ingest_parser(sub)
    _predict_parser(sub)
    answer = sub.add_parser("answer", help="record a person's answers (a filled-in RUN_DIR/ask/<stage>.csv); "
                                           "then run again to continue")
    answer.add_argument("run_dir", help="the run directory that stopped to ask")
    answer.add_argument("file", help="the sheet with its label column filled in (empty or 'skip': no answer)")
    gc = sub.add_parser("gc", help="remove model weights a finished run's final model does not need")
    gc.add_argument("run_dir", help="a finished run's directory")
    gc.add_argument("--keep", choices=("final", "last-generation", "all"), default="final",
                    help="what to keep besides the final model (default: only it); a rerun retrains the rest")
    suggest.add_parser(sub)
    return parser, sub.choices


class _Parser(argparse.ArgumentParser):
    """argparse's parser (each command's too: subparsers are of their parent's class), whose help is
    written as any output is: argparse ignores a failed write of it (``ipet --help > /dev/full`` said
    nothing and exited 0), which ``main`` says as for any command."""

    def print_help(self, file=None) -> None:
        (file or sys.stdout).write(self.format_help())


class _Version(argparse.Action):
    """``--version``: one line, the installed version, exit 0. Looked up only when asked (the package
    metadata is a scan of site-packages, which every other command would pay for)."""

    def __init__(self, option_strings: list[str], dest: str, **_: object) -> None:
        super().__init__(option_strings, dest=argparse.SUPPRESS, default=argparse.SUPPRESS, nargs=0,
                         help="print the installed version and exit")

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: object,
                 option_string: str | None = None) -> None:
        from importlib.metadata import PackageNotFoundError, version

        try:
            print(f"{DISTRIBUTION} {version(DISTRIBUTION)}")
        except PackageNotFoundError:  # run from a checkout that was never pip-installed
            print(f"{DISTRIBUTION}: no version, as it is not installed (pip install -e .)")
        parser.exit()


def _refuse_typos(parser: argparse.ArgumentParser, commands: dict[str, argparse.ArgumentParser],
                  argv: list[str]) -> None:
    """A mistyped command or option, refused (exit 2) with the nearest real one. argparse names neither,
    and an unknown option it names only after any required one it then seems to lack (``--outptu o`` gave
    "the following arguments are required: --output"), under ``ipet``'s usage instead of the command's."""
    words = list(itertools.takewhile(lambda word: word != "--", argv))
    command = next((word for word in words if not word.startswith("-")), None)
    # ipet's own options take no value: any word before the command that starts with '-' is one
    _refuse_unknown_options(parser, words[:words.index(command)] if command else words, "-")
    if command is None:
        return
    if command not in commands:
        parser.error(f"unknown command {command!r}{_nearest(command, commands)} (commands: {', '.join(commands)})")
    # a command's options may take values such as -1: only a word with two dashes is surely an option
    _refuse_unknown_options(commands[command], words[words.index(command) + 1:], "--")


def _refuse_unknown_options(parser: argparse.ArgumentParser, words: list[str], dashes: str) -> None:
    """The first of ``words`` that starts with ``dashes`` and is no option of ``parser`` (nor a prefix
    of one: argparse's abbreviation), refused with the nearest real one."""
    options = [o for action in parser._actions for o in action.option_strings if o.startswith(dashes)]
    for word in words:
        option = word.split("=", 1)[0]
        if option.startswith(dashes) and not any(o.startswith(option) for o in options):
            parser.error(f"unknown option {option}{_nearest(option, options)}")


def _nearest(word: str, choices) -> str:
    match = nearest(word, choices)
    return f"; did you mean {match}?" if match else ""


def _configured(args) -> int:
    """``validate``, ``run`` or ``adapt`` with its config loaded; exit 2 with the config's problems."""
    try:
        config = load_config(args.config, args.set)
    except ConfigError as err:
        print(err, file=sys.stderr)
        return 2
    if args.command == "validate":
        return 0 if _checked(args.config, config) is not None else 2
    if args.command == "adapt":
        from .adapt import for_adapt

        config = for_adapt(config)
    return _run_command(args, config)


def _checked(path: str, config: RunConfig, quiet: bool = False, adapting: bool = False,
             run_dir: str | None = None) -> Checked | None:
    """What the checks found (the config with its stores pinned to the versions checked, the warnings),
    after printing it; None after printing every problem of the config and its data on its own line.
    ``run_dir``: the run's, where the data the checks read is left for its flow (``check_run``)."""
    from .checks import check_run

    checked = check_run(config, adapting, run_dir)
    if checked.problems:
        print("\n".join(f"{path}: {p}" for p in checked.problems), file=sys.stderr)
        return None
    if not quiet:
        say(f"{path}: ok · labels {list(config.labels)} · rows {checked.rows}")
    for warning in checked.warnings:
        say(f"{path}: warning: {warning}")
    return checked


def _run_command(args, config) -> int:
    """``run`` and ``adapt``: the run directory's lock first (a busy one is refused at once), then the
    checks while the temporary Prefect server starts, then the flow; Ctrl-C and SIGTERM stop it."""
    from data.location import location
    from data.lock import run_dir_lock

    from .interrupt import Interrupted

    run_dir = location(args.run_dir or Path("runs") / config.name)
    # refused or stopped before any work: leave no run directory behind that holds only its lock
    forget = (lambda: _forget(run_dir)) if isinstance(run_dir, Path) and not run_dir.exists() else _no_op
    try:
        with run_dir_lock(run_dir):  # the flow holds it too (deployments call the flow directly)
            code = _locked(args, config, run_dir, forget)
    except (Interrupted, OutputError):  # a signal while Prefect was imported, before _locked's handler (which
        forget()  # forgets itself); standard output failed (main says so), maybe before anything was written
        raise
    except WORDED as err:
        code = _refused(f"ipet: {err}", EXIT_BUSY if isinstance(err, RunDirBusy) else 2)
    except OSError as err:
        if not _write_error(err):
            raise
        print(f"ipet: cannot write {err.filename or run_dir}: {err.strerror}; finished outputs are kept, "
              "run again to resume", file=sys.stderr)
        return 1
    if code == 2:
        forget()
    return code


def _forget(run_dir: Path) -> None:
    """Remove ``run_dir`` if it holds nothing but its lock file: this command created it and stopped before
    writing anything, so it is no run directory (``ipet predict`` and ``gc`` would call it one unfinished)."""
    from data.lock import LOCK_FILE

    with contextlib.suppress(OSError):
        if os.listdir(run_dir) == [LOCK_FILE]:
            (run_dir / LOCK_FILE).unlink()
            run_dir.rmdir()


def _locked(args, config, run_dir: Path, forget: Callable[[], None]) -> int:
    """With the run directory held: check, start the server meanwhile, run; signals stop it (and
    ``forget`` the run directory: remove it if this command made it and wrote nothing there yet)."""
    _prefect_defaults()
    from . import console

    console.configure(args.verbosity)
    from .asking import pinned_config
    from .interrupt import stop_on_signals
    from .server import ServerError, prefect_api

    try:
        with prefect_api() as server, \
                stop_on_signals(f"ipet {args.command}", lambda: (server and server.stop(), forget())):
            # the stores at the versions a question was asked with (before the check pins them to the newest)
            checked = _checked(args.config, pinned_config(config, str(run_dir)), quiet=args.verbosity == "quiet",
                               adapting=args.command == "adapt", run_dir=str(run_dir))
            if checked is None:
                return 2
            if server:
                server.ready()
            console.hide_repeats(args.verbosity, _worded, checked.warnings)
            config = checked.config
            return _adapt(config, run_dir) if args.command == "adapt" else _run(config, run_dir)
    except ServerError as err:
        print(f"ipet: {err}", file=sys.stderr)
        return 1


def _worded(err: BaseException) -> bool:
    """The errors of a flow that ``_run_command`` reports in one line: Prefect's traceback of them is
    not shown on the terminal (``--verbose`` shows it)."""
    return isinstance(err, WORDED) or _write_error(err)


def _write_error(err: BaseException) -> bool:
    """A write that failed for a reason the user can fix (disk full, no permission, a file in the way)."""
    return isinstance(err, OSError) and err.errno in WRITE_ERRORS


def _no_op() -> None:
    """Nothing to stop: the Prefect server is the configured one."""


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
    from data.ingest import ingest_file

    from .ingest import schema_of, summary

    try:
        read = dict(assignments(args.read, "--read", "header=false"))
        result = ingest_file(args.file, args.dataset, args.store, args.labeled, schema_of(args.config), read)
    except (ConfigError, DataError) as err:
        print(err, file=sys.stderr)
        return 2
    print(summary(result))
    return _announce(result) if result["committed"] else 0


def _announce(result: dict) -> int:
    """The event for a committed version, sent to the configured server. A server that does not answer
    is said (Prefect would drop the event with a log line): ingesting the file again adds nothing, so
    the user must send it by hand for the retraining to start."""
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL

    from .ingest import EVENT, announce

    url = PREFECT_API_URL.value()
    if not url:
        print("no event sent: no Prefect server is configured (set PREFECT_API_URL to trigger retraining)")
        return 0
    with get_client(sync_client=True) as client:
        down = client.api_healthcheck()
    if down is not None:
        return _refused(f"ipet ingest: event {EVENT} not sent: the Prefect server at {url} does not answer "
                        f"({type(down).__name__}: {down}); version {result['version']} is committed, and ingesting "
                        f"the file again adds nothing: once the server is up, `prefect event emit {EVENT} "
                        f"--resource-id ipet.dataset.{result['dataset']}` starts the retraining", EXIT_UNANNOUNCED)
    from prefect.events.worker import EventsWorker

    event = announce(result)
    EventsWorker.drain_all(timeout=30, at_exit=False)  # send it before this process exits
    print(f"event {EVENT} sent ({event.id})" if event else f"event {EVENT} not sent (Prefect emits no events here)")
    return 0


def _gc(args) -> int:
    from data.lock import run_dir_lock

    from .gc import collect
    from .prediction import run_stages

    try:
        run_stages(args.run_dir)  # no run's results.json: refused before the lock creates anything
        with run_dir_lock(args.run_dir) as run_dir:
            print(collect(Path(run_dir), args.keep))
    except RunDirBusy as err:
        return _refused(f"ipet: {err}", EXIT_BUSY)
    except DataError as err:
        return _refused(f"ipet gc: {err}", 2)
    return 0


def _refused(message: str, code: int) -> int:
    """One line on stderr, and the exit status it goes with."""
    print(message, file=sys.stderr)
    return code


def _prefect_defaults() -> None:
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")  # first start migrates a DB
    os.environ.setdefault("PREFECT_SERVER_LOGGING_LEVEL", "CRITICAL")  # its shutdown noise is not ours to show


def _adapt(config, run_dir: Path) -> int:
    from .adapt import accuracy_table, adapt

    report = adapt(config=config, run_dir=str(run_dir))
    losses = report["losses"]
    say()
    say(accuracy_table(report))
    say(f"\nMLM loss {losses[0]:.4f} -> {losses[-1]:.4f} over {len(losses)} steps"
        f"{' (reused)' if report['reused'] else ''} · MLflow run {report['mlflow_run_id']}")
    say(f"adapted backbone, usable as `model:`: {report['model_dir']}")
    return 0


def _run(config, run_dir: Path) -> int:
    from .gc import not_reused
    from .ipet import ipet
    from .stages import ask_line, stage_table

    results = ipet(config=config, run_dir=str(run_dir))
    if "asked" in results:  # no deployment to suspend: the person answers in a file, then reruns
        from .asking import stopped

        say(f"\nipet: {stopped(results['asked'], str(run_dir))}")
        return 0
    say()
    say(stage_table(results["stages"]))
    tasks = results["tasks"]
    backbone = (f" · adapted backbone {'reused' if tasks['backbone_reused'] else 'trained'}"
                if "backbone_reused" in tasks else "")
    asked = f" · {ask_line(results['ask'])}" if "ask" in results else ""
    say(f"\nresults: {run_dir / 'results.json'} · MLflow run {results['mlflow_run_id']} · "
        f"trained {tasks['trained']}, reused {tasks['reused']}{backbone}{asked}")
    if unused := not_reused(run_dir, results["stages"]):
        say(unused)
    registry = results.get("registry")
    if registry:
        say(f"model registry: {registry['registered_model']} v{registry['version']} {registry['decision']} "
            f"({registry['reason']})" if "version" in registry else f"model registry: {registry['error']}")
    return 0


def _answer(args) -> int:
    """Check the sheet against the open question, record it (and add it to the ask's store)."""
    from data.answers import answers_path, apply_answers, read_sheet
    from data.location import location
    from data.lock import run_dir_lock

    run_dir = str(location(args.run_dir))
    try:
        request, answers, recorded = read_sheet(args.file, run_dir)  # a question there: the run dir exists
        if recorded is not None:  # the same answers again (read_sheet refuses others)
            print(f"{run_dir}: these answers to the question after {request['stage']} were recorded already "
                  f"({answers_path(run_dir, request, 'csv')}); nothing changed; run it again to continue")
            return 0
        with run_dir_lock(run_dir):  # a run starting meanwhile would remove the answers' temporaries
            record = apply_answers(request, answers, run_dir, _user())
    except RunDirBusy as err:
        return _refused(f"ipet: {err}", EXIT_BUSY)
    except DataError as err:
        return _refused(f"ipet answer: {err}", 2)
    store = record["store"]
    added = (f" · dataset {store['dataset']} version {store['version']} ({store['added']} added)"
             if store and store["committed"] else "")
    print(f"{run_dir}: {len(record['rows'])} of {record['asked']} rows answered after {record['stage']}{added}; "
          "run it again to continue")
    return 0


def _user() -> str | None:
    """Who answers (the login name), for the answers' record; None where the system cannot say."""
    import getpass

    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no login name variable and no passwd entry for the uid
        return None


def _predict_parser(sub) -> None:
    p = sub.add_parser("predict", help="label a CSV/TSV/JSONL/parquet file with a final model, streamed")
    p.add_argument("--model", required=True, metavar="champion|RUN_DIR|PATH",
                   help="the registry's champion (or models:/NAME@ALIAS, models:/NAME/VERSION, models:/NAME/latest, "
                        "models:/m-ID), a run directory (its final model) or a model directory")
    p.add_argument("--input", required=True, help="rows to label, with the fields the model reads (and `id`)")
    p.add_argument("--output", required=True, help="parquet file to write (replaced only when complete)")
    p.add_argument("--registered-model", help="registry name for --model champion (default: the only one "
                                              "with a champion)")
    p.add_argument("--tracking-uri", help="MLflow store (default: $MLFLOW_TRACKING_URI, else ./mlflow.db)")
    p.add_argument("--batch-size", type=int, default=1024, metavar="N",
                   help="rows read, labeled and written at a time (default: %(default)s)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1 (default: %(default)s)")
    p.add_argument("--precision", default="auto", choices=get_args(Precision),
                   help=f"{PRECISION_HELP} (default: %(default)s)")


def _predict(args) -> int:
    """As a Prefect flow when a Prefect server is configured (PREFECT_API_URL: the run shows in
    its UI); otherwise the same function directly, without starting a temporary server. The
    options are checked before torch and the model load (seconds)."""
    problem = _predict_problem(args)
    if problem:
        print(f"ipet predict: {problem}", file=sys.stderr)
        return 2
    from data.outputs import earlier_temps

    from .interrupt import stop_on_signals
    from .prediction import PREDICT_ERRORS

    if left := earlier_temps(args.output):  # never removed for it: maybe an earlier ipet predict still writing
        them = "it" if len(left) == 1 else "them"
        print(f"ipet predict: warning: {', '.join(p.name for p in left)} beside {args.output}: left by an ipet "
              f"predict from before 2026-12-05, killed or still writing it; remove {them} once none is running",
              file=sys.stderr)
    kwargs = dict(model=args.model, input=args.input, output=args.output, registered_model=args.registered_model,
                  tracking_uri=args.tracking_uri, batch_size=args.batch_size, device=args.device,
                  precision=args.precision)
    # the output's temporary is removed as the interrupt unwinds; unhandled, SIGTERM left it behind
    stopped = f"{args.output} was not written (a previous file there is as it was)"
    try:
        with stop_on_signals("ipet predict", _no_op, stopped):
            return _predicted(kwargs)
    except PREDICT_ERRORS as err:
        print(f"ipet predict: {err}", file=sys.stderr)
        return 2


def _predicted(kwargs: dict) -> int:
    """The prediction, as a flow or directly (``_predict``); its summary printed."""
    from .prediction import predict_file, summary_text

    if os.environ.get("PREFECT_API_URL"):
        _prefect_defaults()
        from .predict import predict

        predict(**kwargs)
    else:
        print(summary_text(predict_file(**kwargs)))
    return 0


def _predict_problem(args) -> str | None:
    """The mistakes ``ipet predict`` can name without loading anything: the batch size, the device, the
    output path, a missing local input, a malformed ``models:/`` URI, a registry model without a local store."""
    from data.location import is_url
    from data.outputs import check_output_file
    from data.sources import not_a_file
    from tasks.store_uri import RegistryError, in_store, missing_store, named, resolve_uri

    if args.batch_size < 1:
        return "--batch-size: must be at least 1"
    try:  # else a traceback once the model has loaded, where the first batch picks its device
        known_device(args.device)
    except ValueError as err:
        return f"--device: {err}"
    try:
        check_output_file(args.output, args.input)
    except DataError as err:
        return f"--output {err}"
    if not is_url(args.input) and not Path(args.input).is_file():
        return f"--input {args.input}: {not_a_file(Path(args.input))}"
    if in_store(args.model):
        try:
            named(args.model, args.registered_model)
        except RegistryError as err:
            return str(err)
        return missing_store(resolve_uri(args.tracking_uri))
    return None


if __name__ == "__main__":
    sys.exit(main())
