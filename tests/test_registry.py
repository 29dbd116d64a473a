"""Champion/challenger: real MLflow registry (SQLite in a temp dir), real Prefect (test harness),
tiny classifiers whose accuracy is known by construction (a head that always says one label)."""

from __future__ import annotations

import itertools
import shutil
from pathlib import Path

import mlflow.pyfunc
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from mlflow.tracking import MlflowClient

from flows.config import RunConfig
from flows.ipet import ipet
from flows.predict import predict_file
from flows.reporter import FINAL_KEY
from flows.stages import Stage, floor
from prompt_core import Predictor
from tasks.registry import CHAMPION, decide, files_key, register_final_model
from tasks.tracking import TrackedRun, experiment_id
from tiny import save_classifier, save_tiny, toy_run_config

NAME = "ipet-test"
RUNS = itertools.count(1)  # each run's final model its own (a head margin of its own)


@pytest.mark.parametrize(("challenger", "champion", "previous", "problem", "promote", "says"), [
    (0.5, None, None, None, True, "no champion yet"),
    (None, None, None, None, True, "no champion yet"),
    (0.9, 0.8, "1", None, True, "better: challenger 0.9000 vs champion v1 0.8000"),
    (0.8, 0.8, "1", None, False, "champion kept, not better"),
    (0.7, 0.8, "1", None, False, "champion kept, not better"),
    (None, None, "1", None, False, "no test set to compare on"),
    (0.9, None, "1", "labels differ", False, "could not be scored on this run's test set (labels differ)"),
], ids=["first", "first-without-test-set", "better", "tie-keeps-champion", "worse", "no-test-set", "unscorable"])
def test_decision(challenger, champion, previous, problem, promote, says):
    decided, reason = decide(challenger, champion, previous, problem)
    assert decided is promote and says in reason


@pytest.mark.parametrize(("challenger", "champion", "previous", "promote", "says"), [
    (0.244, None, None, False, "not promoted: the final model's 0.2440 is below its own pet stage = 0.4900"),
    (0.244, 0.2, "1", False, "below its own pet stage = 0.4900 on this run's test set; champion v1 kept"),
    (0.49, None, None, True, "no champion yet"),  # level with the floor is no failure
], ids=["first-below-floor", "better-than-champion-but-below-floor", "at-floor"])
def test_a_final_model_worse_than_its_own_run_is_never_champion(challenger, champion, previous, promote, says):
    decided, reason = decide(challenger, champion, previous, floor=("its own pet stage", 0.49))
    assert decided is promote and says in reason


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> dict:
    """A registry, a test set of four 'pos' and two 'neg' rows, and classifiers of known accuracy."""
    root = tmp_path_factory.mktemp("registry")
    backbone = save_tiny("bert", root / "backbone")
    test_set = root / "test.parquet"
    pq.write_table(pa.table({"id": list("123456"), "text": ["great film", "good", "fine movie", "wonderful",
                                                             "bad", "awful plot"],
                             "label": ["pos"] * 4 + ["neg"] * 2}), test_set)
    recipes = {"neg": {"always": "neg"}, "pos": {"always": "pos"},
               "other-labels": {"labels": ("sports", "world"), "always": "world"}}
    models = {kind: save_classifier(root / kind, backbone, **recipe) for kind, recipe in recipes.items()}
    uri = f"sqlite:///{root / 'mlflow.db'}"
    return {"uri": uri, "test_set": str(test_set), "models": models, "experiment": experiment_id(uri, "registry"),
            "backbone": backbone, "recipes": recipes}


def register(store: dict, model: str, score: float | None, test_set: bool = True, name: str = NAME,
             model_dir: Path | None = None, floor: tuple[str, float] | None = None) -> tuple[dict, str]:
    """One run's final model registered: by default a model of its own (another head margin, the same
    predictions as ``model``), as each run trains its own."""
    if model_dir is None:
        run = next(RUNS)
        model_dir = save_classifier(store["models"][model].parent / f"run-{run}-{model}", store["backbone"],
                                    **store["recipes"][model], margin=10 + run / 100)
    client = MlflowClient(store["uri"])
    parent = client.create_run(store["experiment"]).info.run_id
    decision = register_final_model(name, str(model_dir), store["test_set"] if test_set else None,
                                    score, TrackedRun(store["uri"], parent), floor=floor)
    return decision, parent


