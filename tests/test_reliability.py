"""Faults and concurrency: a busy run directory, an unusable MLflow store, a full disk, SIGKILL while
labeling, names that look like paths, and determinism. Real Prefect, real MLflow, real processes
and real OS-level faults (flock, RLIMIT_FSIZE, SIGKILL); nothing of the code under test is mocked."""

from __future__ import annotations

import errno
import json
import os
import re
import resource
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from mlflow.tracking import MlflowClient

from data.lock import RunDirBusy, run_dir_lock
from data.outputs import TMP_SUFFIX
from flows.cli import EXIT_BUSY, main
from flows.config import RunConfig
from tasks import tracking
from tiny import toy_run_config

REPO = Path(__file__).parents[1]
ENV = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{REPO / 'tests'}"}
# Labels that look like paths: they must stay data, never become file names.
LABELS = {"neg": "../../neg", "pos": "/abs/pos"}


@pytest.fixture(scope="module")
def toy(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The toy task, small (one generation, ensemble as the final model), labels spelled like paths."""
    root = tmp_path_factory.mktemp("reliability")
    config = toy_run_config(root, labeled_per_class=4, steps=20, generations=1, growth=2)
    for name in ("train.csv", "test.csv"):
        lines = (root / name).read_text().splitlines()
        (root / name).write_text("\n".join([lines[0]] + [f"{t},{LABELS[lab]}" for t, lab in
                                                         (line.rsplit(",", 1) for line in lines[1:])]) + "\n")
    config["verbalizer"] = {LABELS["neg"]: "bad", LABELS["pos"]: "great"}
    config["data"]["pool_size"] = 120
    config["final"] = {"mode": "ensemble"}
    config["labeling"] = {"batch_size": 2}  # longer labeling tasks: a wider window to kill one in
    return config


@pytest.fixture(scope="module")
def config_file(toy: dict, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("config") / "toy.yaml"
    path.write_text(yaml.safe_dump(toy))
    return path


@pytest.fixture(scope="module")
def reference(prefect_harness, toy: dict, tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, Path]:
    from flows.ipet import ipet

    run_dir = tmp_path_factory.mktemp("reference") / "run"
    return ipet(config=RunConfig.model_validate(toy), run_dir=str(run_dir)), run_dir


def outputs(run_dir: Path) -> dict[str, list[dict]]:
    """Every selected training set and every prediction table of a run, by file name."""
    return {p.name: pq.read_table(p).to_pylist() for sub in ("sets", "predictions")
            for p in sorted((run_dir / sub).glob("*.parquet"))}


def metrics(results: dict) -> list[tuple]:
    return [(s["stage"], s["test_accuracy"], s["train_size"], s["pseudo_label_accuracy"]) for s in results["stages"]]


# --- determinism and names ------------------------------------------------------------------------

def test_same_config_and_seeds_give_the_same_selection_and_metrics(prefect_harness, toy, reference, tmp_path):
    from flows.ipet import ipet

    again = ipet(config=RunConfig.model_validate(toy), run_dir=str(tmp_path / "again"))
    assert again["tasks"]["reused"] == 0, "computed afresh in another run dir"
    assert metrics(again) == metrics(reference[0])
    first, second = outputs(reference[1]), outputs(tmp_path / "again")
    assert any(name.startswith("g1-") for name in first) and first.keys() == second.keys()
    assert first == second


def test_labels_spelled_like_paths_stay_data(reference):
    results, run_dir = reference
    written = [p for p in run_dir.parent.rglob("*") if p.is_file()]
    assert written and all(run_dir in p.parents for p in written), "nothing outside the run dir"
    assert not any(part in {"..", "neg", "pos", "abs"} for p in written for part in p.relative_to(run_dir).parts)
    selected = pq.read_table(next(run_dir.glob("sets/g1-*.parquet")))["label"].to_pylist()
    assert set(selected) <= set(LABELS.values())


def test_run_names_that_escape_are_refused(config_file, tmp_path, capsys):
    for name in ("../escape", "/abs/name", "a/b"):
        assert main(["validate", str(config_file), "--set", f"name={name}"]) == 2
        err = capsys.readouterr().err
        assert "name: String should match pattern" in err and "Traceback" not in err


# --- SIGKILL while labeling the pool (a parquet write in flight), resume ----------------------------

def test_killed_while_labeling_resumes_to_the_same_results(prefect_harness, toy, config_file, reference, tmp_path):
    from prefect.settings import PREFECT_API_URL
    from flows.ipet import ipet

    run_dir = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "flows.cli", "run", str(config_file), "--run-dir", str(run_dir)],
                            # one torch thread, as in this process: same summation order, same bits
                            env={**ENV, "PREFECT_API_URL": PREFECT_API_URL.value(), "OMP_NUM_THREADS": "1"},
                            cwd=tmp_path,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    seen, held, deadline = None, None, time.time() + 300
    while seen is None and proc.poll() is None and time.time() < deadline:
        if held is None and list(run_dir.glob("data-*")):
            held = _is_locked(run_dir)  # the running flow holds its run dir
        seen = next((p for p in _entries(run_dir / "logits") if "--pool-" in p and p.endswith(TMP_SUFFIX)), None)
        if seen is None:
            time.sleep(0.002)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert seen is not None, "killed while the pool's logits were being written, after PET trained"
    assert held is True

    for path in run_dir.rglob("*.parquet"):  # nothing half-written under a final name
        if not path.name.startswith("."):
            pq.read_table(path)
    for model in (run_dir / "models").iterdir():
        assert model.name.startswith(".") or (model / "learner.json").exists()

    resumed = ipet(config=RunConfig.model_validate(toy), run_dir=str(run_dir))  # the lock died with the process
    assert resumed["tasks"]["reused"] >= 2, "the PET models trained before the kill are reused"
    assert metrics(resumed) == metrics(reference[0])
    assert outputs(run_dir) == outputs(reference[1])
    assert not list(run_dir.rglob(f".*{TMP_SUFFIX}")), "the killed writer's temporaries are gone"

    client = MlflowClient(toy["tracking"]["mlflow_uri"])
    runs = client.search_runs([client.get_experiment_by_name("toy").experiment_id],
                              filter_string=f"tags.run_dir = '{run_dir}'")
    assert sorted(r.info.status for r in runs) == ["FINISHED", "KILLED"], "the killed parent run is ended"
    killed = next(r for r in runs if r.info.status == "KILLED").data.tags["prefect.flow_run_id"]
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterParentFlowRunId

    with get_client(sync_client=True) as prefect:  # in the UI it showed Running for ever
        states = [prefect.read_flow_run(killed).state] + [run.state for run in prefect.read_flow_runs(
            flow_run_filter=FlowRunFilter(parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[killed])))]
    assert len(states) > 1 and all(state.type.value == "CRASHED" for state in states), states


def _entries(directory: Path) -> list[str]:
    try:
        return os.listdir(directory)
    except FileNotFoundError:
        return []


def _is_locked(run_dir: Path) -> bool:
    code = "import sys; from data.lock import run_dir_lock, RunDirBusy\n" \
           "try:\n    with run_dir_lock(sys.argv[1]): pass\nexcept RunDirBusy: sys.exit(3)\n"
    return subprocess.run([sys.executable, "-c", code, str(run_dir)], env=ENV).returncode == 3


# --- killed while registering the final model (an MLflow LoggedModel in flight), resume ---------------

LOGGING = """
import os, signal, sys
from tasks.tracking import parent_run

uri, run_dir = sys.argv[1:]
with parent_run(uri, "toy", "toy", {"run_dir": run_dir}) as (client, parent):
    # what registration does first; its artifacts are logged, then it is finalized READY
    client.create_logged_model(client.get_run(parent).info.experiment_id, name="final-model", source_run_id=parent)
    os.kill(os.getpid(), signal.SIGKILL)
"""


def test_a_final_model_left_pending_by_a_stopped_run_is_marked_failed(tmp_path):
    """A run killed (or interrupted) while registering its final model left that MLflow LoggedModel
    PENDING for ever, beside the READY copy the rerun logs; it is marked FAILED, as its run is KILLED."""
    uri, run_dir = f"sqlite:///{tmp_path / 'mlflow.db'}", str(tmp_path / "run")
    killed = subprocess.run([sys.executable, "-c", LOGGING, uri, run_dir], env=ENV, capture_output=True, text=True)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    with tracking.parent_run(uri, "toy", "toy", {"run_dir": run_dir}) as (client, resumed):  # the rerun
        exp = client.get_run(resumed).info.experiment_id
    with pytest.raises(KeyboardInterrupt), tracking.parent_run(uri, "toy", "toy", {"run_dir": run_dir}) as (_, stopped):
        client.create_logged_model(exp, name="final-model", source_run_id=stopped)
        raise KeyboardInterrupt  # Ctrl-C while logging it
    runs = {r.info.run_id: r.info.status for r in client.search_runs([exp])}
    assert sorted(runs.values()) == ["FINISHED", "KILLED", "KILLED"]
    models = {m.source_run_id: str(m.status) for m in client.search_logged_models([exp])}
    assert len(models) == 2 and set(models.values()) == {"FAILED"}, models
    assert all(runs[run] == "KILLED" for run in models)


# --- two runs on one run directory ----------------------------------------------------------------

@pytest.fixture()
def holder(tmp_path: Path):
    """Another process holding ``tmp_path/run`` (the way a running flow does)."""
    run_dir = tmp_path / "run"
    code = "import sys, time; from data.lock import run_dir_lock\n" \
           "with run_dir_lock(sys.argv[1]):\n    print('held', flush=True); time.sleep(120)\n"
    proc = subprocess.Popen([sys.executable, "-c", code, str(run_dir)], env=ENV, stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    yield run_dir, proc
    proc.kill()
    proc.wait()


def test_second_cli_run_on_a_busy_run_dir_refuses(holder, config_file, capsys):
    run_dir, proc = holder
    code = main(["run", str(config_file), "--run-dir", str(run_dir)])
    err = capsys.readouterr().err
    assert code == EXIT_BUSY
    assert f"ipet: run directory {run_dir} is in use by another run (pid {proc.pid})" in err
    assert "Traceback" not in err and os.listdir(run_dir) == [".lock"], "nothing written"


def test_second_flow_on_a_busy_run_dir_refuses(prefect_harness, holder, toy):
    """Deployments call the flow directly: the flow itself takes the lock."""
    from flows.ipet import ipet

    run_dir, proc = holder
    with pytest.raises(RunDirBusy, match=f"pid {proc.pid}"):
        ipet(config=RunConfig.model_validate(toy), run_dir=str(run_dir))
    assert os.listdir(run_dir) == [".lock"]
    proc.kill()
    proc.wait()
    with run_dir_lock(run_dir):  # a killed holder leaves no stale lock
        with run_dir_lock(run_dir):  # and the holder may take it again (the CLI, then its flow)
            pass


def test_a_flow_given_wrong_settings_fails_in_one_line_naming_them(prefect_harness, toy, tmp_path):
    """What a deployment run's form in the UI sends: the config as a dict (a cross-field rule broken, a typo),
    a runner section with a typo, a run directory that is a file. The flow run's state message is the
    line(s) ``ipet validate`` would print, with no traceback; a caller gets the error; nothing is written.
    (tests/test_ui_deploy.py sends them through a server and a worker.)"""
    from flows.config import ConfigError
    from flows.ipet import ipet

    (tmp_path / "a-file").write_text("x")
    run_dir = str(tmp_path / "run")
    no_mask = {**toy, "pvps": [{"pattern": "{text} no mask ."}, {"pattern": "{mask} : {text}"}]}
    cases = [({"config": no_mask}, "config: pvps.0.pattern: pattern '{text} no mask .' must contain exactly one "
                                   "{mask}, found 0 (learner: cloze)"),
             ({"config": {**toy, "ipet": {"generatoins": 2}}},
              "config: ipet.generatoins: Extra inputs are not permitted; did you mean ipet.generations?"),
             ({"config": toy, "runner": {"knd": "ray"}},
              "runner.knd: Extra inputs are not permitted; did you mean runner.kind?"),
             ({"config": toy, "run_dir": str(tmp_path / "a-file")},
              f"run directory {tmp_path / 'a-file'} is not usable: it is a file, not a directory; give --run-dir "
              "a directory (new or an earlier run's)")]
    for params, line in cases:
        state = ipet(**{"run_dir": run_dir, **params}, return_state=True)
        assert state.is_failed() and state.message == line, state
        logs = _flow_run_logs(state.state_details.flow_run_id)
        assert f"Finished in state Failed({line!r})" in logs and not [log for log in logs if "Traceback" in log], logs
    with pytest.raises(ConfigError, match="config: pvps.0.pattern"):
        ipet(config=no_mask, run_dir=run_dir)
    assert sorted(os.listdir(tmp_path)) == ["a-file"], "nothing written"


def _flow_run_logs(flow_run_id) -> list[str]:
    """A flow run's log lines as the UI shows them (the API's)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId
    from prefect.logging.handlers import APILogWorker

    APILogWorker.drain_all(timeout=10)
    with get_client(sync_client=True) as client:
        return [log.message for log in client.read_logs(LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id])))]


