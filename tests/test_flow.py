"""The iPET flow end to end: real Prefect (test harness), real MLflow (SQLite), tiny models."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import numpy as np
import pyarrow.parquet as pq
import pytest
import yaml
from mlflow.tracking import MlflowClient

from data.parquet import read_logits
from flows.config import RunConfig
from flows.ipet import ipet
from tiny import toy_run_config

GOLD_PER_CLASS, GROWTH, GENERATIONS, STEPS = 4, 2, 2, 60


@pytest.fixture(scope="module")
def toy_config(tmp_path_factory) -> dict:
    return toy_run_config(tmp_path_factory.mktemp("toy"), GOLD_PER_CLASS, STEPS, GENERATIONS, GROWTH)


@pytest.fixture(scope="module")
def finished(prefect_harness, toy_config, tmp_path_factory) -> tuple[dict, Path]:
    run_dir = tmp_path_factory.mktemp("run")
    return ipet(config=RunConfig.model_validate(toy_config), run_dir=str(run_dir)), run_dir


def test_results_have_every_stage(finished):
    from flows.gc import used_dirs

    results, run_dir = finished
    stages = [s["stage"] for s in results["stages"]]
    assert stages == ["zero-shot", "pet", "ipet-1", "ipet-2", "final"]
    assert (run_dir / "results.json").exists() and results["mlflow_run_id"] and results["prefect_flow_run_id"]
    assert all(s["test_accuracy"] is not None for s in results["stages"])
    assert results["tasks"] == {"trained": 2 * (1 + GENERATIONS) + 1, "reused": 0}
    assert used_dirs(results["stages"]) == {p.name for p in (run_dir / "models").iterdir()}, "every model it used"


def test_training_sets_grow_as_configured_and_keep_gold(finished, toy_config):
    results, run_dir = finished
    labels = RunConfig.model_validate(toy_config).labels
    gold = pq.read_table(next(run_dir.glob("data/labeled-*.parquet"))).to_pylist()
    gold_labels = {r["id"]: r["label"] for r in gold}
    assert len(gold) == 2 * GOLD_PER_CLASS
    for generation in range(1, GENERATIONS + 1):
        sets = sorted(run_dir.glob(f"sets/g{generation}-*.parquet"))
        assert len(sets) == 2
        sizes = []
        for path in sets:
            rows = pq.read_table(path).to_pylist()
            sizes.append(len(rows))
            assert len(rows) == len(gold) * GROWTH**generation or _a_class_gave_all_it_had(run_dir, path, rows, labels)
            assert {r["id"]: r["label"] for r in rows if r["source"] == "gold"} == gold_labels
            assert len({r["id"] for r in rows}) == len(rows), "no example twice"
            assert not {r["id"] for r in rows if r["source"] == "pseudo"} & gold_labels.keys()
        stage = next(s for s in results["stages"] if s["stage"] == f"ipet-{generation}")
        assert stage["train_size"] == max(sizes)
        assert 0.0 <= stage["pseudo_label_accuracy"] <= 1.0


def _a_class_gave_all_it_had(run_dir: Path, train_set: Path, rows: list[dict], labels: list[str]) -> bool:
    """A set smaller than configured is right only when some class gave every pool row its peer
    predicted as it (no class gives more than its candidates). The draws are seeded by content keys,
    which hold the tiny backbone's path, and pytest's numbered temporary folders change that path from
    run to run: on some draws a toy model predicts one class for nearly the whole pool (one CI run in
    about four). The peer of g<N>-p<i> is the other PVP's model of g<N-1>."""
    generation, pvp = int(train_set.name[1]), train_set.name.split("-")[1]
    peer = next(run_dir.glob(f"logits/g{generation - 1}-{'p1' if pvp == 'p0' else 'p0'}-s1--pool-*.parquet"))
    predicted = np.bincount(read_logits(peer).argmax(-1), minlength=len(labels))
    pseudo = [r["label"] for r in rows if r["source"] == "pseudo"]
    return any(pseudo.count(label) == predicted[i] for i, label in enumerate(labels))