def test_champion_moves_only_when_beaten(prefect_harness, store):
    client = MlflowClient(store["uri"])
    first, _ = register(store, "neg", 2 / 6)
    assert (first["version"], first["decision"], first["champion"]) == ("1", "promoted", "1")
    assert first["champion_score"] is None and first["reason"] == "no champion yet"

    worse_or_equal, parent = register(store, "neg", 2 / 6)
    assert (worse_or_equal["decision"], worse_or_equal["champion"]) == ("kept", "1")
    assert worse_or_equal["champion_score"] == pytest.approx(2 / 6), "the champion was scored on the test set"
    run = client.get_run(parent)
    assert run.data.metrics == {"challenger_score": pytest.approx(2 / 6), "champion_score": pytest.approx(2 / 6)}
    assert run.data.tags["registry.decision"] == "kept" and run.data.tags["registry.version"] == "2"
    assert "not better" in run.data.tags["registry.reason"]

    better, parent = register(store, "pos", 4 / 6)
    assert (better["decision"], better["previous_champion"], better["champion"]) == ("promoted", "1", "3")
    assert str(client.get_model_version_by_alias(NAME, CHAMPION).version) == "3"
    assert client.get_run(parent).data.metrics["champion_score"] == pytest.approx(2 / 6)

    worse, _ = register(store, "neg", 2 / 6)
    assert (worse["decision"], worse["champion_score"]) == ("kept", pytest.approx(4 / 6))
    assert [str(v.version) for v in client.search_model_versions(f"name = '{NAME}'")] == ["4", "3", "2", "1"]

    no_test, _ = register(store, "pos", None, test_set=False)
    assert no_test["decision"] == "kept" and "no test set" in no_test["reason"]



def test_a_failed_run_is_registered_but_leaves_no_champion(prefect_harness, store):
    """A first final model below its own run's PET stage: a version to inspect, no champion; the next
    good run is the first champion (a model without the alias reads as having no champion)."""
    client = MlflowClient(store["uri"])
    name = "ipet-fell"
    fell, _ = register(store, "neg", 2 / 6, name=name, floor=("its own pet stage", 0.5))
    assert (fell["version"], fell["decision"], fell["champion"]) == ("1", "kept", None)
    assert "below its own pet stage" in fell["reason"] and not client.get_registered_model(name).aliases
    good, _ = register(store, "pos", 4 / 6, name=name, floor=("its own pet stage", 0.5))
    assert (good["version"], good["decision"], good["reason"]) == ("2", "promoted", "no champion yet")


def test_a_one_class_model_is_not_promoted(prefect_harness, store):
    """A model that says 'pos' for every row scores the test set's majority rate (4 of 6): the first
    final model of its name, yet no champion, because it does not beat the margin over that rate."""
    name = "ipet-one-class"
    texts = pq.read_table(store["test_set"])["text"].to_pylist()
    said = Predictor.load(store["models"]["pos"]).predict([{"text": t} for t in texts], device="cpu").labels
    labels = pq.read_table(store["test_set"])["label"].to_pylist()
    accuracy = sum(p == t for p, t in zip(said, labels)) / len(labels)
    assert set(said) == {"pos"} and accuracy == 4 / 6
    one_class, _ = register(store, "pos", accuracy, name=name, floor=floor([Stage("final", accuracy, 6)], labels))
    assert (one_class["decision"], one_class["champion"]) == ("kept", None)
    assert "below always guessing the commonest class (0.6667) plus the margin 0.02" in one_class["reason"]
    assert not MlflowClient(store["uri"]).get_registered_model(name).aliases


@pytest.mark.parametrize("again", ["resumed", "copied", "resumed-registered-before-content-keys",
                                   "copied-registered-before-content-keys"])