# --- MLflow store unusable ------------------------------------------------------------------------

def _unusable_stores(tmp_path: Path) -> list[tuple[str, str]]:
    (tmp_path / "a-file").write_text("x")
    (tmp_path / "not.db").write_text("not a database")
    return [("http://127.0.0.1:9", "is not reachable"),
            (f"sqlite:///{tmp_path / 'a-file' / 'mlflow.db'}", "cannot create files in"),
            (f"sqlite:///{tmp_path / 'not.db'}", "is not an SQLite database")]


def test_unusable_tracking_store_fails_validate_and_run_at_once(config_file, tmp_path, capsys):
    for uri, cause in _unusable_stores(tmp_path):
        for command in (["validate"], ["run", "--run-dir", str(tmp_path / "run")]):
            started = time.perf_counter()
            code = main([command[0], str(config_file), *command[1:], "--set", f"tracking.mlflow_uri={uri}"])
            err = capsys.readouterr().err
            assert code == 2 and time.perf_counter() - started < 30
            assert "tracking.mlflow_uri: MLflow tracking" in err and repr(uri) in err and cause in err, err
            assert not (tmp_path / "run").exists(), "nothing computed, nothing written"
    ok = main(["validate", str(config_file), "--set", "tracking.mlflow_uri=http://127.0.0.1:9",
               "--set", "tracking.fallback_local=true"])
    assert ok == 0


