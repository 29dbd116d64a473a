"""``ipet validate``: a bad config or bad data gives one line per problem, naming the field, file
or row, and exit status 2; a good one says what it found."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from flows.cli import main
from tiny import save_tiny, toy_run_config


@pytest.fixture(scope="module")
def toy(tmp_path_factory: pytest.TempPathFactory) -> dict:
    return toy_run_config(tmp_path_factory.mktemp("cli-toy"))


def validate(config: dict, tmp_path: Path, *overrides: str) -> int:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return main(["validate", str(path), *[a for o in overrides for a in ("--set", o)]])


def test_good_config_is_ok(toy: dict, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert validate(toy, tmp_path) == 0
    out = capsys.readouterr().out
    assert "ok" in out and "'labeled': 8" in out and "'pool': 200" in out and "'test': 40" in out


@pytest.mark.parametrize(("overrides", "expected"), [
    (["colour=blue"], ["colour: Extra inputs are not permitted"]),
    (["ipet.generation=3"], ["ipet.generation: Extra inputs are not permitted; did you mean ipet.generations?"]),
    (["pvps=[{pattern: '{text} {mask}', verbaliser: {neg: bad, pos: good}}]"], ["did you mean pvps.0.verbalizer?"]),
    (["final.train={learnig_rate: 1e-4}"], ["final.train: unknown setting(s) ['learnig_rate']",
                                            "did you mean learning_rate?"]),
    (["pvps=[{pattern: '{text} {mask} {mask}'}]"], ["pvps.0.pattern", "exactly one {mask}"]),
    (["pvps=[{pattern: '{text} no mask here'}]"], ["pvps.0.pattern", "exactly one {mask}"]),
    (["pvps=[{pattern: '{review} it was {mask} .'}, {pattern: '{mask} : {text}'}]"],
     ["train.csv", "missing column(s) ['review']"]),
    (["verbalizer={neg: bad, meh: fine}"], ["train.csv", "label(s) ['pos'] not in the verbalizer"]),
    (["verbalizer={neg: bad}"], ["verbalizer: one label ['neg']; a classifier chooses between labels"]),
    (["verbalizer={}"], ["verbalizer is empty"]),
    (["learner=classifier", "data.labeled_per_class=0"], ["learner: classifier needs labeled examples"]),
    (["verbalizer={neg: bad, pos: goods}"], ["verbalizer: label word 'goods'", "2 tokens"]),
    (["data.labeled_per_class=500"], ["label 'neg' has", "fewer than labeled_per_class=500"]),
    (["ipet.growth=10"], ["ipet.growth/ipet.generations", "but the pool has 200"]),
    (["data.labeled_per_class=0", "ipet.zero_shot_per_class=100"],
     ["ipet.growth/ipet.generations/ipet.zero_shot_per_class", "zero_shot_per_class (now 100)", "pool has 200"]),
    (["model=/nonexistent/model"], ["model: '/nonexistent/model' does not exist"]),
    (["train.device=tpu"], ["train.device", "unknown device 'tpu'"]),
    (["data.test.path=missing.csv"], ["missing.csv: file not found"]),
    (["ipet.generations=1", "seeds=[1]", "pvps=[{pattern: '{text} it was {mask} .'}]"],
     ["iPET needs at least two models"]),
    (["runner.kind=cloud"], ["runner.kind: Input should be 'local' or 'ray'"]),
    (["labeling.batch_size=big"], ["labeling.batch_size", "'auto'"]),
    (["pvps.1.pattern='{text} was'"], ["pvps.1.pattern: pattern '{text} was' must contain exactly one {mask}"]),
    # it said "data.: Extra inputs are not permitted"
    (["data..root=x"], ["--set data..root: a setting without a name between its dots; write section.setting"]),
], ids=["unknown-key", "typo-in-a-section", "typo-in-a-list-item", "typo-in-stage-overrides",
        "two-masks", "no-mask", "slot-not-in-data", "label-not-in-verbalizer", "one-label-verbalizer",
        "empty-verbalizer",
        "classifier-without-labels",
        "multi-token-word", "k-too-large", "growth-exceeds-pool", "zero-shot-base-exceeds-pool",
        "model-missing", "unknown-device", "missing-file",
        "no-peers", "unknown-runner", "bad-batch-size", "set-a-list-item", "set-a-nameless-setting"])
def test_bad_config_names_the_problem(toy: dict, tmp_path: Path, capsys: pytest.CaptureFixture,
                                      overrides: list[str], expected: list[str]) -> None:
    assert validate(toy, tmp_path, *overrides) == 2
    err = capsys.readouterr().err
    for text in expected:
        assert text in err, err
    assert "Traceback" not in err


def test_cloze_on_a_checkpoint_without_an_mlm_head_is_warned_of_and_needs_labels(
        toy: dict, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    headless = save_tiny("bert", tmp_path / "headless", headless=True)
    assert validate(toy, tmp_path, f"model={headless}") == 0
    out = capsys.readouterr().out
    assert f"warning: model: {headless} has no pretrained MLM head" in out and "no zero-shot stage" in out
    assert validate(toy, tmp_path) == 0 and "warning" not in capsys.readouterr().out  # the toy BERT has its head
    assert validate(toy, tmp_path, f"model={headless}", "train.prior_weight=1") == 2
    assert "train.prior_weight: no prior to keep: " in capsys.readouterr().err
    assert validate(toy, tmp_path, f"model={headless}", "data.labeled_per_class=0", "ipet.generations=1",
                    "ipet.zero_shot_per_class=10") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"{tmp_path / 'config.yaml'}: learner: cloze needs labeled examples here: {headless} has no "
                   "pretrained MLM head, so the cloze learner's head starts random; give labeled data, adapt the "
                   "backbone first (adapt:), or use learner: similarity"], err


def test_a_sample_size_above_the_data_is_warned_of(toy: dict, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """pool_size and test_size above what the data holds take all of it: a warning names the setting, what
    was asked and what there is, in validate and at a run's start (--quiet too: _checked with quiet)."""
    from flows.cli import _checked
    from flows.config import load_config

    assert validate(toy, tmp_path, "data.pool_size=10000", "data.test_size=500") == 0
    out = capsys.readouterr().out
    assert "'pool': 232" in out and "'test': 40" in out
    assert (f"{tmp_path / 'config.yaml'}: warning: data.pool_size: 10000 rows asked for, but train.csv leaves only "
            "232 rows for the pool after the labeled draw; the run uses all 232") in out, out
    assert "warning: data.test_size: 500 rows asked for, but test.csv has only 40; the run uses all 40" in out
    assert validate(toy, tmp_path, "data.test_size=40") == 0 and "warning" not in capsys.readouterr().out
    config = load_config(tmp_path / "config.yaml", ["data.pool_size=10000"])
    assert _checked("c.yaml", config, quiet=True) is not None
    assert capsys.readouterr().out.splitlines() == ["c.yaml: warning: data.pool_size: 10000 rows asked for, but "
                                                    "train.csv leaves only 232 rows for the pool after the labeled "
                                                    "draw; the run uses all 232"]