def test_mlflow_parent_has_a_child_per_model_with_curves_and_artifacts(finished, toy_config):
    results, run_dir = finished
    client = MlflowClient(toy_config["tracking"]["mlflow_uri"])
    parent = client.get_run(results["mlflow_run_id"])
    assert parent.data.tags["prefect.flow_run_id"] == results["prefect_flow_run_id"]
    children = client.search_runs([parent.info.experiment_id],
                                  filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    assert len(children) == results["tasks"]["trained"]
    for child in children:
        curve = client.get_metric_history(child.info.run_id, "loss")
        expected_steps = 25 if child.info.run_name.startswith("final") else STEPS  # final: one pass, 200 rows / 8
        assert [m.step for m in curve] == list(range(1, expected_steps + 1))
        assert "test_accuracy" in child.data.metrics and child.data.metrics["train_size"] > 0
    names = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"results.json", "summary.md", "sets", "predictions", "final-model"} <= names
    sets = {Path(a.path).name for a in client.list_artifacts(parent.info.run_id, "sets")}
    assert len(sets) == 2 * GENERATIONS


def test_mlflow_parent_records_the_config_the_data_and_the_ipet_curve(finished, toy_config):
    """Read back from the real SQLite store: flattened params, config.yaml, the data manifest, the
    code's version, and test accuracy per stage as one series (step = stage index)."""
    results, _ = finished
    client = MlflowClient(toy_config["tracking"]["mlflow_uri"])
    parent = client.get_run(results["mlflow_run_id"])
    params = parent.data.params
    assert params["model"] == toy_config["model"] and params["ipet.generations"] == str(GENERATIONS)
    assert params["train.max_steps"] == str(STEPS) and params["data.rows.pool"] == "200"
    assert params["tracking.champion_margin"] == "0.02" and "pvps" in params
    assert parent.data.tags["ipet.version"] and len(parent.data.tags.get("mlflow.source.git.commit", "x" * 40)) == 40
    local = Path(toy_config["tracking"]["mlflow_uri"].removeprefix("sqlite:///")).parent
    artifacts = Path(parent.info.artifact_uri.removeprefix("file://"))
    assert local in artifacts.parents
    config = yaml.safe_load((artifacts / "config.yaml").read_text())
    assert RunConfig.model_validate(config) == RunConfig.model_validate(toy_config)
    manifest = yaml.safe_load((artifacts / "data-manifest.json").read_text())
    assert manifest["rows"] == {"labeled": 8, "pool": 200, "test": 40} and len(manifest["sources"]["train.csv"]) == 64
    series = client.get_metric_history(parent.info.run_id, "test_accuracy")
    assert [(m.step, m.value) for m in series] == [(i, s["test_accuracy"]) for i, s in enumerate(results["stages"])]


def _search_runs(uri: str, **kwargs):
    """``mlflow.search_runs`` on ``uri``: the query behind MLflow's compare view, a column per param, metric, tag."""
    mlflow.set_tracking_uri(uri)
    try:
        return mlflow.search_runs(experiment_names=["toy"], **kwargs)
    finally:
        mlflow.set_tracking_uri(None)


def test_mlflow_runs_line_up_in_the_compare_view(finished, toy_config):
    """What a user comparing runs reads: a name that tells runs apart, one key per stage's score whatever
    stages a run had (the final accuracy sorts runs), the data's content and the backbone as params, the
    models trained, the stage table as the description, and each child's stage."""
    results, run_dir = finished
    uri, run_id = toy_config["tracking"]["mlflow_uri"], results["mlflow_run_id"]
    parent = _search_runs(uri, filter_string=f"attributes.run_id = '{run_id}'",
                          order_by=["metrics.test_accuracy.final DESC"]).iloc[0]
    assert parent["tags.mlflow.runName"] == f"toy · cloze · {run_dir.name}"
    for stage in results["stages"]:
        assert parent[f"metrics.test_accuracy.{stage['stage']}"] == stage["test_accuracy"]
        assert parent[f"metrics.train_size.{stage['stage']}"] == stage["train_size"]
    assert parent["metrics.tasks.trained"] == results["tasks"]["trained"] and parent["metrics.tasks.reused"] == 0
    assert parent["params.backbone"] == toy_config["model"]
    sets = {p.stem.split("-")[0]: p.stem.split("-")[1] for p in (run_dir / "data").glob("*.parquet")}
    assert set(sets) == {"labeled", "pool", "test"}
    assert {k: parent[f"params.data.sets.{k}"] for k in sets} == sets
    note = parent["tags.mlflow.note.content"]
    assert "| final |" in note and f"Models: trained {results['tasks']['trained']}, reused 0." in note
    children = _search_runs(uri, filter_string=f"tags.mlflow.parentRunId = '{run_id}'")
    assert dict(zip(children["tags.mlflow.runName"], children["tags.stage"])) == {
        **{f"g{g}-p{p}-s1": "pet" if g == 0 else f"ipet-{g}" for g in range(GENERATIONS + 1) for p in (0, 1)},
        "final-distilled": "final"}
    assert children["metrics.test_accuracy"].notna().all()