def test_flow_with_unusable_store_fails_before_any_compute(prefect_harness, toy, tmp_path):
    from flows.ipet import ipet

    uri = "http://127.0.0.1:9"
    config = RunConfig.model_validate({**toy, "tracking": {"mlflow_uri": uri, "experiment": "toy"}})
    with pytest.raises(tracking.TrackingError, match="127.0.0.1:9.* is not reachable"):
        ipet(config=config, run_dir=str(tmp_path / "run"))
    assert os.listdir(tmp_path / "run") == [".lock"], "no data prepared, no model trained"


def test_fallback_local_tracks_into_the_run_dir(tmp_path):
    local = tracking.store_uri("http://127.0.0.1:9", tmp_path)
    assert local == f"sqlite:///{tmp_path.resolve() / 'mlflow.db'}"
    assert tracking.store_uri(local, tmp_path) == local
    with pytest.raises(tracking.TrackingError):
        tracking.store_uri("http://127.0.0.1:9")


# --- disk full --------------------------------------------------------------------------------------

WRITER = """
import json, os, sys
import pyarrow as pa
from data.outputs import atomic_path, write_json, write_parquet

root = sys.argv[1]


def directory():
    with atomic_path(root + "/model", directory=True) as tmp:
        (tmp / "weights.bin").write_bytes(b"w" * 2_000_000)


writers = {"parquet": lambda: write_parquet(pa.table({"x": [os.urandom(500).hex() for _ in range(2000)]}),
                                            root + "/out.parquet"),
           "json": lambda: write_json({"x": "y" * 2_000_000}, root + "/out.json"),
           "directory": directory}
results = {}
for name, write in writers.items():
    try:
        write()
        results[name] = "written"
    except OSError as err:
        results[name] = err.errno
print(json.dumps(results))
"""


