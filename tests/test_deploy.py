"""Deployments end to end: a real `prefect server` on loopback, `prefect deploy --all` of the
project's prefect.yaml, a process worker, new data ingested, and the run it triggers.

The deployments are the repo's own (schedules, the `ipet.data.arrived` trigger, concurrency,
the predict flow); only their parameters point at a toy task and a tiny model, so a run takes
seconds. Every process started here is stopped at the end, worker before server (a worker whose
server is gone keeps retrying instead of exiting).
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Iterator

import pyarrow.parquet as pq
import pytest
import yaml
from mlflow.tracking import MlflowClient

from tiny import toy_run_config

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parent.parent
TERMINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(args: list[str], env: dict, log: Path) -> subprocess.Popen:
    return subprocess.Popen(args, env=env, cwd=ROOT, stdout=log.open("w"), stderr=subprocess.STDOUT,
                            start_new_session=True)


def _stop(proc: subprocess.Popen, grace: float = 20) -> None:
    """SIGINT the process group (Prefect's clean shutdown), SIGKILL it if it lingers."""
    for sig in (signal.SIGINT, signal.SIGKILL):
        if proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            continue
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)  # children the leader left behind


def _cli(args: list[str], env: dict, timeout: float = 300) -> subprocess.CompletedProcess:
    done = subprocess.run(args, env=env, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{' '.join(args)} -> {done.returncode}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[dict]:
    """A real Prefect server (temp SQLite) and the environment that points clients at it."""
    home = tmp_path_factory.mktemp("prefect-server")
    port = _free_port()
    env = {**os.environ, "PREFECT_HOME": str(home), "PREFECT_API_URL": f"http://127.0.0.1:{port}/api",
           "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "PREFECT_WORKER_QUERY_SECONDS": "2",
           "PREFECT_SERVER_DATABASE_CONNECTION_URL": f"sqlite+aiosqlite:///{home / 'prefect.db'}",
           "IPET_PROJECT_DIR": str(ROOT), "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    proc = _start([sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port)],
                  env, home / "server.log")
    deadline = time.time() + 180
    while True:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/api/health", timeout=2)
            break
        except OSError:
            if proc.poll() is not None or time.time() > deadline:
                _stop(proc)
                pytest.fail(f"prefect server did not start:\n{(home / 'server.log').read_text()[-3000:]}")
            time.sleep(1)
    yield {"env": env, "home": home}
    _stop(proc)


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> dict:
    """A toy dataset store (gold set + pool ingested), its run config, and prefect.yaml's
    deployments with parameters pointing at them."""
    root = tmp_path_factory.mktemp("deploy-project")
    config = toy_run_config(root, steps=20, generations=1)
    # The packaged MiniLM with similarity PVPs: a tiny random BERT's iPET often ends below its own PET stage,
    # and such a final model is rightly never made champion; this toy task must produce one.
    config.update(model="sentence-transformers/all-MiniLM-L6-v2", learner="similarity",
                  verbalizer={"neg": "it was terrible", "pos": "it was great"},
                  pvps=[{"pattern": "{text}"}, {"pattern": "review : {text}"}])
    config["train"]["learning_rate"] = 2e-5
    header, *rows = list(csv.reader((root / "train.csv").open()))
    for name, part in (("gold", rows[:8]), ("pool", rows[8:120]), ("new", rows[120:])):
        with (root / f"{name}.csv").open("w", newline="") as f:
            csv.writer(f).writerows([header, *part])
    store = {"store": "stores", "dataset": "toy"}
    config["data"] = {"root": str(root), "labeled": store, "unlabeled": store, "test": {"path": "test.csv"},
                      "pool_size": 100}
    (root / "toy.yaml").write_text(yaml.safe_dump(config))
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}  # seeding the store announces nothing
    ingest = [sys.executable, "-m", "flows.cli", "ingest", "--store", str(root / "stores"), "--dataset", "toy"]
    _cli([*ingest, str(root / "gold.csv"), "--labeled", "--config", str(root / "toy.yaml")], env)
    _cli([*ingest, str(root / "pool.csv")], env)

    deployments = yaml.safe_load((ROOT / "prefect.yaml").read_text())
    for d in deployments["deployments"]:
        if d["entrypoint"] == "flows/ipet.py:ipet":
            d["parameters"] = {"config": str(root / "toy.yaml"), "run_dir": str(root / "run")}
            for trigger in d.get("triggers", []):
                trigger["match"]["prefect.resource.id"] = "ipet.dataset.toy"
        else:
            d["parameters"].update(registered_model="ipet-toy", tracking_uri=config["tracking"]["mlflow_uri"])
    (root / "prefect.yaml").write_text(yaml.safe_dump(deployments))
    return {"root": root, "ingest": ingest, "mlflow_uri": config["tracking"]["mlflow_uri"]}