def test_mlflow_runs_say_which_precision_and_device_auto_resolved_to(finished, toy_config):
    """The toy config leaves ``precision: auto`` (train and labeling) on ``device: cpu``: bf16 on a CPU with bf16 in
    hardware (AMX, AVX-512 BF16), float32 elsewhere; the numbers differ. Each model's run says which it trained
    in and which labeled the test set for its ``test_accuracy``, the parent which its trainings and labelings
    used."""
    import torch

    from prompt_core.device import native_bf16

    assert "precision" not in toy_config["train"] and "labeling" not in toy_config, "auto"
    used = "bf16" if native_bf16(torch.device("cpu")) else "fp32"
    uri, run_id = toy_config["tracking"]["mlflow_uri"], finished[0]["mlflow_run_id"]
    children = _search_runs(uri, filter_string=f"tags.mlflow.parentRunId = '{run_id}'")
    assert len(children) == _total(finished)
    assert set(children["tags.precision.used"]) == {used} and set(children["tags.device.used"]) == {"cpu"}
    assert set(children["tags.labeling.precision.used"]) == {used}
    assert set(children["tags.labeling.device.used"]) == {"cpu"}
    parent = _search_runs(uri, filter_string=f"attributes.run_id = '{run_id}'").iloc[0]
    assert (parent["tags.precision.used"], parent["tags.device.used"]) == (used, "cpu")


@pytest.mark.slow
def test_a_models_run_says_which_precision_trained_it_and_which_labeled_its_test_set(prefect_harness, tmp_path):
    """Trained in float32, labeled in bf16: a child's ``test_accuracy`` comes from the labeling, so its run says
    both (``precision.used`` fp32, ``labeling.precision.used`` bf16), and a rerun that reuses the logits says the
    same as the first run (its parent said fp32 alone: the reused labelings went unreported)."""
    raw = toy_run_config(tmp_path, steps=10, generations=0)
    raw |= {"final": {"mode": "ensemble"}, "labeling": {"precision": "bf16"}}
    raw["train"]["precision"] = "fp32"
    config, uri = RunConfig.model_validate(raw), raw["tracking"]["mlflow_uri"]
    for run in [ipet(config=config, run_dir=str(tmp_path / "run")) for _ in range(2)]:
        children = _search_runs(uri, filter_string=f"tags.mlflow.parentRunId = '{run['mlflow_run_id']}'")
        assert len(children) == 2 and set(children["tags.precision.used"]) == {"fp32"}
        assert set(children["tags.labeling.precision.used"]) == {"bf16"}
        assert set(children["tags.labeling.device.used"]) == {"cpu"}
        parent = _search_runs(uri, filter_string=f"attributes.run_id = '{run['mlflow_run_id']}'").iloc[0]
        assert parent["tags.precision.used"] == "bf16,fp32"
    assert run["tasks"] == {"trained": 0, "reused": 2}