def test_a_model_registered_before_adds_no_version(prefect_harness, store, again):
    """Finishing a run again (every task reused) gives the same final model directory, and a copy of the
    run directory (``cp -r``) another directory of the same files: either keeps the version the model got
    the first time instead of registering it twice, and the decision, its reason and the run's
    ``registry.reused`` tag say so. A version from before content keys is found by its directory, or, from a
    copy, by its directory's name and its registered files (a copy registered a second version), and is then
    tagged with the key."""
    client = MlflowClient(store["uri"])
    name = f"ipet-{again}"
    final = store["models"]["pos"].parent / f"{again}-run" / "models" / "final-distilled-abc"
    shutil.copytree(store["models"]["pos"], final)
    first, _ = register(store, "pos", 4 / 6, name=name, model_dir=final)
    assert first["reused"] is False and client.get_model_version(name, "1").tags["content_key"]
    if again.endswith("registered-before-content-keys"):
        client.delete_model_version_tag(name, "1", "content_key")
    run_dir = final.parents[1]
    model_dir = shutil.copytree(run_dir, run_dir.with_name(f"{again}-copy")) / "models" / final.name \
        if again.startswith("copied") else final
    second, parent = register(store, "pos", 4 / 6, name=name, model_dir=model_dir)
    assert (second["version"], second["decision"], second["champion"], second["reused"]) == ("1", "kept", "1", True)
    assert second["reason"].startswith(f"v1 is already the champion: this final model is v1, registered from {final} ")
    assert [str(v.version) for v in client.search_model_versions(f"name = '{name}'")] == ["1"]
    if again != "resumed-registered-before-content-keys":  # a copy's found by its files: tagged with their key
        assert client.get_model_version(name, "1").tags["content_key"] == files_key(final)
    tags = client.get_run(parent).data.tags
    assert (tags["registry.version"], tags["registry.reused"]) == ("1", "true")
    assert client.get_model_version(name, "1").tags["decision"] == "promoted", "the champion's tag is kept"
    other, parent = register(store, "pos", 4 / 6, name=name)  # another run's model of the same predictions
    assert (other["version"], other["decision"], other["reused"]) == ("2", "kept", False)
    assert client.get_run(parent).data.tags["registry.reused"] == "false"


def test_a_copy_of_a_model_that_is_not_champion_is_not_registered_again(prefect_harness, store, tmp_path):
    """A model kept out of the champion's place (here: below its run's floor), copied with its run directory
    and finished again: the same version, decided again, the reason naming it."""
    client = MlflowClient(store["uri"])
    name, floor_ = "ipet-copied-fell", ("its own pet stage", 0.5)
    final = shutil.copytree(store["models"]["neg"], tmp_path / "run" / "models" / "final-distilled-abc")
    first, _ = register(store, "neg", 2 / 6, name=name, model_dir=final, floor=floor_)
    copy = shutil.copytree(tmp_path / "run", tmp_path / "copy") / "models" / final.name
    again, _ = register(store, "neg", 2 / 6, name=name, model_dir=copy, floor=floor_)
    assert (first["version"], again["version"], again["decision"], again["reused"]) == ("1", "1", "kept", True)
    assert again["reason"].startswith(f"no new version: this final model is v1, registered from {final} (the same "
                                      "files, content key ")
    assert again["reason"].endswith("; not promoted: the final model's 0.3333 is below its own pet stage = 0.5000 on "
                                    "this run's test set")
    assert [str(v.version) for v in client.search_model_versions(f"name = '{name}'")] == ["1"]
    assert client.get_model_version(name, "1").tags["decision"] == "kept"


def test_a_registration_that_fails_leaves_no_pending_model(prefect_harness, store, tmp_path):
    """A failure while the final model is logged (here its learner.json cannot be read; a full artifact
    store alike) is reported without failing the run, and must not leave an MLflow LoggedModel PENDING
    for ever: it is marked FAILED."""
    broken = tmp_path / "broken-final"
    shutil.copytree(store["models"]["pos"], broken)
    (broken / "learner.json").write_text("{")
    with pytest.raises(ValueError):
        register(store, "pos", 4 / 6, name="ipet-broken", model_dir=broken)
    client = MlflowClient(store["uri"])
    logged = client.search_logged_models([store["experiment"]], filter_string=f"tags.model_dir = '{broken}'")
    assert [str(m.status) for m in logged] == ["FAILED"]