def test_bad_rows_are_named(toy: dict, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    lines = (Path(toy["data"]["root"]) / "train.csv").read_text().splitlines()
    lines[3] = '"   ",pos'          # a blank text: data row 3
    lines[5] = 'a fine film,meh'    # an unknown label: data row 5
    (tmp_path / "bad.csv").write_text("\n".join(lines) + "\n")
    bad = {**toy, "data": {**toy["data"], "train": {"path": str(tmp_path / "bad.csv")}}}
    assert validate(bad, tmp_path) == 2
    err = capsys.readouterr().err
    assert "bad.csv: empty text in every input field ['text'] at row id(s) ['3']" in err
    assert "bad.csv: label(s) ['meh'] not in the verbalizer" in err and "['5']" in err


def test_unreadable_file_is_reported(toy: dict, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    (tmp_path / "latin1.csv").write_bytes("text,label\ncaf\xe9 great,pos\n".encode("latin-1"))
    bad = {**toy, "data": {**toy["data"], "train": {"path": str(tmp_path / "latin1.csv")}}}
    assert validate(bad, tmp_path) == 2
    err = capsys.readouterr().err
    assert "latin1.csv: line 2: not UTF-8 text" in err and "Traceback" not in err


def test_ragged_row_is_reported_with_its_line(toy: dict, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    lines = (Path(toy["data"]["root"]) / "train.csv").read_text().splitlines()
    lines[7] = "a film, it was great,pos"  # an unquoted comma: three columns
    (tmp_path / "ragged.csv").write_text("\n".join(lines) + "\n")
    bad = {**toy, "data": {**toy["data"], "train": {"path": str(tmp_path / "ragged.csv")}}}
    assert validate(bad, tmp_path) == 2
    err = capsys.readouterr().err
    assert "ragged.csv: 1 malformed row(s)" in err and "line 8 has 3 columns, expected 2" in err


def test_test_rows_in_the_training_data_are_reported_and_leave_the_pool(toy: dict, tmp_path: Path,
                                                                        capsys: pytest.CaptureFixture) -> None:
    from data.prepare import DataConfig, load_sets

    root = Path(toy["data"]["root"])
    train = (root / "train.csv").read_text().splitlines()
    test = (root / "test.csv").read_text().splitlines()
    (tmp_path / "leaky-test.csv").write_text("\n".join(test + [f"  {train[5]}", train[9], train[9]]) + "\n")
    leaky = {**toy, "data": {**toy["data"], "test": {"path": str(tmp_path / "leaky-test.csv")}, "pool_size": None}}
    assert validate(leaky, tmp_path) == 0
    out = capsys.readouterr().out
    assert f"{tmp_path / 'leaky-test.csv'}: 3 test row(s) also in the unlabeled pool (leak), row id(s) " \
           "['41', '42', '43']; their 2 pool row(s) were dropped" in out, out
    sets, leaks = load_sets(DataConfig.model_validate(leaky["data"]), ("text",), ("neg", "pos"))
    assert leaks.in_pool == ["41", "42", "43"] and sets["pool"].num_rows == 240 - 8 - 2
    assert not {train[5].rsplit(",", 1)[0], train[9].rsplit(",", 1)[0]} & set(sets["pool"]["text"].to_pylist())


@pytest.mark.parametrize(("argv", "expected"), [
    (["rnu", "c.yaml"], ["ipet: error: unknown command 'rnu'; did you mean run? (commands: run, adapt, validate,"]),
    (["run", "c.yaml", "--run_dir", "x"], ["usage: ipet run ", "ipet run: error: unknown option --run_dir; did you "
                                                                "mean --run-dir?"]),
    (["run", "c.yaml", "--RUN_DIR", "x"], ["ipet run: error: unknown option --RUN_DIR; did you mean --run-dir?"]),
    (["validate", "c.yaml", "--sett", "a=1"], ["ipet validate: error: unknown option --sett; did you mean --set?"]),
    # argparse said only "the following arguments are required: --output"
    (["predict", "--model", "m", "--input", "i.csv", "--outptu", "o.parquet"],
     ["ipet predict: error: unknown option --outptu; did you mean --output?"]),
    (["gc", "--keep=al", "x"], ["argument --keep: invalid choice: 'al'"]),  # argparse's own, for a value
    # argparse said "the following arguments are required: command"
    (["--verison"], ["usage: ipet [-h]", "ipet: error: unknown option --verison; did you mean --version?"]),
    # argparse said it under ipet's usage, which has no CONFIG
    (["validate", "c.yaml", "d.yaml"], ["usage: ipet validate ",
                                        "ipet validate: error: unrecognized arguments: d.yaml"]),
], ids=["command", "option", "option-in-capitals", "option-of-validate", "option-beside-a-required-one", "value", "option-of-ipet",
        "one-argument-too-many"])
def test_a_mistyped_command_or_option_names_the_nearest(argv: list[str], expected: list[str],
                                                         capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and all(text in err for text in expected), err


@pytest.mark.parametrize(("text", "expected"), [
    ("", "the config file is empty (or only comments); examples/agnews.yaml is one to start from"),
    ("# name: toy\n", "the config file is empty (or only comments); examples/agnews.yaml is one to start from"),
    ("name: toy\nipet:\n\tgenerations: 2\n", "not valid YAML: line 3, column 1: found character '\\t' that cannot "
                                            "start any token; indent with spaces: YAML forbids tabs there"),
    ("name: toy\nseeds: [1, 2\n", "not valid YAML: line 3, column 1: expected ',' or ']', but got '<stream end>' "
                                 "(while parsing a flow sequence on line 2)"),
], ids=["empty", "only-comments", "tab-indented", "unclosed-bracket"])
def test_an_empty_or_broken_config_file_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture, text: str,
                                                    expected: str) -> None:
    """An empty file named each required setting missing (three lines); PyYAML's error spanned lines,
    called the file "<unicode string>" and never said that a tab indents the line."""
    path = tmp_path / "c.yaml"
    path.write_text(text)
    assert main(["validate", str(path)]) == 2
    assert capsys.readouterr().err == f"{path}: {expected}\n"


def test_a_key_given_twice_on_the_command_line_is_refused_before_anything_is_written(
        toy: dict, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """``--set k=1 --set k=2`` let the last win without a word (a config's key set twice is refused);
    ``--read`` of ``ipet ingest`` the same. One line naming the key, exit 2, no run directory, no store."""
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(toy))
    run_dir, store = tmp_path / "run", tmp_path / "store"
    assert main(["run", str(path), "--run-dir", str(run_dir), "--set", "ipet.generations=1", "--set", "seeds=[1]",
                 "--set", "ipet.generations=2"]) == 2
    assert capsys.readouterr().err == ("--set ipet.generations: given twice ('ipet.generations=1', then "
                                       "'ipet.generations=2'), and the last would silently replace the first; "
                                       "keep one\n")
    assert main(["ingest", str(Path(toy["data"]["root"]) / "train.csv"), "--dataset", "d", "--store", str(store),
                 "--config", str(path), "--read", "rows=[0,10]", "--read", "rows=[0,20]"]) == 2
    assert capsys.readouterr().err.startswith("--read rows: given twice ('rows=[0,10]', then 'rows=[0,20]')")
    assert not run_dir.exists() and not store.exists()


def test_a_run_reads_its_sources_once_and_a_flow_alone_reads_them_itself(
        prefect_harness, toy: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``ipet run`` of a new data key read every source twice: in its checks, then again in the flow's data
    step (19 s more at a million JSONL rows, bench/RESULTS.md). The checks write the sets they read into the run
    directory, under the key the flow finds them by. A run its checks refuse writes nothing there; the flow
    called alone (a deployment's, no checks) prepares the same sets itself (``prepare``, its data step)."""
    import data.prepare
    from flows.config import RunConfig

    reads: list[str] = []
    read_source = data.prepare.read_source

    def counted(source, *args, **kwargs):
        reads.append(source.name)
        return read_source(source, *args, **kwargs)

    monkeypatch.setattr(data.prepare, "read_source", counted)
    config = {**toy, "ipet": {"generations": 0}, "final": {"mode": "ensemble"},
              "train": {**toy["train"], "max_steps": 1}}
    path, run_dir = tmp_path / "config.yaml", tmp_path / "run"
    path.write_text(yaml.safe_dump(config))
    assert main(["run", str(path), "--run-dir", str(run_dir), "--set", "model=/nonexistent/model"]) == 2
    assert not run_dir.exists(), "a refused run leaves no prepared data behind"
    reads.clear()
    assert main(["run", str(path), "--run-dir", str(run_dir)]) == 0  # not --quiet: it sets the process's
    # PREFECT_LOGGING_LEVEL and MLFLOW_LOGGING_LEVEL, which the tests after this one would inherit
    assert sorted(reads) == ["test.csv", "train.csv"]
    reads.clear()
    checked = RunConfig.model_validate(config)
    data.prepare.prepare(checked.data, checked.fields, checked.labels, tmp_path / "flow")
    assert sorted(reads) == ["test.csv", "train.csv"]
    prepared = {p.relative_to(run_dir) for p in run_dir.glob("data*/*")}
    assert len(prepared) == 4 and prepared == {p.relative_to(tmp_path / "flow") for p in (tmp_path / "flow").glob(
        "data*/*")}, "the checks wrote the sets the flow would: same key, same bytes"


def test_version_is_one_line_of_the_installed_distribution(capsys: pytest.CaptureFixture) -> None:
    """``ipet --version`` prints the version pip installed of the distribution pyproject.toml names, one
    line, exit 0 (there was no --version: argparse asked for a command)."""
    import tomllib
    from importlib.metadata import version

    from flows.cli import DISTRIBUTION

    pyproject = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())
    assert DISTRIBUTION == pyproject["project"]["name"]
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    out, err = capsys.readouterr()
    assert exit_.value.code == 0 and out == f"ipet-pipeline {version(DISTRIBUTION)}\n" and err == "", (out, err)


def test_an_abbreviated_option_is_still_argparses_and_the_readme_names_real_options() -> None:
    """Every ``--option`` the README's command table and the help's defaults name is one the command has
    (a prefix such as --run for --run-dir stays accepted: argparse's abbreviation)."""
    import re

    from flows.cli import _refuse_typos, parsers

    parser, commands = parsers()
    _refuse_typos(parser, commands, ["run", "c.yaml", "--run", "x", "--", "--not-an-option"])
    table = [line for line in (Path(__file__).resolve().parents[1] / "README.md").read_text().splitlines()
             if line.startswith("| `ipet ")]
    assert {line.split()[2] for line in table} == set(commands)
    for line in table:
        usage = line.split("`")[1]
        options = {o for action in commands[usage.split()[1]]._actions for o in action.option_strings}
        assert set(re.findall(r"--[a-z-]+", usage)) <= options, usage
    shown = commands["predict"].format_help() + commands["suggest"].format_help()
    for default in ("(default: 1024)", "(default: auto)", "(default: 3)", "(default: 400)"):
        assert default in " ".join(shown.split()), default


def heavy_imports(*modules: str) -> list[str]:
    """Which of torch, transformers and peft importing ``modules`` imports, in a fresh interpreter."""
    code = (f"import sys, {', '.join(modules)}; "
            "print(sorted(m for m in ('torch', 'transformers', 'peft') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=Path(__file__).resolve().parent.parent)
    assert done.returncode == 0, done.stderr
    return ast.literal_eval(done.stdout.strip().splitlines()[-1])


def test_reading_a_config_imports_no_torch() -> None:
    """``ipet ingest`` and ``ipet --help`` read configs only: they must not pay torch's and
    transformers' import (seconds) through ``prompt_core``."""
    assert heavy_imports("flows.cli", "flows.config") == []


@pytest.mark.parametrize("flow", ["flows.ipet", "flows.predict"])
def test_importing_the_flow_imports_no_torch(flow: str) -> None:
    """Cancelling a deployment's flow run starts a process that imports the flow module only to run its
    cancellation hooks; with torch that took ~30 s of the cancel on a loaded machine. The tasks (and
    ``predict_file``) import torch when they compute; ``flows.predict`` imported it through the errors
    it refuses."""
    assert heavy_imports(flow) == []


def test_prompt_core_exports_are_its_functions_not_its_modules() -> None:
    """The package's names load on first use; importing a submodule named like an export (``train``
    in ``train.py``) would put the module in the function's place. Checked in a fresh interpreter."""
    import subprocess
    import sys

    code = ("import importlib, types, prompt_core as p\n"
            "for m in set(p._MODULE.values()): importlib.import_module('prompt_core' + m)\n"
            "bad = [n for n in p.__all__ if isinstance(getattr(p, n), types.ModuleType)]\n"
            "raise SystemExit(bad or 0)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=Path(__file__).resolve().parent.parent)
    assert done.returncode == 0, done.stderr


@pytest.mark.slow
def test_validate_twenty_times_never_aborts_at_exit(toy: dict, tmp_path: Path) -> None:
    """The program leaves without the native libraries' teardown, which aborted one validate in four
    (exit 134, "terminate called without an active exception"); its output is still all there."""
    import subprocess
    import sys

    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(toy))
    root = Path(__file__).resolve().parent.parent
    for _ in range(20):
        done = subprocess.run([sys.executable, "-m", "flows.cli", "validate", str(path)], capture_output=True,
                              text=True, cwd=root)
        assert done.returncode == 0 and "terminate called" not in done.stderr, done.stderr[-2000:]
        assert done.stdout.startswith(f"{path}: ok · labels ['neg', 'pos']"), done.stdout


def test_the_console_drops_routine_state_lines_and_repeats() -> None:
    """By default Prefect's per-task "Finished in state Completed()" and a warning repeated for every
    model are not shown; a failed state and the first warning are; --verbose keeps everything."""
    import subprocess
    import sys

    code = ("import logging, sys\nfrom flows import console\nconsole.configure(sys.argv[1])\n"
            "logging.basicConfig(level=logging.INFO, format='%(message)s', stream=sys.stdout)\n"
            "for name, text in [('prefect.task_runs', 'Finished in state Completed()'),\n"
            "                   ('prefect.task_runs', \"Finished in state Failed('x')\"),\n"
            "                   ('prompt_core.backbone', 'm has no MLM head'), ('prompt_core.backbone', 'm has no MLM head')]:\n"
            "    logging.getLogger(name).warning(text)\n")
    shown = {v: subprocess.run([sys.executable, "-c", code, v], capture_output=True, text=True, check=True,
                               cwd=Path(__file__).resolve().parent.parent).stdout.splitlines()
             for v in ("normal", "verbose")}
    assert shown["normal"] == ["Finished in state Failed('x')", "m has no MLM head"]
    assert shown["verbose"] == ["Finished in state Completed()", "Finished in state Failed('x')",
                                "m has no MLM head", "m has no MLM head"]


def test_the_console_shows_no_traceback_of_an_error_the_command_words_but_keeps_a_bugs() -> None:
    """A write error raised in a task reaches ``ipet run``, which says it in one line: Prefect's report
    of it (a traceback per task and flow it passed through) and its failed state lines are not shown.
    An unexpected exception keeps its traceback; --verbose shows everything."""
    import subprocess
    import sys

    code = ("import errno, logging, sys\nfrom flows import console\nfrom flows.cli import _worded\n"
            "console.configure(sys.argv[1])\nconsole.hide_repeats(sys.argv[1], _worded)\nlog = logging.getLogger('prefect.task_runs')\n"
            "for error in (OSError(errno.ENOSPC, 'No space left on device', '/run/x'), RuntimeError('a bug')):\n"
            "    try:\n        raise error\n    except Exception as err:\n"
            "        log.error(f'Task run failed with exception: {err!r}', exc_info=True)\n"
            "        log.error(f'Finished in state Failed(\"Task run encountered an exception {type(err).__name__}: "
            "{err}\")')\n")
    shown = {v: subprocess.run([sys.executable, "-c", code, v], capture_output=True, text=True, check=True,
                               cwd=Path(__file__).resolve().parent.parent).stderr for v in ("normal", "verbose")}
    assert "OSError" not in shown["normal"] and "No space left" not in shown["normal"], shown["normal"]
    assert "Traceback" in shown["normal"] and "RuntimeError: a bug" in shown["normal"]
    assert "exception RuntimeError: a bug" in shown["normal"]  # its state line too
    assert shown["verbose"].count("Traceback") == 2 and "exception OSError: [Errno 28]" in shown["verbose"]


def test_quiet_hides_mlflow_info_lines(tmp_path: Path) -> None:
    """--quiet shows the final table and warnings, not MLflow's INFO lines such as a new store's
    "Creating initial MLflow database tables..."; the default still shows them."""
    import subprocess
    import sys

    code = ("import sys\nfrom flows import console\nconsole.configure(sys.argv[1])\n"
            "from mlflow.tracking import MlflowClient\nMlflowClient(sys.argv[2]).search_experiments()\n")
    shown = {v: subprocess.run([sys.executable, "-c", code, v, f"sqlite:///{tmp_path / v}.db"], capture_output=True,
                               text=True, check=True, cwd=Path(__file__).resolve().parent.parent).stderr
             for v in ("normal", "quiet")}
    assert "Creating initial MLflow database tables" in shown["normal"]
    assert "INFO" not in shown["quiet"]


def test_the_predict_deployment_uses_the_model_the_retraining_deployment_registers() -> None:
    """predict/agnews labels with the champion that ipet/agnews (nightly, on new data) promotes, not
    that of another registered model."""
    from flows.config import RunConfig

    root = Path(__file__).resolve().parent.parent
    deployments = yaml.safe_load((root / "prefect.yaml").read_text())["deployments"]
    train = next(d for d in deployments if d["name"] == "agnews" and d["entrypoint"] == "flows/ipet.py:ipet")
    predict = next(d for d in deployments if d["entrypoint"] == "flows/predict.py:predict")
    config = RunConfig.model_validate(yaml.safe_load((root / train["parameters"]["config"]).read_text()))
    assert predict["parameters"]["registered_model"] == config.registered_model


def test_every_deployment_matches_its_flow_and_its_files() -> None:
    """prefect.yaml checked without a server (test_deploy.py deploys it, slowly): each entrypoint loads,
    its parameters are the flow's and validate as its types (a run gives the rest: predict's input and
    output), its config file loads, its schedules and triggers parse as Prefect's own models, and a
    trigger on new data names a dataset its config reads."""
    import inspect

    from prefect.client.schemas.schedules import CronSchedule
    from prefect.events import DeploymentTriggerTypes
    from prefect.flows import load_flow_from_entrypoint
    from pydantic import TypeAdapter

    from flows.config import load_config

    root = Path(__file__).resolve().parent.parent
    deployments = yaml.safe_load((root / "prefect.yaml").read_text())["deployments"]
    given_per_run = {"flows/predict.py:predict": {"input", "output"}}
    for d in deployments:
        flow = load_flow_from_entrypoint(str(root / d["entrypoint"]))
        params, signature = d.get("parameters") or {}, inspect.signature(flow.fn).parameters
        assert set(params) <= set(signature), (d["name"], set(params) - set(signature))
        missing = {n for n, p in signature.items() if p.default is p.empty and n not in params}
        assert missing == given_per_run.get(d["entrypoint"], set()), (d["name"], missing)
        flow.validate_parameters({**params, **{n: "x" for n in missing}})
        config = load_config(str(root / params["config"])) if "config" in params else None
        for schedule in d.get("schedules") or []:
            CronSchedule(cron=schedule["cron"], timezone=schedule.get("timezone"))
        for raw in d.get("triggers") or []:
            trigger = TypeAdapter(DeploymentTriggerTypes).validate_python(raw)
            resource = trigger.match.root["prefect.resource.id"]
            read = {f"ipet.dataset.{s.dataset}" for s in config.data.slots().values() if s.store}
            assert trigger.expect == {"ipet.data.arrived"} and resource in read, (d["name"], resource, read)
    names = [(d["entrypoint"], d["name"]) for d in deployments]
    assert len(names) == len(set(names))


COMMAND_LINES = {"validate": ["validate", "CONFIG"], "help": ["--help"], "command-help": ["run", "--help"],
                 "version": ["--version"]}


def cli_env(buffered: bool) -> dict[str, str]:
    """The environment of ``ipet`` run from this checkout; standard output into a file or pipe block-buffered,
    as a user's Python has it, or written at once (``PYTHONUNBUFFERED``, as in some CI runners)."""
    repo = Path(__file__).resolve().parents[1]
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
    return {**env, "PYTHONPATH": str(repo)} | ({} if buffered else {"PYTHONUNBUFFERED": "1"})


def ipet_onto(stdout: int, words: list[str], config: Path, buffered: bool,
              **env: str) -> subprocess.CompletedProcess:
    """``ipet WORDS`` (``CONFIG`` standing for ``config``) with its standard output on ``stdout``."""
    argv = [str(config) if word == "CONFIG" else word for word in words]
    return subprocess.run([sys.executable, "-m", "flows.cli", *argv], stdout=stdout, stderr=subprocess.PIPE,
                          text=True, cwd=Path(__file__).resolve().parents[1], env=cli_env(buffered) | env,
                          timeout=600)


@pytest.mark.parametrize("buffered", [True, False], ids=["buffered", "unbuffered"])
@pytest.mark.parametrize("command", ["validate", "help", "command-help"])
def test_output_into_a_closed_pipe_is_no_traceback(toy: dict, tmp_path: Path, command: str, buffered: bool) -> None:
    """`ipet suggest … | head` closes the pipe before the output ends: exit 141 (128 + SIGPIPE), as a
    shell reports such a command, and nothing on stderr (it was BrokenPipeError's traceback; with a
    buffered standard output, Python's traceback at exit and status 120; `--help` exited 0)."""
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(toy))
    read, write = os.pipe()
    os.close(read)  # the reader has gone before the first line
    done = ipet_onto(write, COMMAND_LINES[command], config, buffered)
    os.close(write)
    assert (done.returncode, done.stderr) == (141, "")


@pytest.mark.parametrize("buffered", [True, False], ids=["buffered", "unbuffered"])
@pytest.mark.parametrize("command", list(COMMAND_LINES))
def test_output_onto_a_full_disk_is_one_line(toy: dict, tmp_path: Path, command: str, buffered: bool) -> None:
    """`ipet validate … > /dev/full`: the "ok" line cannot be written. One line on stderr and exit 1, as
    for any failed write; it was an `OSError: [Errno 28] No space left on device` traceback (with a
    buffered standard output, at exit, status 120). `ipet --help` and `ipet run --help` exited 0 in silence:
    argparse ignores a failed write of its help."""
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(toy))
    with open("/dev/full", "w") as full:
        done = ipet_onto(full.fileno(), COMMAND_LINES[command], config, buffered)
    assert (done.returncode, done.stderr) == (1, "ipet: cannot write standard output: No space left on device\n")


@pytest.mark.slow
@pytest.mark.parametrize("buffered", [True, False], ids=["buffered", "unbuffered"])
def test_a_run_onto_a_full_disk_names_standard_output(toy: dict, tmp_path: Path, buffered: bool) -> None:
    """`ipet run … > /dev/full` says what every command says, exit 1: it said `ipet: cannot write run: No
    space left on device; finished outputs are kept, run again to resume`, naming the run directory (and,
    buffered, Python's traceback at exit, status 120). Buffered, as a user's Python writes a file, its
    output fails at the end: the run is done and kept. Unbuffered, its first line (the checks') fails: it
    stops there, before any model, with what its checks prepared for the flow kept for a rerun."""
    config, run_dir = tmp_path / "config.yaml", tmp_path / "run"
    config.write_text(yaml.safe_dump(toy))
    with open("/dev/full", "w") as full:
        done = ipet_onto(full.fileno(), ["run", "CONFIG", "--run-dir", str(run_dir)], config, buffered,
                         PREFECT_HOME=str(tmp_path / "prefect"))
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr[-3000:]
    assert done.stderr.strip().splitlines()[-1] == "ipet: cannot write standard output: No space left on device"
    if buffered:
        assert json.loads((run_dir / "results.json").read_text())["stages"][-1]["test_accuracy"] >= 0
    else:
        assert not (run_dir / "results.json").exists() and not (run_dir / "models").exists()
        assert [p.parent.name.startswith("data-") for p in run_dir.glob("*/manifest.json")] == [True]