def test_a_failed_run_is_failed_with_its_cause_and_so_are_its_unfinished_children(toy_config, tmp_path):
    """An error mid-run (not Ctrl-C): the parent FAILED with the error as tag ``error``, and a child a task
    was logging when it happened FAILED too, not RUNNING for ever."""
    from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

    from tasks.tracking import parent_run

    uri = toy_config["tracking"]["mlflow_uri"]
    with pytest.raises(RuntimeError), parent_run(uri, "toy", "toy", {"run_dir": str(tmp_path)}) as (client, parent):
        client.create_run(client.get_run(parent).info.experiment_id, tags={MLFLOW_PARENT_RUN_ID: parent})
        raise RuntimeError("CUDA out of memory")
    runs = _search_runs(uri, filter_string=f"tags.run_dir = '{tmp_path}'")
    assert list(zip(runs["status"], runs["tags.error"])) == [("FAILED", "RuntimeError: CUDA out of memory")]
    assert list(_search_runs(uri, filter_string=f"tags.mlflow.parentRunId = '{parent}'")["status"]) == ["FAILED"]


def test_params_past_mlflows_limit_are_cut_visibly_and_stay_distinct(toy_config, tmp_path):
    """MLflow refuses a param over 6000 characters. Two values that differ only past the cut must not look
    the same in the compare view, and the cut must say so."""
    from tasks.tracking import log_child, parent_run

    uri = toy_config["tracking"]["mlflow_uri"]
    with parent_run(uri, "toy", "toy", {"run_dir": str(tmp_path)}) as (_, parent):
        for name in ("a", "b"):
            log_child(uri, parent, name, params={"pvps": "x" * 7000 + name, "seed": 1})
    children = _search_runs(uri, filter_string=f"tags.mlflow.parentRunId = '{parent}'")
    cut = dict(zip(children["tags.mlflow.runName"], children["params.pvps"]))
    assert [len(v) for v in cut.values()] == [6000] * 2 and cut["a"] != cut["b"]
    assert all(v.startswith("x" * 5000) and "cut: 7001 characters, sha256 " in v for v in cut.values())
    assert children["params.seed"].tolist() == ["1", "1"]


def test_reruns_of_a_finished_run_add_under_a_megabyte_of_artifacts(prefect_harness, finished, toy_config):
    """Everything reused: the final model is not logged again; each rerun's parent links to the first copy."""
    results, run_dir = finished
    artifacts = Path(toy_config["tracking"]["mlflow_uri"].removeprefix("sqlite:///")).parent / "mlartifacts"

    def size() -> int:
        return sum(p.stat().st_size for p in artifacts.rglob("*") if p.is_file())

    before = size()
    reruns = [ipet(config=RunConfig.model_validate(toy_config), run_dir=str(run_dir)) for _ in range(2)]
    added = size() - before
    print(f"two reruns added {added} bytes to mlartifacts")  # the figure docs/reliability.md quotes
    model = sum(p.stat().st_size for p in Path(results["stages"][-1]["model"]).rglob("*") if p.is_file())
    assert added < min(1_000_000, model), "less than the final model: no copy of it was logged"
    uri = toy_config["tracking"]["mlflow_uri"]
    client = MlflowClient(uri)
    first = client.get_run(results["mlflow_run_id"]).data.tags["final_model.uri"]
    assert first == f"runs:/{results['mlflow_run_id']}/final-model"
    trained = _search_runs(uri, filter_string=f"tags.mlflow.parentRunId = '{results['mlflow_run_id']}'")
    trained_by = dict(zip(trained["tags.mlflow.runName"], trained["run_id"]))
    for rerun in reruns:  # a new parent run each, named as the first, that says it trained nothing
        assert rerun["tasks"]["trained"] == 0
        parent = client.get_run(rerun["mlflow_run_id"])
        assert parent.data.tags["final_model.uri"] == first and parent.info.run_name.endswith(f" · {run_dir.name}")
        assert parent.data.metrics["tasks.reused"] == _total(finished) and parent.data.metrics["tasks.trained"] == 0
        children = _search_runs(uri, filter_string=f"tags.mlflow.parentRunId = '{rerun['mlflow_run_id']}'")
        assert len(children) == _total(finished) and set(children["tags.reused"]) == {"true"}
        assert children["tags.stage"].notna().all()
        # each reused model's run names the run that trained it (the first run's child, not the first rerun's)
        assert dict(zip(children["tags.mlflow.runName"], children["tags.reused_from"])) == trained_by
        assert not any(client.list_artifacts(run_id) for run_id in children["run_id"]), "no files uploaded again"
        # the reused logits say what labeled them, as the first run did (the parent's tags: what its numbers came from)
        for tag in ("tags.labeling.precision.used", "tags.labeling.device.used"):
            assert trained[tag].notna().all() and set(children[tag]) == set(trained[tag])
        assert {k: parent.data.tags[k] for k in ("precision.used", "device.used")} == {
            k: client.get_run(results["mlflow_run_id"]).data.tags[k] for k in ("precision.used", "device.used")}
        assert "final-model" not in {a.path for a in client.list_artifacts(rerun["mlflow_run_id"])}