def test_a_champion_that_cannot_be_scored_stays(prefect_harness, store):
    """A champion of another task (other labels) is not replaced by a score it cannot be compared with."""
    register(store, "other-labels", None, test_set=False, name="ipet-other")
    challenger, parent = register(store, "pos", 4 / 6, name="ipet-other")
    assert challenger["decision"] == "kept" and challenger["champion_score"] is None
    assert "could not be scored" in challenger["reason"] and "lack ['neg', 'pos']" in challenger["reason"]
    assert MlflowClient(store["uri"]).get_run(parent).data.tags["registry.reason"] == challenger["reason"]


def test_registered_champion_loads_with_plain_mlflow(prefect_harness, store):
    """What a user does: pyfunc.load_model on the alias; same answers as our own Predictor."""
    if MlflowClient(store["uri"]).search_registered_models() == []:
        register(store, "pos", 4 / 6)
    mlflow.set_tracking_uri(store["uri"])
    try:
        model = mlflow.pyfunc.load_model(f"models:/{NAME}@{CHAMPION}")
    finally:
        mlflow.set_tracking_uri(None)
    out = model.predict(pd.DataFrame({"text": ["great film", "", None]}))
    assert list(out.columns) == ["label", "prob_neg", "prob_pos", "error"]
    assert out["label"].iloc[0] == "pos" and out["label"].iloc[1:].isna().all()
    assert out["error"].iloc[1].startswith("empty text")
    assert out[["prob_neg", "prob_pos"]].iloc[0].sum() == pytest.approx(1.0)
    with pytest.raises(Exception, match="precision: 'fp16' is not one of auto, bf16, fp32"):
        model.predict(pd.DataFrame({"text": ["great film"]}), params={"precision": "fp16"})
    with pytest.raises(Exception, match=r"missing inputs \['text'\]"):  # not zero rows back
        model.predict(pd.DataFrame({"body": ["great film", "bad"]}))
    frame = pd.DataFrame({"text": ["bad", "great film", "awful plot"]}, index=[7, 3, 3])
    assert list(model.predict(frame).index) == [7, 3, 3], "each prediction on its own input row"
    with pytest.raises(Exception, match="column 'text' holds a list in row 3, not text"):
        model.predict(pd.DataFrame({"text": ["great film", ["bad", "plot"]]}, index=[7, 3]))
    with pytest.raises(Exception, match="column 'text' holds a list in row 0, not text"):  # not one row back
        model.predict({"text": ["great film", "bad"]})


# --- the flow: an ensemble final model, registered, then predicted through the registry ---------


@pytest.fixture(scope="module")
def ensemble_runs(prefect_harness, tmp_path_factory) -> tuple[dict, dict, dict]:
    root = tmp_path_factory.mktemp("ensemble-toy")
    raw = toy_run_config(root, steps=20, generations=0)
    raw["final"] = {"mode": "ensemble"}
    config = RunConfig.model_validate(raw)
    first = ipet(config=config, run_dir=str(root / "run"))
    again = ipet(config=config, run_dir=str(shutil.copytree(root / "run", root / "run-copy")))
    return raw, first, again


def test_flow_registers_its_final_model(ensemble_runs):
    """The final model registered; a copy of its run directory (``cp -r``) run again registers no second
    version of it (the ensemble's members are copied into the registered model, so the copy's have the
    same files), and its reason, which ``ipet run``'s last line prints, says so."""
    raw, first, again = ensemble_runs
    final = first["stages"][-1]
    assert first["registry"]["registered_model"] == "ipet-toy"
    assert (first["registry"]["decision"], first["registry"]["reused"]) == ("promoted", False)
    assert first["registry"]["challenger_score"] == final["test_accuracy"]
    assert (again["registry"]["version"], again["registry"]["decision"], again["registry"]["reused"]) == \
        (first["registry"]["version"], "kept", True)
    assert again["registry"]["reason"].startswith(f"v{first['registry']['version']} is already the champion: this "
                                                  f"final model is v1, registered from {final['model']} ")
    assert [v.version for v in MlflowClient(raw["tracking"]["mlflow_uri"]).search_model_versions("name='ipet-toy'")] \
        == [1]
    written = pd.read_json(Path(first["run_dir"]) / "results.json", typ="series")
    assert written["registry"]["version"] == first["registry"]["version"]


