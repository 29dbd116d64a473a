"""An operator steering the `ipet` deployment from the Prefect UI, end to end: a real `prefect server`,
the project's prefect.yaml deployed, a process worker. Cancelling a run mid-training, a custom run
whose typed-in parameters are wrong, and a run triggered while one is going (the ENQUEUE limit)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml
from mlflow.tracking import MlflowClient

from data.lock import run_dir_lock
from test_deploy import ROOT, TERMINAL, _cli, _client, _start, _stop, server  # noqa: F401 (server: a fixture)
from tiny import toy_run_config

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> dict:
    """The toy task (tiny BERT, trainings long enough to cancel one), and prefect.yaml's ipet deployment
    (no schedule) running it in ``run``."""
    root = tmp_path_factory.mktemp("ui-deploy")
    config = toy_run_config(root, steps=600, generations=1)
    config["train"]["min_steps"] = 600
    config.update(final={"mode": "ensemble"})
    config["tracking"]["register"] = False
    (root / "toy.yaml").write_text(yaml.safe_dump(config))
    deployments = yaml.safe_load((ROOT / "prefect.yaml").read_text())
    ipet = next(d for d in deployments["deployments"] if d["entrypoint"] == "flows/ipet.py:ipet")
    ipet.update(parameters={"config": str(root / "toy.yaml"), "run_dir": str(root / "run")}, schedules=[])
    for trigger in ipet["triggers"]:
        trigger["match"]["prefect.resource.id"] = "ipet.dataset.toy"
    deployments["deployments"] = [ipet]
    (root / "prefect.yaml").write_text(yaml.safe_dump(deployments))
    return {"root": root, "config": config, "mlflow_uri": config["tracking"]["mlflow_uri"]}


@pytest.fixture(scope="module")
def worker(server, project):
    env, root = server["env"], project["root"]
    _cli(["prefect", "work-pool", "create", "ipet-local", "--type", "process"], env)
    _cli(["prefect", "--no-prompt", "deploy", "--all", "--prefect-file", str(root / "prefect.yaml")], env)
    proc = _start(["prefect", "worker", "start", "--pool", "ipet-local"], env, server["home"] / "worker.log")
    yield proc
    _stop(proc)


def _run(env: dict, *params: str) -> str:
    """A run of the ipet deployment, as the UI's "Run" starts one (``--param`` overrides); its id."""
    args = [a for p in params for a in ("--param", p)]
    return _cli(["prefect", "deployment", "run", "ipet/agnews", *args], env).stdout.split("UUID:")[1].split()[0]


def _state(env: dict, run_id: str, reached, home: Path, timeout: float = 420):
    """The flow run's state once ``reached`` says so."""
    deadline = time.time() + timeout
    with _client(env) as client:
        while time.time() < deadline:
            state = client.read_flow_run(run_id).state
            if state and reached(state):
                return state
            time.sleep(0.5)
    pytest.fail(f"{run_id}: not there within {timeout} s\n{(home / 'worker.log').read_text()[-4000:]}")



def _ended(env: dict, run_id: str, home: Path):
    return _state(env, run_id, lambda s: s.type.value in TERMINAL, home)


def _logs(env: dict, run_id: str) -> list[str]:
    """The flow run's log lines as the UI shows them, once its last one ("Finished in state …") is in."""
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

    deadline = time.time() + 60
    with _client(env) as client:
        while True:
            lines = [log.message for log in client.read_logs(
                log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[run_id])))]
            if any(line.startswith("Finished in state") for line in lines) or time.time() > deadline:
                return lines
            time.sleep(1)


def _subflows(env: dict, run_id: str) -> list:
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterParentFlowRunId

    with _client(env) as client:
        return client.read_flow_runs(flow_run_filter=FlowRunFilter(
            parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[run_id])))


def _metrics(run_dir: Path) -> list[tuple]:
    results = json.loads((run_dir / "results.json").read_text())
    return [(s["stage"], s["test_accuracy"], s["train_size"], s["pseudo_label_accuracy"]) for s in results["stages"]]