def test_gc_frees_all_but_the_final_model_and_a_rerun_trains_them_again(prefect_harness, finished, toy_config,
                                                                       tmp_path, capsys):
    from flows.cli import main

    results, run_dir = finished
    assert "Run directory: " in (run_dir / "summary.md").read_text()
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    models = sorted(p.name for p in (copy / "models").iterdir())
    final = Path(results["stages"][-1]["model"]).name
    assert main(["gc", str(copy), "--keep", "last-generation"]) == 0
    assert sorted(p.name for p in (copy / "models").iterdir()) == sorted(
        [m for m in models if m.startswith(f"g{GENERATIONS}-")] + [final])
    assert main(["gc", str(copy)]) == 0
    assert [p.name for p in (copy / "models").iterdir()] == [final]
    out = capsys.readouterr().out
    assert "removed 2 model directories, freed" in out and "a rerun trains them again" in out
    rerun = ipet(config=RunConfig.model_validate(toy_config), run_dir=str(copy))
    assert rerun["tasks"] == {"trained": _total(finished) - 1, "reused": 1}, "all but the final model"
    assert [s["test_accuracy"] for s in rerun["stages"]] == [s["test_accuracy"] for s in results["stages"]]


def test_gc_of_a_folder_without_results_is_one_line_and_leaves_nothing(tmp_path, capsys):
    from flows.cli import main

    folder = tmp_path / "not-a-run"
    folder.mkdir()
    assert main(["gc", str(folder)]) == 2
    assert capsys.readouterr().err.strip() == f"ipet gc: {folder}: no results.json, so not a finished run directory"
    assert list(folder.iterdir()) == [], "no .lock left behind"


def test_gc_killed_mid_removal_leaves_no_half_removed_model_to_reuse(tmp_path, monkeypatch):
    """A model directory is reused when its name exists; ``ipet gc`` killed while deleting one must not
    leave it under that name without its weights (the rerun would reuse it, then fail to load it). What
    the kill leaves is a temporary, which the next run removes."""
    import flows.gc
    from flows.session import owned_run_dir
    from prompt_core.predictor import SPEC_FILE

    models = tmp_path / "models"
    for name in ("g0-p0-s1-0123456789abcdef", "final-distilled-fedcba9876543210"):
        for file in (SPEC_FILE, "metrics.json", "model.safetensors"):
            (models / name).mkdir(parents=True, exist_ok=True)
            (models / name / file).write_text(file)
    (tmp_path / "results.json").write_text(json.dumps({"stages": [{"model": str(models / name)}]}))

    def killed(path, *args, **kwargs):  # deletes one file, then the process dies
        next(p for p in Path(path).iterdir() if p.name == "model.safetensors").unlink()
        raise KeyboardInterrupt

    monkeypatch.setattr(flows.gc.shutil, "rmtree", killed)
    with pytest.raises(KeyboardInterrupt):
        flows.gc.collect(tmp_path, "final")
    monkeypatch.undo()
    for model in models.glob("[!.]*"):
        assert (model / "model.safetensors").is_file(), f"{model.name} half removed under its own name"
    with owned_run_dir(str(tmp_path)):
        pass
    assert [p.name for p in models.iterdir()] == ["final-distilled-fedcba9876543210"]