def _limit_file_size(limit: int):
    def apply() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit then fails with EFBIG
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return apply


def test_disk_full_while_writing_keeps_the_previous_outputs(tmp_path):
    from data.outputs import write_json, write_parquet

    old = pa.table({"x": ["previous"]})
    write_parquet(old, tmp_path / "out.parquet")
    write_json({"previous": True}, tmp_path / "out.json")
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "weights.bin").write_bytes(b"previous")
    done = subprocess.run([sys.executable, "-c", WRITER, str(tmp_path)], env=ENV, capture_output=True, text=True,
                          preexec_fn=_limit_file_size(256 * 1024))  # every write past 256 KiB fails: a full disk
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"parquet": errno.EFBIG, "json": errno.EFBIG, "directory": errno.EFBIG}
    assert pq.read_table(tmp_path / "out.parquet").equals(old)
    assert json.loads((tmp_path / "out.json").read_text()) == {"previous": True}
    assert (tmp_path / "model" / "weights.bin").read_bytes() == b"previous"
    assert not list(tmp_path.glob(f".*{TMP_SUFFIX}")), "no temporaries left behind"


def test_a_file_where_a_run_folder_goes_is_a_write_error(tmp_path):
    """A file named like one of the run directory's folders (``predictions``) fails the first write there
    with ``ENOTDIR``, which ``ipet run`` reports in one line (exit 1, run again once it is moved), as it
    does an unwritable run directory; mkdir's ``FileExistsError`` was reported as a traceback."""
    from data.outputs import write_json, write_parquet
    from flows.cli import WRITE_ERRORS

    (tmp_path / "predictions").write_text("not a folder")
    for write in (lambda: write_json({}, tmp_path / "predictions" / "p.json"),
                  lambda: write_parquet(pa.table({"x": [1]}), tmp_path / "predictions" / "deeper" / "p.parquet")):
        with pytest.raises(OSError) as raised:
            write()
        assert raised.value.errno in WRITE_ERRORS and raised.value.filename.startswith(str(tmp_path / "predictions"))
    assert (tmp_path / "predictions").read_text() == "not a folder"


