"""The same iPET flow on Ray (prefect-ray, a local in-process cluster, CPU only) and on local threads:
the same seeds must give the same models, the same selected sets and the same accuracies. And what
each device-bound task asks Ray for."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml

from flows.cli import main
from flows.config import RunConfig
from flows.ipet import ipet
from flows.runners import ray_request
from tiny import toy_run_config


@pytest.fixture(scope="module")
def toy(tmp_path_factory) -> dict:
    config = toy_run_config(tmp_path_factory.mktemp("toy"), labeled_per_class=4, steps=30, generations=1, growth=2)
    config["labeling"] = {"shard_rows": 64}  # a pool of 200 rows: 4 labeling tasks per model
    return config


@pytest.fixture(scope="module")
def local_cluster():
    """Ray in this process, as ``ray.init()`` on a head node; the Ray runner joins it instead of starting one."""
    ray = pytest.importorskip("ray", reason="the ray extra is not installed")
    ray.init(num_cpus=2, include_dashboard=False, object_store_memory=100 * 2**20, log_to_driver=False)
    yield
    ray.shutdown()


def run(config: dict, run_dir: Path, **runner) -> dict:
    return ipet(config=RunConfig.model_validate({**config, "runner": runner}), run_dir=str(run_dir))


def test_a_flow_on_ray_where_no_cluster_answers_fails_in_one_line_before_any_work(prefect_harness, toy, tmp_path):
    """A deployment (the flow called directly, without ``ipet run``'s checks) at ``ray://127.0.0.1:1``: Ray
    Client retried for 30 s and the flow failed with its ``ConnectionError`` traceback, a run directory made."""
    ray = pytest.importorskip("ray", reason="the ray extra is not installed")
    if ray.is_initialized():  # before local_cluster (module-wide once started): the run would use that Ray
        pytest.skip("this process joined a Ray already")
    state = ipet(config=RunConfig.model_validate({**toy, "runner": {"kind": "ray", "address": "ray://127.0.0.1:1"}}),
                 run_dir=str(tmp_path / "run"), return_state=True)
    assert state.is_failed() and state.message.startswith(
        "runner.address: ray://127.0.0.1:1: no Ray cluster answers at 127.0.0.1:1 ("), state.message
    assert not (tmp_path / "run").exists()


@pytest.mark.slow  # starting Ray and its worker processes: about a minute more than the local run
def test_ray_runner_gives_the_local_runners_results(prefect_harness, local_cluster, toy, tmp_path):
    on_threads = run(toy, tmp_path / "local", kind="local")
    on_ray = run(toy, tmp_path / "ray", kind="ray", cpus_per_task=1)

    assert [s["stage"] for s in on_ray["stages"]] == ["zero-shot", "pet", "ipet-1", "final"]
    for ours, theirs in zip(on_ray["stages"], on_threads["stages"], strict=True):
        assert ours["test_accuracy"] == theirs["test_accuracy"], ours["stage"]
        assert ours["pseudo_label_accuracy"] == theirs["pseudo_label_accuracy"], ours["stage"]
    assert on_ray["tasks"] == on_threads["tasks"] == {"trained": 2 * 2 + 1, "reused": 0}
    assert selected(tmp_path / "ray") == selected(tmp_path / "local") != {}
    shards = sorted(p.name for p in (tmp_path / "ray").glob("logits/g0-p0-s1--pool-*/*"))
    assert shards == [f"shard-{i:05d}-of-00004.parquet" for i in range(4)]


@pytest.mark.slow  # a run on threads and one on Ray: about two minutes
def test_a_ray_worker_killed_mid_training_is_retried_to_the_same_results(prefect_harness, local_cluster, toy,
                                                                         tmp_path):
    """``kill -9`` of the Ray worker process running a training (a node lost, the OOM killer): Ray runs the
    task again in a new worker, which trains the model from the start (the killed one wrote nothing under
    a final name), and the run ends as an uninterrupted one, with nothing half-written left."""
    on_threads = run(toy, tmp_path / "local", kind="local")
    killed: list[int] = []
    killer = threading.Thread(target=_kill_first, args=("ray::train_model", killed), daemon=True)
    killer.start()
    on_ray = run(toy, tmp_path / "ray", kind="ray", cpus_per_task=1)
    assert killed, "a training worker was killed"
    for ours, theirs in zip(on_ray["stages"], on_threads["stages"], strict=True):
        assert (ours["test_accuracy"], ours["pseudo_label_accuracy"]) == \
            (theirs["test_accuracy"], theirs["pseudo_label_accuracy"]), ours["stage"]
    # the killed worker may have saved its model before it died: its retry then reuses it
    assert sum(on_ray["tasks"].values()) == 2 * 2 + 1 and on_ray["tasks"]["reused"] <= 1, on_ray["tasks"]
    assert selected(tmp_path / "ray") == selected(tmp_path / "local") != {}
    assert sorted(p.name for p in (tmp_path / "ray" / "models").iterdir() if p.name.startswith(".")) == []
    assert all((model / "learner.json").exists() for model in (tmp_path / "ray" / "models").iterdir())


def _kill_first(title: str, killed: list[int], timeout_s: float = 600) -> None:
    """SIGKILL the first process whose command line is ``title`` (how Ray names a worker by its task) once
    it has run for half a second; its pid goes into ``killed``."""
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
            if _command(int(cmdline.parent.name)).strip() == title:
                time.sleep(0.5)
                os.kill(int(cmdline.parent.name), signal.SIGKILL)
                killed.append(int(cmdline.parent.name))
                return
        time.sleep(0.1)


def selected(run_dir: Path) -> dict[str, list]:
    """Each generation's training sets by name: (id, label, source) rows."""
    return {p.name: sorted(zip(*pq.read_table(p, columns=["id", "label", "source"]).to_pydict().values()))
            for p in sorted(run_dir.glob("sets/*.parquet"))}


@pytest.mark.parametrize("train_device, adapt_device, cluster_gpus, asked", [
    ("auto", "cpu", 2, 1),  # adapt.device is ipet adapt's: the run's adaptation takes a GPU as its trainings do
    ("cpu", "auto", 2, 0),  # train.device: cpu: no task of the run asks for a GPU, the adaptation's neither
    ("cuda", "cuda", 2, 1),
    ("auto", "auto", 0, 0),  # a cluster without GPUs: the same config runs there, on CPUs
])
def test_every_task_of_a_run_asks_ray_for_the_gpus_train_device_says(toy, train_device: str, adapt_device: str,
                                                                      cluster_gpus: int, asked: int) -> None:
    """``ipet run`` on Ray: the adaptation, the trainings and the labeling all ask as ``one_device(config)`` says,
    by ``train.device``, as the local runner's device pool places them (README, "Backbone adaptation")."""
    config = RunConfig.model_validate({**toy, "train": {**toy["train"], "device": train_device},
                                       "adapt": {"device": adapt_device},
                                       "runner": {"kind": "ray", "gpus_per_task": 1, "cpus_per_task": 2}})
    assert ray_request(config, cluster_gpus) == {"num_gpus": asked, "num_cpus": 2}
    halves = config.model_copy(update={"runner": config.runner.model_copy(update={"gpus_per_task": 0.5})})
    assert ray_request(halves, cluster_gpus) == {"num_gpus": asked / 2, "num_cpus": 2}


def test_a_run_on_ray_where_ray_cannot_be_imported_is_refused_in_one_line(toy, tmp_path, monkeypatch, capfd):
    """prefect-ray installed, ray not (or broken): ``ipet validate`` said ok and ``ipet run`` failed at the
    flow's start with Prefect's traceback, exit 1 (prefect-ray imports ray only then)."""
    pytest.importorskip("prefect_ray", reason="the ray extra is not installed")
    monkeypatch.setitem(sys.modules, "ray", None)  # as `import ray` fails where it is missing
    (tmp_path / "c.yaml").write_text(yaml.safe_dump({**toy, "runner": {"kind": "ray"}}))
    capfd.readouterr()
    assert main(["validate", str(tmp_path / "c.yaml")]) == 2
    out, err = capfd.readouterr()
    assert err.splitlines() == [f"{tmp_path / 'c.yaml'}: runner.kind: ray needs Ray, which cannot be imported here "
                                "(import of ray halted; None in sys.modules): pip install -e '.[ray]'"]


@pytest.mark.slow  # ipet run starting its own Ray, to its first trained model, and a rerun: about 2 minutes
def test_sigterm_of_a_run_on_ray_stops_it_in_one_line_and_stops_its_ray(prefect_harness, toy, tmp_path):
    """SIGTERM (a supervisor's stop) of ``ipet run`` on the Ray it started, mid-training: ``ray.init`` had put
    ``sys.exit(15)`` in place of ipet's handler, so the flow crashed as on a system exit, the MLflow parent
    run was marked FAILED, and the process aborted (exit 134). Now as on threads: one line, exit 143, the
    parent run KILLED, no process of the run left (Ray's own included), and a rerun reuses what finished."""
    from mlflow.tracking import MlflowClient
    from test_reliability import ENV, _alive, _descendants

    config, run_dir = tmp_path / "ray.yaml", tmp_path / "run"
    config.write_text(yaml.safe_dump({**toy, "runner": {"kind": "ray"}}))
    proc = subprocess.Popen([sys.executable, "-m", "flows.cli", "run", str(config), "--run-dir", str(run_dir)],
                            env={**ENV, "PREFECT_HOME": str(tmp_path / "prefect")}, cwd=tmp_path,
                            start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 600
    while proc.poll() is None and time.time() < deadline and not list(run_dir.glob("models/g0-*/learner.json")):
        time.sleep(0.05)
    children = _descendants(proc.pid)
    assert proc.poll() is None and any("raylet" in _command(pid) for pid in children), "signalled mid-run, on Ray"
    proc.send_signal(signal.SIGTERM)
    err = proc.communicate(timeout=60)[1]
    assert proc.returncode == 143, err[-3000:]
    assert err.splitlines()[-1] == ("ipet: SIGTERM: ipet run stopped; finished outputs are kept, and running the "
                                    "same command again resumes where it stopped"), err[-3000:]
    assert "Traceback" not in err and "SIGTERM received" not in err, err[-3000:]
    assert "(label_set pid=" in err and "\x1b" not in err, "the workers' lines, without colour codes in a file"
    time.sleep(2)  # a parent's death reaches its children
    assert _alive(children) == set(), "no process of the run left"
    client = MlflowClient(toy["tracking"]["mlflow_uri"])
    runs = client.search_runs([client.get_experiment_by_name("toy").experiment_id],
                              filter_string=f"tags.run_dir = '{run_dir}'")
    assert [r.info.status for r in runs] == ["KILLED"]
    assert run(toy, run_dir, kind="local")["tasks"]["reused"] >= 1


def _command(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_text().replace("\0", " ")
    except OSError:
        return ""