def test_gc_keeps_the_runs_own_last_generation_not_an_earlier_runs_later_one(tmp_path):
    """A run directory may hold generation 2's models of an earlier run with more generations (they stay
    reusable); ``--keep last-generation`` keeps the generation this run ended with, read from its stages."""
    import flows.gc
    from prompt_core.predictor import SPEC_FILE

    models = tmp_path / "models"
    names = ["g0-p0-s1-00", "g1-p0-s1-11", "g2-p0-s1-22", "final-distilled-ff"]
    for name in names:
        (models / name).mkdir(parents=True)
        (models / name / SPEC_FILE).write_text("{}")
    stages = [{"stage": s} for s in ("zero-shot", "pet", "ipet-1")] + [{"stage": "final", "model": str(models / names[-1])}]
    (tmp_path / "results.json").write_text(json.dumps({"stages": stages}))
    assert [p.name for p in flows.gc.removable(tmp_path, "last-generation")] == ["g0-p0-s1-00", "g2-p0-s1-22"]


def test_gc_keeps_of_the_last_generation_only_the_models_the_run_used(tmp_path):
    """After an upgrade or a change of settings, generation 1 has models under the old keys too; the run's
    results.json names the directories it used, and ``--keep last-generation`` keeps only those."""
    import flows.gc
    from prompt_core.predictor import SPEC_FILE

    models = tmp_path / "models"
    names = ["g0-p0-s1-00", "g1-p0-s1-11", "g1-p0-s1-12", "final-distilled-ff"]
    for name in names:
        (models / name).mkdir(parents=True)
        (models / name / SPEC_FILE).write_text("{}")
    stages = [{"stage": "pet", "models": [{"name": "g0-p0-s1", "dir": "g0-p0-s1-00"}]},
              {"stage": "ipet-1", "models": [{"name": "g1-p0-s1", "dir": "g1-p0-s1-12"}]},
              {"stage": "final", "model": str(models / names[-1])}]
    (tmp_path / "results.json").write_text(json.dumps({"stages": stages}))
    assert [p.name for p in flows.gc.removable(tmp_path, "last-generation")] == ["g0-p0-s1-00", "g1-p0-s1-11"]


def test_a_rerun_names_the_finished_models_of_other_settings_it_does_not_reuse(tmp_path):
    """After an upgrade or a change of settings a rerun trains again while finished models sit beside the
    new ones under other keys: one line says so, and what removes them; none for a run that used them all,
    or whose results.json (an earlier ipet's) does not name the directories. Only trained models count."""
    from flows.gc import not_reused
    from tasks.models import METRICS

    for name in ("zero-shot-p0-aa", "zero-shot-p0-ab", "g1-p0-s1-11", "g1-p0-s1-22", "final-distilled-ff",
                 ".g1-p0-s1-33.x.1.ab.tmp"):
        (tmp_path / "models" / name).mkdir(parents=True)
        (tmp_path / "models" / name / METRICS).write_text("{}")
    (tmp_path / "models" / "zero-shot-p0-ab" / METRICS).unlink()  # an untrained spec: nothing was trained for it
    final = {"stage": "final", "model": str(tmp_path / "models" / "final-distilled-ff")}
    stages = [{"stage": "zero-shot", "models": [{"name": "zero-shot-p0", "dir": "zero-shot-p0-aa"}]},
              {"stage": "ipet-1", "models": [{"name": "g1-p0-s1", "dir": "g1-p0-s1-22"}]}, final]
    assert not_reused(tmp_path, stages) == (
        f"1 finished model in {tmp_path / 'models'} was made with other settings or an earlier ipet and is not "
        f"reused; `ipet gc {tmp_path}` removes it")
    stages[1]["models"].append({"name": "g1-p0-s1", "dir": "g1-p0-s1-11"})
    assert not_reused(tmp_path, stages) is None
    assert not_reused(tmp_path, [{"stage": "ipet-1", "models": [{"name": "g1-p0-s1"}]}, final]) is None