def test_a_final_models_files_are_read_once_for_its_key_until_they_change(tmp_path, monkeypatch):
    """The run tags its final model with ``files_key`` (flows/reporter.py), then registers it, which keys it
    again: a model of gigabytes was read twice. A file written again (atomically: a new modification
    time) is read again, and changes the key."""
    import tasks.registry

    read = []
    digest = tasks.registry.file_digest
    monkeypatch.setattr(tasks.registry, "file_digest", lambda path: read.append(Path(path).name) or digest(path))
    model = save_classifier(tmp_path / "model", save_tiny("bert", tmp_path / "backbone"))
    first = files_key(model)
    assert files_key(model) == first and len(read) == len(set(read)) > 1
    (model / "config.json").write_text((model / "config.json").read_text() + " ")
    assert files_key(model) != first and read.count("config.json") == 2


def test_a_copied_run_directory_logs_no_second_copy_of_its_final_model(ensemble_runs):
    """The copy's final model is another directory with the same files: its parent run links to the
    first run's upload (tag ``final_model.uri``), found by the registry's content key, and logs none."""
    raw, first, again = ensemble_runs
    client = MlflowClient(raw["tracking"]["mlflow_uri"])
    tags = [client.get_run(r["mlflow_run_id"]).data.tags for r in (first, again)]
    assert tags[0]["final_model.dir"] != tags[1]["final_model.dir"] == again["stages"][-1]["model"]
    assert tags[0][FINAL_KEY] == tags[1][FINAL_KEY] == files_key(Path(again["stages"][-1]["model"]))
    assert tags[0]["final_model.uri"] == tags[1]["final_model.uri"] == f"runs:/{first['mlflow_run_id']}/final-model"
    logged = [{a.path for a in client.list_artifacts(r["mlflow_run_id"])} for r in (first, again)]
    assert "final-model" in logged[0] and "final-model" not in logged[1]


def test_a_copy_of_a_run_directory_logged_before_content_keys_links_to_its_upload(store, tmp_path):
    """A run tagged before content keys names its final model's upload by directory alone: a copy of its run
    directory (another directory, the same name and files) finds it by the name and the uploaded files' key,
    and tags it with the key; another model of that name (trained again elsewhere) is no match."""
    from flows.reporter import earlier_upload

    client = MlflowClient(store["uri"])
    final = shutil.copytree(store["models"]["pos"], tmp_path / "run" / "models" / "final-distilled-abc")
    first = client.create_run(store["experiment"]).info.run_id
    client.log_artifacts(first, str(final), "final-model")
    uploaded = f"runs:/{first}/final-model"
    client.set_tag(first, "final_model.dir", str(final))
    client.set_tag(first, "final_model.uri", uploaded)
    other = save_classifier(tmp_path / "other" / "models" / final.name, store["backbone"], always="neg")
    assert earlier_upload(client, store["experiment"], str(other), files_key(other)) is None
    copy = shutil.copytree(tmp_path / "run", tmp_path / "copy") / "models" / final.name
    assert earlier_upload(client, store["experiment"], str(copy), files_key(copy)) == uploaded
    assert client.get_run(first).data.tags[FINAL_KEY] == files_key(final)


def test_registered_ensemble_predicts_like_the_run_scored_it(ensemble_runs, tmp_path):
    raw, first, _ = ensemble_runs
    test_csv = Path(raw["data"]["root"]) / "test.csv"
    summary = predict_file("champion", str(test_csv), str(tmp_path / "out.parquet"), registered_model="ipet-toy",
                           tracking_uri=raw["tracking"]["mlflow_uri"])
    assert summary["model_version"] == f"ipet-toy/v{first['registry']['champion']}"
    out = pq.read_table(tmp_path / "out.parquet").to_pandas()
    truth = pd.read_csv(test_csv)["label"]
    assert (out["label"] == truth).mean() == pytest.approx(first["stages"][-1]["test_accuracy"])
    local = Predictor.load(first["stages"][-1]["model"]).predict(pd.read_csv(test_csv).to_dict("records"))
    assert list(out["label"]) == local.labels
    from_run_dir = predict_file(first["run_dir"], str(test_csv), str(tmp_path / "run-dir.parquet"))
    assert from_run_dir["model_version"] == str(Path(first["stages"][-1]["model"]).resolve())
    pd.testing.assert_frame_equal(pq.read_table(tmp_path / "run-dir.parquet").to_pandas().drop(columns="model_version"),
                                  out.drop(columns="model_version"))