def test_deploy_trigger_on_new_data_and_predict(server, project):
    env, root = server["env"], project["root"]
    _cli(["prefect", "work-pool", "create", "ipet-local", "--type", "process"], env)
    _cli(["prefect", "--no-prompt", "deploy", "--all", "--prefect-file", str(root / "prefect.yaml")], env)
    with _client(env) as client:
        train = client.read_deployment_by_name("ipet/agnews")
        assert [s.schedule.cron for s in train.schedules] == ["0 2 * * *"]
        assert train.global_concurrency_limit.limit == 1
        assert train.concurrency_options.collision_strategy == "ENQUEUE"
        client.read_deployment_by_name("predict/agnews")
    worker = _start(["prefect", "worker", "start", "--pool", "ipet-local"], env, server["home"] / "worker.log")
    try:
        # A run by hand (as the nightly schedule would start it): the first model becomes champion.
        first = _cli(["prefect", "deployment", "run", "ipet/agnews"], env).stdout
        first_id = first.split("UUID:")[1].split()[0]
        _wait(env, lambda runs: [r for r in runs if str(r.id) == first_id], server["home"])
        results = json.loads((root / "run" / "results.json").read_text())
        assert results["registry"]["decision"] == "promoted"
        assert results["registry"]["reason"] == "no champion yet"

        # New data: `ipet ingest` emits ipet.data.arrived, the deployment's trigger starts a run.
        added = _cli([*project["ingest"], str(root / "new.csv")], env).stdout
        assert "version 3" in added and "event" in added
        triggered = _wait(env, lambda runs: [r for r in runs if str(r.id) != first_id and not r.auto_scheduled],
                          server["home"])
        results = json.loads((root / "run" / "results.json").read_text())
        assert results["prefect_flow_run_id"] == str(triggered.id)
        registry = results["registry"]
        assert registry["decision"] in ("promoted", "kept") and registry["previous_champion"] == "1"
        assert registry["reason"] and registry["challenger_score"] is not None and registry["champion_score"] is not None
        client = MlflowClient(project["mlflow_uri"], registry_uri=project["mlflow_uri"])
        champion = str(client.get_model_version_by_alias("ipet-toy", "champion").version)
        assert champion == ("2" if registry["decision"] == "promoted" else "1") == registry["champion"]

        # Batch prediction with the champion, through the predict deployment.
        out = root / "predictions.parquet"
        done = _cli(["prefect", "deployment", "run", "predict/agnews", "--param", f"input={root / 'test.csv'}",
                     "--param", f"output={out}"], env).stdout
        predict_id = done.split("UUID:")[1].split()[0]
        _wait(env, lambda runs: [r for r in runs if str(r.id) == predict_id], server["home"], "predict/agnews")
        table = pq.read_table(out)
        assert table.num_rows == 40 and set(table["model_version"].to_pylist()) == {f"ipet-toy/v{champion}"}
    finally:
        _stop(worker)


@contextlib.contextmanager
def _client(env: dict):
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings(updates={PREFECT_API_URL: env["PREFECT_API_URL"]}), get_client(sync_client=True) as client:
        yield client


def _wait(env: dict, pick, home: Path, deployment: str = "ipet/agnews", timeout: float = 420):
    """The flow run of ``deployment`` that ``pick`` finds, once it has finished; it must be COMPLETED."""
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId

    deadline = time.time() + timeout
    with _client(env) as client:
        dep = client.read_deployment_by_name(deployment)
        while time.time() < deadline:
            runs = pick(client.read_flow_runs(deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[dep.id]))))
            if runs and runs[0].state and runs[0].state.type.value in TERMINAL:
                run = runs[0]
                assert run.state.type.value == "COMPLETED", \
                    f"{deployment} run {run.id}: {run.state}\n{(home / 'worker.log').read_text()[-4000:]}"
                return run
            time.sleep(2)
    pytest.fail(f"no finished run of {deployment} within {timeout} s:\n{(home / 'worker.log').read_text()[-4000:]}")