def test_cancelling_a_run_mid_training_ends_it_cancelled_and_a_rerun_resumes_it(server, project, worker):
    """`prefect flow-run cancel` (the UI's Cancel) while the second PET model trains: the flow run and its
    subflow end Cancelled, the MLflow parent run KILLED with no run left RUNNING, the run directory's lock
    released, every output under a final name whole; the rerun reuses the finished model and ends with an
    uninterrupted run's metrics."""
    env, root, home = server["env"], project["root"], server["home"]
    reference = root / "reference"
    assert _ended(env, _run(env, f"run_dir={reference}"), home).type.value == "COMPLETED"

    run_dir = root / "run"
    run_id = _run(env)
    deadline = time.time() + 400
    while not list(run_dir.glob("models/g0-*/learner.json")):
        assert time.time() < deadline, (home / "worker.log").read_text()[-4000:]
        time.sleep(0.1)
    sent = time.time()
    _cli(["prefect", "flow-run", "cancel", run_id], env)
    state = _ended(env, run_id, home)
    print(f"cancelled {time.time() - sent:.0f} s after `prefect flow-run cancel`")  # the figure docs/reliability.md quotes
    assert (state.type.value, state.name) == ("CANCELLED", "Cancelled"), state
    deadline = time.time() + 90  # a subflow the worker's kill left Running: the server cancels it (every 20 s)
    while [s.state.type.value for s in _subflows(env, run_id)] != ["CANCELLED"]:
        assert time.time() < deadline, _subflows(env, run_id)
        time.sleep(1)
    assert not (run_dir / "results.json").exists()

    client = MlflowClient(project["mlflow_uri"])
    experiment = client.get_experiment_by_name("toy").experiment_id
    parents = client.search_runs([experiment], filter_string=f"tags.run_dir = '{run_dir}'")
    assert [(r.info.status, r.data.tags["error"]) for r in parents] == [("KILLED", "TerminationSignal")]
    assert client.search_runs([experiment], filter_string="attributes.status = 'RUNNING'") == []
    with run_dir_lock(run_dir):  # released: this process takes it at once
        pass
    for model in (run_dir / "models").iterdir():  # a model directory appears whole or not at all
        assert model.name.startswith(".") or (model / "learner.json").exists(), model
    for table in run_dir.rglob("*.parquet"):
        pq.read_table(table)

    rerun = _run(env)
    assert _ended(env, rerun, home).type.value == "COMPLETED"
    results = json.loads((run_dir / "results.json").read_text())
    assert results["prefect_flow_run_id"] == rerun and results["tasks"]["reused"] >= 1
    assert _metrics(run_dir) == _metrics(reference)


def test_a_custom_run_with_a_wrong_setting_fails_in_one_line_and_writes_nothing(server, project, worker):
    """Parameters typed into the UI's custom-run form: a type the form's schema refuses is refused by the
    server naming the field (no run); a setting the schema cannot check (a cross-field rule), a run
    directory that is a file, a config file not there: the run fails with one line naming it as its
    state message, no traceback in its logs, nothing written."""
    env, root, home = server["env"], project["root"], server["home"]
    (root / "a-file").write_text("not a directory")
    good = project["config"]
    no_mask = {**good, "pvps": [{"pattern": "{text} no mask ."}, {"pattern": "{mask} : {text}"}]}
    cases = {
        "config: pvps.0.pattern: pattern '{text} no mask .' must contain exactly one {mask}, found 0 "
        "(learner: cloze)": {"config": no_mask, "run_dir": str(root / "custom")},
        f"run directory {root / 'a-file'} is not usable: it is a file, not a directory":
            {"config": good, "run_dir": str(root / "a-file")},
        f"{root / 'nope.yaml'}: config file not found": {"config": str(root / "nope.yaml"),
                                                       "run_dir": str(root / "custom")},
    }
    before = sorted(root.iterdir())
    with _client(env) as client:
        deployment = client.read_deployment_by_name("ipet/agnews")
        with pytest.raises(Exception, match="Validation failed for field 'config.ipet.generations'. Failure "
                                            "reason: 'two' is not of type 'integer'"):
            client.create_flow_run_from_deployment(
                deployment.id, parameters={"config": {**good, "ipet": {"generations": "two"}}, "run_dir": "x"})
        ids = {line: client.create_flow_run_from_deployment(deployment.id, parameters=p).id
               for line, p in cases.items()}
    for line, run_id in ids.items():
        state = _ended(env, str(run_id), home)
        assert state.type.value == "FAILED" and state.message.startswith(line) and "\n" not in state.message, state
        logs = _logs(env, str(run_id))
        assert not [log for log in logs if "Traceback" in log], logs
        assert [log for log in logs if log.startswith("Finished in state Failed")] == [
            f"Finished in state Failed({state.message!r})"]
    assert sorted(root.iterdir()) == before


def test_a_run_triggered_while_one_is_going_waits_for_it(server, project, worker):
    """New data (``ipet.data.arrived``) while a run of the deployment is going: the triggered run is not
    started beside it (concurrency limit 1, ENQUEUE) but shows as Scheduled, "AwaitingConcurrencySlot",
    and starts once the first has ended."""
    env, root, home = server["env"], project["root"], server["home"]
    with _client(env) as client:
        earlier = {r.id for r in client.read_flow_runs()}
    first = _run(env, f"run_dir={root / 'enqueue'}")
    _state(env, first, lambda s: s.type.value == "RUNNING", home)
    _cli(["prefect", "event", "emit", "ipet.data.arrived", "--resource-id", "ipet.dataset.toy"], env)
    with _client(env) as client:
        deployment = client.read_deployment_by_name("ipet/agnews")
        deadline = time.time() + 60
        while not (triggered := [r for r in client.read_flow_runs() if r.deployment_id == deployment.id
                                 and str(r.id) != first and r.id not in earlier]):
            assert time.time() < deadline, "no run triggered"
            time.sleep(0.5)
    waiting = _state(env, str(triggered[0].id), lambda s: s.name == "AwaitingConcurrencySlot", home, 60)
    assert waiting.type.value == "SCHEDULED"
    with _client(env) as client:
        assert client.read_flow_run(first).state.type.value == "RUNNING", "the slot was taken while it ran"
    assert _ended(env, first, home).type.value == "COMPLETED"
    assert _ended(env, str(triggered[0].id), home).type.value == "COMPLETED"
    with _client(env) as client:
        assert client.read_flow_run(str(triggered[0].id)).start_time >= client.read_flow_run(first).end_time