def test_unwritable_run_dir_is_one_line(config_file, tmp_path, capsys):
    (tmp_path / "a-file").write_text("x")
    code = main(["run", str(config_file), "--run-dir", str(tmp_path / "a-file" / "run")])
    err = capsys.readouterr().err
    assert code == 1 and "ipet: cannot write" in err and "Not a directory" in err and "Traceback" not in err


def test_a_write_error_inside_a_task_is_one_line(toy, config_file, tmp_path):
    """A file where a run folder goes (``predictions``) fails a task's write mid-run: ``ipet run`` says so in
    one line, exit 1, without Prefect's traceback of the task and of each flow the error passed through.
    Its test set holds two pool rows: their leak is warned of once, by the check before the flow (the
    flow's own line of it, for a deployment, was printed on the terminal too)."""
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "predictions").write_text("not a folder")
    root = Path(toy["data"]["root"])
    train = (root / "train.csv").read_text().splitlines()
    (tmp_path / "leaky.csv").write_text((root / "test.csv").read_text() + f"{train[-1]}\n{train[-2]}\n")
    done = subprocess.run([sys.executable, "-m", "flows.cli", "run", str(config_file), "--run-dir", str(run_dir),
                           "--set", f"data.test.path={tmp_path / 'leaky.csv'}"],
                          env={**ENV, "PREFECT_HOME": str(tmp_path / "prefect")}, cwd=tmp_path, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 1, done.stderr[-3000:]
    leak = f"{tmp_path / 'leaky.csv'}: 2 test row(s) also in the unlabeled pool (leak), row id(s) ['41', '42']"
    assert (done.stdout + done.stderr).count("(leak)") == 1 and f"{config_file}: warning: {leak}" in done.stdout
    assert "Traceback" not in done.stdout + done.stderr and "ERROR" not in done.stderr, done.stderr[-3000:]
    assert done.stderr.strip().splitlines()[-1] == (f"ipet: cannot write {run_dir / 'predictions'}: Not a directory; "
                                                    "finished outputs are kept, run again to resume")


def test_a_data_error_inside_the_flow_is_one_line(config_file, tmp_path, monkeypatch, capfd):
    """Data that cannot be read once the run started (a source at a URL whose credentials lapsed, a file
    changed since the check) fails the data task with a DataError: ``ipet run`` says it in one line, exit 2,
    without Prefect's traceback of the task and the flows it passed through."""
    from data.errors import DataError
    import tasks.data

    def unreadable(*args, **kwargs):
        raise DataError("s3://bucket/train.csv: cannot be read: NoCredentialsError: Unable to locate credentials")

    monkeypatch.setattr(tasks.data, "prepare", unreadable)
    monkeypatch.setenv("PREFECT_HOME", str(tmp_path / "prefect"))
    code = main(["run", str(config_file), "--run-dir", str(tmp_path / "run")])
    err = capfd.readouterr().err
    assert code == 2, err[-3000:]
    assert "Traceback" not in err and "ERROR" not in err, err[-3000:]
    assert err.strip().splitlines()[-1] == ("ipet: s3://bucket/train.csv: cannot be read: NoCredentialsError: "
                                            "Unable to locate credentials")


# --- Ctrl-C, SIGTERM and kill -9 of `ipet run` -------------------------------------------------------

def _descendants(pid: int) -> set[int]:
    """Every live process below ``pid`` (the temporary Prefect server runs in a session of its own)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


def _alive(pids: set[int]) -> set[int]:
    def running(pid: int) -> bool:
        try:
            return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
        except OSError:
            return False
    return {p for p in pids if running(p)}


@pytest.mark.parametrize(("how", "code"), [("SIGINT to the group", 130), ("SIGTERM", 143), ("SIGKILL", -9)])
def test_a_signalled_run_stops_at_once_and_leaves_no_process(prefect_harness, toy, config_file, reference,
                                                             tmp_path, how, code):
    """Mid-training (the first PET model saved, the rest training): Ctrl-C as a terminal sends it (to
    the process group), SIGTERM as a supervisor sends it (to ``ipet`` alone), and ``kill -9``. The
    run's own temporary Prefect server must not outlive it; Ctrl-C's rerun ends as an uninterrupted run."""
    from flows.ipet import ipet

    run_dir = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "flows.cli", "run", str(config_file), "--run-dir", str(run_dir)],
                            env={**ENV, "OMP_NUM_THREADS": "1", "PREFECT_HOME": str(tmp_path / "prefect")},
                            cwd=tmp_path, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True)
    deadline = time.time() + 600
    while proc.poll() is None and time.time() < deadline and not list(run_dir.glob("models/g0-*/learner.json")):
        time.sleep(0.05)
    children = _descendants(proc.pid)
    assert proc.poll() is None and children, "signalled mid-training, with its temporary server running"
    sent = time.time()
    if how == "SIGINT to the group":
        os.killpg(proc.pid, signal.SIGINT)
    else:
        proc.send_signal(getattr(signal, how))
    err = proc.communicate(timeout=60)[1]
    took = time.time() - sent
    print(f"{how}: exit {proc.returncode} {took:.1f} s after the signal")  # the figure docs/reliability.md quotes
    assert proc.returncode == code and took < 10, (took, err[-3000:])
    time.sleep(1)  # a parent's death reaches its children
    assert _alive(children) == set(), "no process of the run left"
    if code == -9:
        return
    assert "Traceback" not in err, err[-3000:]
    assert [line for line in err.splitlines() if "running the same command again resumes" in line] == \
        [f"ipet: {how.split()[0]}: ipet run stopped; finished outputs are kept, and running the same command again "
         "resumes where it stopped"]
    client = MlflowClient(toy["tracking"]["mlflow_uri"])
    runs = client.search_runs([client.get_experiment_by_name("toy").experiment_id],
                              filter_string=f"tags.run_dir = '{run_dir}'")
    assert [r.info.status for r in runs] == ["KILLED"]
    if code == 130:
        resumed = ipet(config=RunConfig.model_validate(toy), run_dir=str(run_dir))
        assert resumed["tasks"]["reused"] >= 1 and metrics(resumed) == metrics(reference[0])
        assert outputs(run_dir) == outputs(reference[1])


@pytest.mark.slow  # a run to its first model and a rerun: 40-110 s on 2 loaded cores
def test_a_run_whose_output_pipe_closes_stops_like_ctrl_c(prefect_harness, toy, config_file, reference, tmp_path):
    """``ipet run … 2>&1 | head``: the reader leaves after the first trained model's line, and the next
    log line meets a closed pipe. The run stops as Ctrl-C stops it (MLflow parent KILLED, finished
    models kept, the rerun resumes to the same results) with exit 141 (128 + SIGPIPE), as any command
    in a pipe; it ran on with no exit within 60 s (rich's console, under Prefect's log handler, raised
    SystemExit in whichever thread logged), and at the start it ended with exit 1."""
    from flows.ipet import ipet

    run_dir = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "flows.cli", "run", str(config_file), "--run-dir", str(run_dir)],
                            env={**ENV, "OMP_NUM_THREADS": "1", "PREFECT_HOME": str(tmp_path / "prefect")},
                            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    for line in proc.stdout:
        if "1/2 models" in line:
            break
    proc.stdout.close()  # `head` has read its lines
    assert proc.wait(timeout=60) == 141
    client = MlflowClient(toy["tracking"]["mlflow_uri"])
    runs = client.search_runs([client.get_experiment_by_name("toy").experiment_id],
                              filter_string=f"tags.run_dir = '{run_dir}'")
    assert [r.info.status for r in runs] == ["KILLED"]
    resumed = ipet(config=RunConfig.model_validate(toy), run_dir=str(run_dir))
    assert resumed["tasks"]["reused"] >= 1 and metrics(resumed) == metrics(reference[0])


STOP_STEPS = 3000  # a training of about 10 s on a loaded core: long enough to stop one in flight


@pytest.mark.slow  # two 3,000-step trainings and the rerun's: 60-110 s on 2 loaded cores (load 4-6)
def test_a_terminated_flow_stops_its_training_in_flight_and_a_rerun_resumes(prefect_harness, toy, tmp_path):
    """SIGTERM to the flow's process while its second model trains, as a deployment's worker sends it on a
    cancel (Prefect raises ``TerminationSignal`` in the flow): the training stops within steps, far from
    its end, so the flow ends seconds after the signal (it trained on to its last step: a thread cannot
    be stopped from outside, and the flow's task runner waits for its threads); the model it was training
    never appears under a final name; the rerun in the same process (whose own stop request is not set)
    reuses the finished model and trains the stopped one."""
    from prefect.client.orchestration import get_client
    from prefect.exceptions import TerminationSignal

    from flows.ipet import ipet

    config = RunConfig.model_validate({**toy, "ipet": {**toy["ipet"], "generations": 0},
                                       "train": {**toy["train"], "min_steps": STOP_STEPS, "max_steps": STOP_STEPS}})
    run_dir, began, sent = tmp_path / "run", time.time(), []

    def terminate_mid_training() -> None:
        deadline = time.time() + 300
        while not list(run_dir.glob("models/g0-*/learner.json")) and time.time() < deadline:
            time.sleep(0.05)
        time.sleep(1)  # the second model's training is under way
        sent.append(time.time())
        os.kill(os.getpid(), signal.SIGTERM)

    # Prefect's handler raises TerminationSignal, then passes the signal on to the handler it replaced:
    # this one, not the default's death of the test process
    previous = signal.signal(signal.SIGTERM, lambda *_: None)
    try:
        threading.Thread(target=terminate_mid_training, daemon=True).start()
        with pytest.raises(TerminationSignal):
            ipet(config=config, run_dir=str(run_dir))
        took = time.time() - sent[0]
    finally:
        signal.signal(signal.SIGTERM, previous)
    print(f"the flow ended {took:.1f} s after SIGTERM")

    with get_client(sync_client=True) as client:
        trainings = {t.name: t.state for t in client.read_task_runs()
                     if t.name.startswith("train g0-") and t.expected_start_time.timestamp() >= began}
    stopped = {name: state for name, state in trainings.items() if state.type.value != "COMPLETED"}
    assert len(trainings) == 2 and len(stopped) == 1, trainings
    (name, state), = stopped.items()
    ran = re.fullmatch(rf"train: stopped after (\d+) of {STOP_STEPS} steps, as its run was asked to stop",
                       state.message or "")
    assert (state.type.value, state.name) == ("CANCELLED", "Cancelled") and ran, state
    assert int(ran[1]) < STOP_STEPS // 4, f"{name} trained on for {ran[1]} steps"
    models = sorted(p.name for p in (run_dir / "models").iterdir() if not p.name.startswith("."))
    trained = [m for m in models if m.startswith("g0-")]
    assert len(trained) == 1 and not trained[0].startswith(f"{name.removeprefix('train ')}-"), models
    assert all((run_dir / "models" / m / "learner.json").exists() for m in models)
    client = MlflowClient(toy["tracking"]["mlflow_uri"])
    runs = client.search_runs([client.get_experiment_by_name("toy").experiment_id],
                              filter_string=f"tags.run_dir = '{run_dir}'")
    assert [r.info.status for r in runs] == ["KILLED"]

    resumed = ipet(config=config, run_dir=str(run_dir))
    assert resumed["tasks"] == {"trained": 1, "reused": 1}
    assert [s["stage"] for s in resumed["stages"]] == ["zero-shot", "pet", "final"]


@pytest.mark.parametrize("when", ["importing Prefect", "checking"])
@pytest.mark.parametrize(("sig", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_run_signalled_while_it_starts_stops_with_one_line(config_file, tmp_path, sig, code, when):
    """The signal comes once the run directory is locked, while Prefect is imported and its server
    not yet started (seconds on a loaded machine), or once the server is starting and the config and
    data are checked: the same one line and exit status as mid-training, not a KeyboardInterrupt
    traceback (SIGINT) or a silent death (SIGTERM); and no run directory holding only its lock is left
    (``ipet predict`` and ``ipet gc`` took it for an unfinished run)."""
    run_dir = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "flows.cli", "run", str(config_file), "--run-dir", str(run_dir)],
                            env={**ENV, "PREFECT_HOME": str(tmp_path / "prefect")}, cwd=tmp_path,
                            start_new_session=True, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # as a terminal has it
    deadline = time.time() + 60
    while proc.poll() is None and time.time() < deadline and not (run_dir / ".lock").exists():
        time.sleep(0.001)
    while when == "checking" and proc.poll() is None and time.time() < deadline and not _descendants(proc.pid):
        time.sleep(0.01)  # the temporary server started: the checks (torch, the model) run for seconds
    assert proc.poll() is None, "signalled while starting"
    assert list(run_dir.iterdir()) == [run_dir / ".lock"], "nothing written yet"
    proc.send_signal(sig)
    err = proc.communicate(timeout=60)[1]
    assert proc.returncode == code and "Traceback" not in err, err[-3000:]
    assert err.strip().splitlines()[-1] == (f"ipet: {sig.name}: ipet run stopped; finished outputs are kept, and "
                                           "running the same command again resumes where it stopped")
    assert not run_dir.exists(), "the run directory it created and left empty is removed"


def test_a_signal_a_library_wraps_in_its_own_error_still_stops_with_one_line(tmp_path):
    """A signal that lands inside a library's callback comes out as that library's error (pydantic's
    serializer made ``Interrupted`` a ``PydanticSerializationError`` while Prefect's settings were copied at
    start-up): still the one line and 128 + the signal's number, not a traceback and exit 1."""
    code = ("import os, signal, time\n"
            "from flows.interrupt import stop_on_signals\n"
            "with stop_on_signals('ipet run', lambda: None):\n"
            "    try:\n"
            "        os.kill(os.getpid(), signal.SIGTERM)\n"
            "        time.sleep(30)\n"
            "    except KeyboardInterrupt as err:\n"
            "        raise ValueError(f'Error calling function: {err!r}') from None\n")
    done = subprocess.run([sys.executable, "-c", code], env=ENV, cwd=tmp_path, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 143 and "Traceback" not in done.stderr, done.stderr
    assert done.stderr.startswith("ipet: SIGTERM: ipet run stopped;"), done.stderr


def test_outputs_follow_the_umask(tmp_path):
    """Atomic outputs (results.json, summary.md, predictions, model directories) get the permissions
    every other file of the run directory gets, not a temporary file's private 0600."""
    from data.outputs import atomic_path, write_json

    old = os.umask(0o022)
    try:
        write_json({"a": 1}, tmp_path / "results.json")
        with atomic_path(tmp_path / "model", directory=True) as tmp:
            (tmp / "weights.bin").write_bytes(b"w")
        (tmp_path / "plain.txt").write_text("x")
    finally:
        os.umask(old)
    modes = {p.name: oct(p.stat().st_mode & 0o777) for p in tmp_path.iterdir()}
    assert modes == {"results.json": "0o644", "model": "0o755", "plain.txt": "0o644"}


@pytest.mark.parametrize("directory", [True, False])
def test_a_write_removes_what_a_killed_writer_of_the_same_output_left(tmp_path, directory):
    """A Ray worker killed while it saved a model leaves its temporary; the task's retry, in the same run,
    writes the same model directory: nothing half-written may stay beside it (a rerun removed it only when
    it took the run directory). A live writer's temporary, and another output's, stay."""
    import socket

    from data.outputs import atomic_path

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True)
    host = socket.gethostname()
    left = tmp_path / f".model.{host}.{dead.stdout.strip()}.0123456789ab{TMP_SUFFIX}"
    live = tmp_path / f".model.{host}.{os.getpid()}.ba9876543210{TMP_SUFFIX}"
    other = tmp_path / f".other.{host}.{dead.stdout.strip()}.0123456789ab{TMP_SUFFIX}"
    for path in (left, live, other):
        path.mkdir()
    with atomic_path(tmp_path / "model", directory=directory) as tmp:
        (tmp / "w").write_bytes(b"w") if directory else tmp.write_bytes(b"w")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["model", live.name, other.name])