def test_killed_run_resumes_without_redoing_finished_tasks(prefect_harness, toy_config, finished, tmp_path):
    """SIGKILL the CLI once generation 1 has begun training, run again, count what was reused."""
    from prefect.settings import PREFECT_API_URL

    config_path = tmp_path / "toy.yaml"
    config_path.write_text(yaml.safe_dump(toy_config))
    run_dir = tmp_path / "run"
    # one torch thread, as in this process: the models trained before the kill are then the same bits
    env = {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value(), "PYTHONPATH": str(Path(__file__).parents[1]),
           "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "flows.cli", "run", str(config_path), "--run-dir", str(run_dir)],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while not list(run_dir.glob("models/g1-*")) and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    finished_before_kill = [p for p in (run_dir / "models").iterdir() if not p.name.startswith(".")
                            and not p.name.startswith("zero-shot")]
    assert 2 <= len(finished_before_kill) < _total(finished), "killed mid-run, after generation 0"

    resumed = ipet(config=RunConfig.model_validate(toy_config), run_dir=str(run_dir))
    assert resumed["tasks"]["reused"] == len(finished_before_kill)
    assert resumed["tasks"]["trained"] == _total(finished) - len(finished_before_kill)
    uninterrupted = finished[0]
    assert [s["test_accuracy"] for s in resumed["stages"]] == [s["test_accuracy"] for s in uninterrupted["stages"]]

    again = ipet(config=RunConfig.model_validate(toy_config), run_dir=str(run_dir))
    assert again["tasks"] == {"trained": 0, "reused": _total(finished)}


def test_a_pool_only_change_reuses_the_pet_models_and_retrains_ipet(prefect_harness, toy_config, finished, tmp_path):
    """A smaller pool (as after a new unlabeled version): the gold set keeps its file, so generation 0
    is reused; the iPET generations, which the pool feeds, train afresh."""
    results, run_dir = finished
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)  # the finished run's outputs, in a run dir of this test's own
    config = {**toy_config, "data": {**toy_config["data"], "pool_size": 180}}
    changed = ipet(config=RunConfig.model_validate(config), run_dir=str(copy))
    assert changed["tasks"] == {"trained": 2 * GENERATIONS + 1, "reused": 2}
    reused = {m["name"] for s in changed["stages"] for m in s["models"] if m.get("reused")}
    assert reused == {"g0-p0-s1", "g0-p1-s1"}
    pet, before = changed["stages"][1], results["stages"][1]  # the same models on the same test set
    assert pet["stage"] == "pet" and pet["test_accuracy"] == before["test_accuracy"]
    assert [m["test_accuracy"] for m in pet["models"]] == [m["test_accuracy"] for m in before["models"]]
    client = MlflowClient(toy_config["tracking"]["mlflow_uri"])
    children = client.search_runs([client.get_run(changed["mlflow_run_id"]).info.experiment_id],
                                  filter_string=f"tags.mlflow.parentRunId = '{changed['mlflow_run_id']}'")
    assert {c.info.run_name: c.data.tags["reused"] for c in children} == {
        "g0-p0-s1": "true", "g0-p1-s1": "true", **{f"g{g}-p{p}-s1": "false" for g in range(1, GENERATIONS + 1)
                                                  for p in (0, 1)}, "final-distilled": "false"}


def _total(finished) -> int:
    return finished[0]["tasks"]["trained"] + finished[0]["tasks"]["reused"]


def _split_toy_train(root: Path, gold_rows: int) -> None:
    """The toy task's train.csv as a gold.csv of its first ``gold_rows`` rows and a pool.csv of the rest,
    with no label column at all (a truly unlabeled pool)."""
    import csv

    with open(root / "train.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    with open(root / "gold.csv", "w", newline="") as f:
        csv.writer(f).writerows([["text", "label"]] + [[r["text"], r["label"]] for r in rows[:gold_rows]])
    with open(root / "pool.csv", "w", newline="") as f:
        csv.writer(f).writerows([["text"]] + [[r["text"]] for r in rows[gold_rows:]])


def test_an_ensemble_over_a_truly_unlabeled_pool_does_not_label_it_again(prefect_harness, tmp_path):
    """With ``final.mode: ensemble`` the last generation's pool labels would serve only to score
    pseudo-labels; a pool without hidden labels cannot be scored, so it is not labeled again."""
    config = toy_run_config(tmp_path, labeled_per_class=4, steps=10, generations=1, growth=2)
    _split_toy_train(tmp_path, gold_rows=8)
    config["data"] = {"root": str(tmp_path), "labeled": {"path": "gold.csv"}, "unlabeled": {"path": "pool.csv"},
                      "test": {"path": "test.csv"}}
    config["final"] = {"mode": "ensemble"}
    results = ipet(config=RunConfig.model_validate(config), run_dir=str(tmp_path / "run"))

    final = results["stages"][-1]
    assert final["stage"] == "final" and final["pseudo_label_accuracy"] is None
    assert final["test_accuracy"] == results["stages"][-2]["test_accuracy"]
    pool_logits = sorted(p.name.split("--")[0] for p in (tmp_path / "run" / "logits").glob("*--pool-*"))
    assert pool_logits == ["g0-p0-s1", "g0-p1-s1"]  # PET's models label it for generation 1; nothing after


def test_zero_shot_ipet_runs_on_a_pool_without_any_labels(prefect_harness, tmp_path):
    """No `labeled` source and a pool file with no label column: the empty gold set still has the label
    column, so the generations' selection (gold plus pseudo-labels) works as with a drawn k=0 gold set."""
    config = toy_run_config(tmp_path, steps=10, generations=1, growth=2)
    _split_toy_train(tmp_path, gold_rows=0)
    config["data"] = {"root": str(tmp_path), "unlabeled": {"path": "pool.csv"}, "test": {"path": "test.csv"}}
    config["ipet"]["zero_shot_per_class"] = 5
    results = ipet(config=RunConfig.model_validate(config), run_dir=str(tmp_path / "run"))

    assert [s["stage"] for s in results["stages"]] == ["zero-shot", "ipet-1", "final"]
    generation = results["stages"][1]
    assert 0 < generation["train_size"] <= 5 * 2 * 2  # zero_shot_per_class · labels · growth at most
    assert generation["pseudo_label_accuracy"] is None  # nothing hidden to score them against
    train_sets = sorted((tmp_path / "run" / "sets").glob("g1-*.parquet"))
    assert len(train_sets) == 2  # one per PVP model of the generation
    for train_set in train_sets:  # pseudo-labels only, each with a label
        table = pq.read_table(train_set, columns=["source", "label"]).to_pydict()
        assert set(table["source"]) == {"pseudo"} and set(table["label"]) <= {"neg", "pos"}
    assert all(0 <= s["test_accuracy"] <= 1 for s in results["stages"])


def test_progress_counts_the_run_s_models_with_an_eta_and_a_progress_artifact(prefect_harness, capsys):
    from prefect import flow, task
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    from flows.progress import Progress

    @task
    def fake_training(reused: bool, seconds: float = 0.2) -> dict:
        time.sleep(seconds)
        return {"reused": reused}

    @flow
    def three_stages() -> dict:
        progress = Progress(5, "test-progress")
        first = progress.wait("pet", {"slow": fake_training.submit(True, 1.0), "fast": fake_training.submit(True)})
        progress.wait("ipet-1", {i: fake_training.submit(False) for i in range(2)})
        progress.wait("final", {"final": fake_training.submit(False)})
        return first

    assert list(three_stages()) == ["slow", "fast"], "results in the order submitted, not finished"
    lines = [line for line in capsys.readouterr().out.splitlines() if " models · " in line]
    assert [line.split(" · ")[:2] for line in lines] == [
        ["[pet] 1/2 models", "run 1/5"], ["[pet] 2/2 models", "run 2/5"], ["[ipet-1] 1/2 models", "run 3/5"],
        ["[ipet-1] 2/2 models", "run 4/5"], ["[final] 1/1 models", "run 5/5"]]
    assert "ETA" not in lines[1] and "ETA" in lines[2] and "ETA" not in lines[4], "an ETA once a model trained"
    with get_client(sync_client=True) as client:
        found = client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["test-progress"])))
    assert [a.data for a in found] == [100.0]
